package crash

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// A root holding layouts copied in while pier was off: the same blobs as
// separate files in many repositories. pier links them in its startup
// dedupe pass, which replaces files that are being served; it is killed
// at random moments of that pass, and after each restart every image must
// be served whole. Once a pass completes, every digest is one inode.
func TestKillDuringDedupeReconcile(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))

	// One image pushed through the API, then its layout copied on disk.
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"commit": true, "dedupe": false}})
	c := ociclient.New(srv.Addr)
	var layers [][]byte
	for range 12 {
		layers = append(layers, random(rng, 1<<20))
	}
	img := ociclient.ImageManifest([]byte(`{"reconcile":1}`), layers...)
	if err := c.PushImage("dup/r00", "v1", img); err != nil {
		t.Fatal(err)
	}
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	const copies = 16
	repos := []string{"dup/r00"}
	for i := 1; i < copies; i++ {
		repo := fmt.Sprintf("dup/r%02d", i)
		if out, err := exec.Command("cp", "-a", filepath.Join(srv.Root, "dup/r00"), filepath.Join(srv.Root, repo)).CombinedOutput(); err != nil {
			t.Fatalf("copy layout: %v\n%s", err, out)
		}
		repos = append(repos, repo)
	}

	opts := pierproc.Options{Root: srv.Root, Storage: map[string]any{"commit": true, "dedupe": true}, Extra: map[string]any{"log": map[string]any{"level": "info"}}}
	files := blobFiles(t, srv.Root, repos)
	const kills = 4
	for kill := range kills {
		// Kill once the pass has linked a random share of the copies, a
		// larger one each time: the pass is too quick to hit by timing.
		target := len(files)/kills*kill + 1 + rng.IntN(len(files)/kills)
		srv := pierproc.Start(t, opts)
		deadline := time.Now().Add(10 * time.Second)
		for linked(files) < target && !strings.Contains(srv.Stderr(), "dedupe pass done") && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		srv.Kill(t)
		t.Logf("kill %d: %d of %d blob files linked (target %d)", kill, linked(files), len(files), target)
		// Checked with dedupe off, so that the check does not finish the
		// pass the next start must resume.
		srv = pierproc.Start(t, pierproc.Options{Root: srv.Root, Storage: map[string]any{"commit": true, "dedupe": false}})
		checkImages(t, ociclient.New(srv.Addr), repos, img)
		checkDisk(t, srv.Root)
		srv.Kill(t)
		if t.Failed() {
			t.Fatalf("kill %d (seed %d); pier log:\n%s", kill, seed, srv.Stderr())
		}
	}

	srv = pierproc.Start(t, opts)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(srv.Stderr(), "dedupe pass done") {
		if time.Now().After(deadline) {
			t.Fatalf("the dedupe pass did not finish; pier log:\n%s", srv.Stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkImages(t, ociclient.New(srv.Addr), repos, img)
	if n := linked(files); n != len(files)-len(files)/len(repos) {
		t.Errorf("after a complete pass %d of %d blob files are links, want all but one copy of each", n, len(files))
	}
}

// blobFiles lists every blob file of repos.
func blobFiles(t *testing.T, root string, repos []string) []string {
	t.Helper()
	var out []string
	for _, repo := range repos {
		m, err := filepath.Glob(filepath.Join(root, repo, "blobs", "*", "*"))
		if err != nil || len(m) == 0 {
			t.Fatalf("no blobs in %s: %v", repo, err)
		}
		out = append(out, m...)
	}
	return out
}

// linked counts the files that share their inode with another one of
// files: how far the dedupe pass got.
func linked(files []string) int {
	inodes := map[uint64]bool{}
	for _, f := range files {
		var st syscall.Stat_t
		if syscall.Stat(f, &st) == nil {
			inodes[st.Ino] = true
		}
	}
	return len(files) - len(inodes)
}

// checkImages pulls img by tag v1 from every repository, every blob whole.
func checkImages(t *testing.T, c *ociclient.Client, repos []string, img ociclient.Image) {
	t.Helper()
	for _, repo := range repos {
		if _, got, err := c.GetManifest(repo, "v1"); err != nil || got != img.Digest {
			t.Errorf("%s:v1 is %s: %v", repo, got, err)
		}
		for d, b := range img.Blobs {
			got, err := c.GetBlob(repo, d) // checks the digest
			if err != nil || len(got) != len(b) {
				t.Errorf("%s: blob %s: %v", repo, d, err)
			}
		}
	}
}

func random(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
