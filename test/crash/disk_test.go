package crash

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// checkDisk verifies the layouts themselves: every index.json parses, and
// every file under blobs/ holds exactly the content its name says. pier
// may be serving (and collecting): a file that vanishes during the walk
// was removed whole, which is fine. Blobs damaged on purpose are skipped.
func checkDisk(t *testing.T, root string, damaged ...digest.Digest) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		switch {
		case d.Name() == "index.json" && !slices.Contains(parts, "blobs"):
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			var idx ispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Errorf("%s does not parse after SIGKILL: %v", rel, err)
			}
		case len(parts) >= 3 && parts[len(parts)-3] == "blobs":
			want := digest.NewDigestFromEncoded(digest.Algorithm(parts[len(parts)-2]), parts[len(parts)-1])
			if slices.Contains(damaged, want) {
				return nil
			}
			f, err := os.Open(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			got, err := want.Algorithm().FromReader(f)
			f.Close()
			if err != nil || got != want {
				t.Errorf("%s holds %s", rel, got)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", root, err)
	}
}
