// Package crash kills a real pier with SIGKILL in the middle of a stream of
// pushes, tag moves and deletes, restarts it on the same root, and checks
// that nothing acknowledged was lost and nothing torn is served. A process
// kill keeps the page cache, so this proves atomicity (no torn index.json,
// no half blob under a digest) and the acknowledgement order; power cuts,
// which also test the fsyncs, are test/powercut's job.
package crash

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

const (
	clients = 4
	cycles  = 8
)

func TestKillDuringPushes(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"commit": true}})
	ledgers := make([]*ledger, clients)
	for i := range ledgers {
		ledgers[i] = newLedger(fmt.Sprintf("crash/c%d", i))
	}
	acked := 0
	for cycle := range cycles {
		c := ociclient.New(srv.Addr)
		var wg sync.WaitGroup
		for i, l := range ledgers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := &worker{c: c, l: l, peers: ledgers, rng: rand.New(rand.NewPCG(seed, uint64(cycle*clients+i+2)))}
				w.run()
			}()
		}
		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		srv.Kill(t)
		wg.Wait()

		srv.Restart(t)
		n := 0
		for _, l := range ledgers {
			n += l.check(t, c)
		}
		checkDisk(t, srv.Root)
		acked += n
		t.Logf("cycle %d: %d acknowledged writes verified after SIGKILL", cycle, n)
		if t.Failed() {
			t.Fatalf("cycle %d failed (seed %d); pier log:\n%s", cycle, seed, srv.Stderr())
		}
	}
	// The registry still takes a push after all that.
	c := ociclient.New(srv.Addr)
	img := ociclient.ImageManifest([]byte(`{"after":"crashes"}`), []byte("fresh layer"))
	for _, b := range img.Blobs {
		if _, err := c.PushBlob("crash/after", b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.PutManifest("crash/after", "ok", ispec.MediaTypeImageManifest, img.Manifest); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d cycles, %d acknowledged writes checked in all", cycles, acked)
}

// ledger is what the registry acknowledged to one client, which owns one
// repository, plus the one operation it had in flight when pier died
// (which may or may not have taken effect).
type ledger struct {
	repo      string
	mu        sync.Mutex
	blobs     map[digest.Digest]int64
	manifests map[digest.Digest]bool   // true: present; false: deleted
	tags      map[string]digest.Digest // "" after an acknowledged delete
	pending   *op
}

type op struct {
	tag      string        // tag set (to digest) or deleted (digest "")
	digest   digest.Digest // manifest pushed or deleted
	deletion bool
}

func newLedger(repo string) *ledger {
	return &ledger{repo: repo, blobs: map[digest.Digest]int64{}, manifests: map[digest.Digest]bool{}, tags: map[string]digest.Digest{}}
}

func (l *ledger) begin(o *op) { l.mu.Lock(); l.pending = o; l.mu.Unlock() }

func (l *ledger) ack(o *op) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = nil
	if o.tag != "" {
		if o.deletion {
			l.tags[o.tag] = ""
		} else {
			l.tags[o.tag] = o.digest
		}
	}
	if o.digest != "" && (o.tag == "" || !o.deletion) {
		l.manifests[o.digest] = !o.deletion
	}
}

func (l *ledger) ackBlob(d digest.Digest, size int64) {
	l.mu.Lock()
	l.blobs[d] = size
	l.mu.Unlock()
}

func (l *ledger) someBlob(rng *rand.Rand) (digest.Digest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.blobs) == 0 {
		return "", false
	}
	keys := make([]digest.Digest, 0, len(l.blobs))
	for d := range l.blobs {
		keys = append(keys, d)
	}
	slices.Sort(keys)
	return keys[rng.IntN(len(keys))], true
}

// check verifies everything acknowledged against the restarted server and
// returns how many acknowledgements it checked.
func (l *ledger) check(t *testing.T, c *ociclient.Client) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for d, size := range l.blobs {
		b, err := c.GetBlob(l.repo, d)
		if err != nil || int64(len(b)) != size {
			t.Errorf("%s: acknowledged blob %s lost: %v", l.repo, d, err)
		}
		n++
	}
	p := l.pending
	for d, present := range l.manifests {
		if p != nil && p.digest == d {
			continue // its fate was decided by the request in flight
		}
		_, got, err := c.GetManifest(l.repo, d.String())
		switch {
		case present && (err != nil || got != d):
			t.Errorf("%s: acknowledged manifest %s lost: %v", l.repo, d, err)
		case !present && err == nil:
			t.Errorf("%s: acknowledged delete of %s undone", l.repo, d)
		}
		n++
	}
	var wantTags []string
	for tag, d := range l.tags {
		if p != nil && p.tag == tag {
			continue
		}
		if d != "" {
			wantTags = append(wantTags, tag)
		}
		_, got, err := c.GetManifest(l.repo, tag)
		switch {
		case d != "" && (err != nil || got != d):
			t.Errorf("%s: tag %s should be %s, got %s (%v)", l.repo, tag, d, got, err)
		case d == "" && err == nil:
			t.Errorf("%s: acknowledged delete of tag %s undone (now %s)", l.repo, tag, got)
		}
		n++
	}
	if len(l.tags) > 0 {
		tags, err := c.Tags(l.repo)
		if err != nil {
			t.Errorf("%s: tags list: %v", l.repo, err)
		}
		tags = slices.DeleteFunc(tags, func(s string) bool { return p != nil && s == p.tag })
		slices.Sort(tags)
		slices.Sort(wantTags)
		if !slices.Equal(tags, wantTags) {
			t.Errorf("%s: tags list %v, acknowledged %v", l.repo, tags, wantTags)
		}
	}
	l.pending = nil // from now on the server's answer is the truth for it
	if p != nil {
		l.adoptPending(c, p)
	}
	return n
}

// adoptPending records what the in-flight operation turned out to do, so
// later cycles check it like any acknowledged write.
func (l *ledger) adoptPending(c *ociclient.Client, p *op) {
	if p.tag != "" {
		if _, got, err := c.GetManifest(l.repo, p.tag); err == nil {
			l.tags[p.tag] = got
		} else {
			l.tags[p.tag] = ""
		}
	}
	if p.digest != "" {
		_, _, err := c.GetManifest(l.repo, p.digest.String())
		l.manifests[p.digest] = err == nil
	}
}

// worker is one client pushing until its server dies.
type worker struct {
	c     *ociclient.Client
	l     *ledger
	peers []*ledger
	rng   *rand.Rand
}

func (w *worker) run() {
	for {
		if err := w.step(); err != nil {
			return // the server was killed
		}
	}
}

func (w *worker) step() error {
	switch k := w.rng.IntN(10); {
	case k < 5:
		return w.pushImage(fmt.Sprintf("t%d", w.rng.IntN(3)))
	case k < 7:
		return w.pushImage("")
	case k < 8:
		return w.deleteTag()
	case k < 9:
		return w.deleteUntagged()
	default:
		return w.mount()
	}
}

func (w *worker) randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(w.rng.UintN(256))
	}
	return b
}

// pushImage pushes a small image with 1–3 random layers (1–64 KiB), one
// of them shared by every client, under tag or (tag "") by digest.
func (w *worker) pushImage(tag string) error {
	layers := [][]byte{[]byte("the shared base layer of every crash image")}
	for range 1 + w.rng.IntN(2) {
		layers = append(layers, w.randomBytes(1024+w.rng.IntN(63*1024)))
	}
	img := ociclient.ImageManifest(w.randomBytes(64), layers...)
	for d, b := range img.Blobs {
		var err error
		if w.rng.IntN(2) == 0 {
			_, err = w.c.PushBlob(w.l.repo, b)
		} else {
			_, err = w.c.PushBlobChunked(w.l.repo, b, 1+w.rng.IntN(len(b)))
		}
		if err != nil {
			return err
		}
		w.l.ackBlob(d, int64(len(b)))
	}
	o := &op{tag: tag, digest: img.Digest}
	ref := tag
	if tag == "" {
		ref = img.Digest.String()
	}
	w.l.begin(o)
	if _, err := w.c.PutManifest(w.l.repo, ref, ispec.MediaTypeImageManifest, img.Manifest); err != nil {
		return err
	}
	w.l.ack(o)
	return nil
}

func (w *worker) deleteTag() error {
	tag := fmt.Sprintf("t%d", w.rng.IntN(3))
	w.l.mu.Lock()
	d := w.l.tags[tag]
	w.l.mu.Unlock()
	if d == "" {
		return nil
	}
	o := &op{tag: tag, deletion: true}
	w.l.begin(o)
	if err := w.c.Delete(w.l.repo, "manifests", tag); err != nil {
		return err
	}
	w.l.ack(o)
	return nil
}

// deleteUntagged deletes a manifest this client pushed by digest only.
func (w *worker) deleteUntagged() error {
	w.l.mu.Lock()
	var candidates []digest.Digest
	tagged := map[digest.Digest]bool{}
	for _, d := range w.l.tags {
		tagged[d] = true
	}
	for d, present := range w.l.manifests {
		if present && !tagged[d] {
			candidates = append(candidates, d)
		}
	}
	w.l.mu.Unlock()
	if len(candidates) == 0 {
		return nil
	}
	slices.Sort(candidates)
	d := candidates[w.rng.IntN(len(candidates))]
	o := &op{digest: d, deletion: true}
	w.l.begin(o)
	if err := w.c.Delete(w.l.repo, "manifests", d.String()); err != nil {
		if se, ok := err.(*ociclient.StatusError); ok && se.Status == 405 {
			w.l.begin(nil) // a tag moved onto it meanwhile is impossible; refused cleanly
			return nil
		}
		return err
	}
	w.l.ack(o)
	return nil
}

// mount takes a blob another client has and mounts it here.
func (w *worker) mount() error {
	peer := w.peers[w.rng.IntN(len(w.peers))]
	d, ok := peer.someBlob(w.rng)
	if !ok || peer == w.l {
		return nil
	}
	mounted, err := w.c.Mount(w.l.repo, peer.repo, d)
	if err != nil {
		return err
	}
	if mounted {
		peer.mu.Lock()
		size := peer.blobs[d]
		peer.mu.Unlock()
		w.l.ackBlob(d, size)
	}
	return nil
}

// checkDisk verifies the layouts themselves: every index.json parses, and
// every file under blobs/ holds exactly the content its name says.
func checkDisk(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
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
			if err != nil {
				return err
			}
			var idx ispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Errorf("%s does not parse after SIGKILL: %v", rel, err)
			}
		case len(parts) >= 3 && parts[len(parts)-3] == "blobs":
			want := digest.NewDigestFromEncoded(digest.Algorithm(parts[len(parts)-2]), parts[len(parts)-1])
			f, err := os.Open(path)
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
