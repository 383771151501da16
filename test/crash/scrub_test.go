package crash

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// A damaged blob, shared by dedupe between several repositories, and an
// offline `pier scrub` killed at random moments while it re-hashes and
// quarantines. After each kill pier must start and serve every undamaged
// blob whole; a scrub that runs to its end must leave the damaged blob
// served nowhere; and once it is pushed again, scrub must be clean.
func TestKillDuringScrub(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	// Scrub reads at 4 MiB/s: the ~8 MiB below take about two seconds,
	// long enough to be killed in the middle.
	opts := pierproc.Options{
		Storage: map[string]any{"commit": true, "dedupe": true},
		Extra:   map[string]any{"extensions": map[string]any{"scrub": map[string]any{"enable": false, "maxBytesPerSecond": 4 << 20}}},
	}
	srv := pierproc.Start(t, opts)
	opts.Root = srv.Root
	c := ociclient.New(srv.Addr)
	victim := random(rng, 256<<10)
	type pushed struct {
		repo string
		img  ociclient.Image
	}
	var images []pushed
	for i := range 8 {
		repo := fmt.Sprintf("scrub/r%d", i)
		layers := [][]byte{random(rng, 1<<20)}
		if i >= 4 {
			// One inode in the last four repositories: scrub, which goes in
			// name order, meets it halfway, so kills land before and after.
			layers = append(layers, victim)
		}
		img := ociclient.ImageManifest([]byte(fmt.Sprintf(`{"scrub":%d}`, i)), layers...)
		if err := c.PushImage(repo, "v1", img); err != nil {
			t.Fatal(err)
		}
		images = append(images, pushed{repo, img})
	}
	srv.Stop(t)
	bad := digest.FromBytes(victim)
	damage(t, filepath.Join(srv.Root, "scrub/r4/blobs", bad.Algorithm().String(), bad.Encoded()))

	for kill := range 3 {
		cmd := exec.Command(pierproc.Binary(t), "scrub", srv.Config)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		after := time.Duration(100+rng.IntN(1900)) * time.Millisecond
		time.Sleep(after)
		cmd.Process.Kill()
		cmd.Wait()
		moved, _ := filepath.Glob(filepath.Join(srv.Root, ".quarantine", "scrub", "*", bad.Algorithm().String(), bad.Encoded()))
		t.Logf("kill %d after %s: scrub %s; %d of 4 paths of the damaged blob quarantined", kill, after, cmd.ProcessState, len(moved))

		srv := pierproc.Start(t, opts)
		c := ociclient.New(srv.Addr)
		for _, p := range images {
			// pier serves no manifest with a blob missing: those holding the
			// damaged blob come back with the re-push.
			if _, got, err := c.GetManifest(p.repo, "v1"); p.img.Blobs[bad] == nil && (err != nil || got != p.img.Digest) {
				t.Errorf("%s:v1 is %s: %v", p.repo, got, err)
			}
			for d := range p.img.Blobs {
				if d == bad {
					continue // served damaged until scrub reaches it, then not at all
				}
				if _, err := c.GetBlob(p.repo, d); err != nil {
					t.Errorf("%s: undamaged blob %s after a killed scrub: %v", p.repo, d, err)
				}
			}
		}
		checkDisk(t, srv.Root, bad)
		srv.Stop(t)
		if t.Failed() {
			t.Fatalf("kill %d (seed %d)\nscrub output:\n%s\npier log:\n%s", kill, seed, out.String(), srv.Stderr())
		}
	}

	// A scrub that runs to its end finds the damage (corrupt, or missing
	// when a killed pass had already quarantined every copy).
	code, out := pierproc.Run(t, "scrub", srv.Config)
	if code != 1 || !strings.Contains(out, bad.String()) {
		t.Fatalf("complete scrub: exit %d, want 1 naming %s\n%s", code, bad, out)
	}
	srv = pierproc.Start(t, opts)
	c = ociclient.New(srv.Addr)
	for _, p := range images {
		if _, ok := p.img.Blobs[bad]; !ok {
			continue
		}
		if _, err := c.GetBlob(p.repo, bad); err == nil || !strings.Contains(err.Error(), "BLOB_UNKNOWN") {
			t.Errorf("%s: the damaged blob is still served after a complete scrub: %v", p.repo, err)
		}
		if _, err := c.PushBlob(p.repo, victim); err != nil {
			t.Fatalf("%s: re-push: %v", p.repo, err)
		}
		if _, err := c.GetBlob(p.repo, bad); err != nil {
			t.Errorf("%s: re-push did not heal: %v", p.repo, err)
		}
	}
	for _, p := range images {
		if _, got, err := c.GetManifest(p.repo, "v1"); err != nil || got != p.img.Digest {
			t.Errorf("%s:v1 is %s after the re-push: %v", p.repo, got, err)
		}
	}
	srv.Stop(t)
	if code, out := pierproc.Run(t, "scrub", srv.Config); code != 0 || !strings.Contains(out, "0 corrupt, 0 missing") {
		t.Fatalf("scrub after the re-push: exit %d\n%s", code, out)
	}
}

// damage flips one byte of a file in place: every hard link to it sees it.
func damage(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 1000); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, 1000); err != nil {
		t.Fatal(err)
	}
}
