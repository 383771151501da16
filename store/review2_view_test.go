package store

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Review2: the view of a repository (its parsed index.json and the
// manifests found servable) is revalidated by index.json's Version alone:
// device, inode, size and ctime. The review of GC showed that Version
// repeats on filesystems without multigrain timestamps (ext2/3/4 before
// Linux 6.13, which Raspberry Pi OS ships): a file replaced through a
// temporary file alternates between two inode numbers, and ctime has the
// resolution of a clock tick. GC was fixed to compare bytes; the view was
// not. Another tool that updates a hosted layout (a tag moved, as skopeo
// or a sync script does, twice within one tick) gives index.json back the
// Version pier cached, and pier serves the old tag — not once, but until
// index.json changes again.
func TestReview2ViewIsNotFooledByARepeatedVersion(t *testing.T) {
	dir := coarseDir(t)
	s := openStore(t, dir, false, false)
	stale := 0
	const attempts = 30
	for i := range attempts {
		repo := "r" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		dA := putManifest(t, s, repo, "t1", imageManifest(t, s, repo, "A"))
		dB := putManifest(t, s, repo, "t2", imageManifest(t, s, repo, "B"))
		if m, err := s.GetManifest(ctx, repo, "t1"); err != nil || m.Digest != dA { // cached: index.json at Version V0
			t.Fatalf("t1 = %s, %v", m.Digest, err)
		}
		idx := readIndexFile(t, s, repo)
		swap := func(a, b digest.Digest) []byte { // t1 and t2 exchanged: the same size
			x := idx
			x.Manifests = nil
			for _, e := range idx.Manifests {
				switch e.Digest {
				case a:
					e.Digest = b
				case b:
					e.Digest = a
				}
				x.Manifests = append(x.Manifests, e)
			}
			out, _ := json.Marshal(x)
			return out
		}
		// The other tool: write a temporary file and rename it over
		// index.json, twice in a row (a tag moved, then moved again).
		replace := func(data []byte) {
			tmp := s.indexPath(repo) + ".tmp"
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, s.indexPath(repo)); err != nil {
				t.Fatal(err)
			}
		}
		orig, _ := json.Marshal(idx)
		replace(orig)         // rewritten as it was (a no-op sync)
		replace(swap(dA, dB)) // t1 now names B
		m, err := s.GetManifest(ctx, repo, "t1")
		if err != nil {
			t.Fatal(err)
		}
		if m.Digest != dB {
			stale++
			if stale == 1 {
				t.Errorf("%s: index.json says t1 = %s, pier serves t1 = %s", repo, dB, m.Digest)
			}
		}
	}
	if stale > 0 {
		t.Errorf("%d of %d tag moves by another tool were not seen: pier kept serving the old tag", stale, attempts)
	}
}
