package store

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Review: temporary files go to .pier/tmp when the target directory is on
// the same device (st_dev), so that the rename stays on one filesystem.
// But rename(2) also fails with EXDEV across two mounts of the same
// filesystem: a layout bind-mounted into the root from elsewhere on the
// same disk has the root's st_dev, so every write into it (index.json,
// oci-layout, a manifest blob, a dedupe link) renames across mounts and
// fails. Before the driver, temporary files lived in the repository's own
// .uploads, inside the mount. The test bind-mounts a directory (as root).
func TestReviewWritesIntoABindMountedLayout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount a directory")
	}
	s := newStore(t, false)
	src := filepath.Join(filepath.Dir(s.Root()), "elsewhere")
	os.MkdirAll(src, 0o755)
	mnt := filepath.Join(s.Root(), "app")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "--bind", src, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	data := []byte("a layer pushed into a bind-mounted repository")
	if _, err := s.PutBlob(ctx, "app", digest.FromBytes(data), bytes.NewReader(data)); err != nil {
		t.Fatalf("push into a bind-mounted repository: %v", err)
	}
	putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "bind"))
}
