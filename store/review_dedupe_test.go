package store

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Review: dedupe takes any key the index records as a link source, and
// the index records every blob a walk lists, links inside the root
// included (driver Stat and List follow them; the old firstValid used
// Lstat and refused anything but a regular file). os.Root.Link is
// linkat(2) without AT_SYMLINK_FOLLOW: it links the symbolic link itself,
// whose relative target then resolves from the new key's directory. The
// verified upload is dropped and the push acknowledged, so the pushed
// content is lost; and the store marks whatever the link now resolves to
// as checked against the digest.
func TestReviewDedupeNeverLinksToASymlink(t *testing.T) {
	for _, tc := range []struct {
		name string
		junk bool // bytes of the same size where the link lands
	}{{"link lands nowhere", false}, {"link lands on other bytes", true}} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			s := newDedupeStore(t, root)
			data := randomBytes(t, 4096)
			d := digest.FromBytes(data)
			// A hosted layout whose blob is a link to a file inside the root.
			os.MkdirAll(filepath.Join(root, "data"), 0o755)
			os.WriteFile(filepath.Join(root, "data", d.Encoded()), data, 0o644)
			writeHostedLayout(t, root, "h", `{"schemaVersion":2,"manifests":[]}`)
			if err := os.Symlink("../../../data/"+d.Encoded(), filepath.Join(root, "h", "blobs", "sha256", d.Encoded())); err != nil {
				t.Fatal(err)
			}
			if tc.junk {
				os.MkdirAll(filepath.Join(root, "p", "data"), 0o755)
				os.WriteFile(filepath.Join(root, "p", "data", d.Encoded()), bytes.Repeat([]byte("!"), len(data)), 0o644)
			}
			if _, err := s.Reconcile(ctx); err != nil { // the start-up pass records h's blob
				t.Fatal(err)
			}
			pushBlob(t, s, "p/q", "x", data) // acknowledged
			if fi, err := os.Lstat(s.blobPath("p/q", d)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				t.Errorf("the pushed blob became a symbolic link (hard link of h's link)")
			}
			f, _, err := s.OpenBlob(ctx, "p/q", d)
			if err != nil {
				t.Fatalf("an acknowledged push cannot be pulled: %v", err)
			}
			got, _ := io.ReadAll(f)
			f.Close()
			if !bytes.Equal(got, data) {
				t.Fatalf("an acknowledged push serves other bytes (%q...) under its digest, unchecked", got[:8])
			}
		})
	}
}

// Review: the verified set is keyed by the object's Version, which holds
// the ctime, and every link or unlink of a shared object moves its ctime.
// MountBlob and the dedupe links re-add the new Version, but a delete (by
// GC, DELETE, quarantine) of one key of a shared blob does not: every
// other repository's copy is then read whole again before its next GET
// sends a byte (a base layer shared by many images, after each GC pass
// that collects one of them).
func TestReviewDeletingOneLinkKeepsTheOthersVerified(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	data := randomBytes(t, 100_000)
	d := pushBlob(t, s, "a", "x", data).Digest
	pushBlob(t, s, "b", "x", data) // a link to a's
	if !s.verified.has(mustStat(t, s, blobKey("a", d)).Content, d) {
		t.Fatal("a pushed blob is not verified")
	}
	if err := s.DeleteBlob(ctx, "b", d); err != nil {
		t.Fatal(err)
	}
	if !s.verified.has(mustStat(t, s, blobKey("a", d)).Content, d) {
		t.Error("deleting b's key of a shared blob made a's unverified: its next GET re-reads it whole first")
	}
}
