package boltdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/cachetest"
)

var ctx = context.Background()

func TestCacheSuite(t *testing.T) {
	cachetest.Run(t, cachetest.Backend{
		New: func(t *testing.T) cache.Cache {
			dir := t.TempDir()
			c, err := Open(filepath.Join(dir, "cache.db"), Options{Sync: false, AsideDir: filepath.Join(dir, ".pier")})
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		Empty: func(t *testing.T, c cache.Cache) {
			if err := c.(*Cache).Reset(errors.New("emptied by the test")); err != nil {
				t.Fatal(err)
			}
		},
	})
}

func BenchmarkApply(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprint("sync=", sync), func(b *testing.B) {
			dir := b.TempDir()
			c, err := Open(filepath.Join(dir, "cache.db"), Options{Sync: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			cachetest.BenchApply(b, c)
		})
	}
}

// logBuffer collects what a Cache logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type fixture struct {
	dir, path, aside string
	log              *logBuffer
}

func newFixture(t *testing.T) fixture {
	dir := t.TempDir()
	return fixture{dir: dir, path: filepath.Join(dir, "cache.db"), aside: filepath.Join(dir, ".pier"), log: &logBuffer{}}
}

func (f fixture) open(t *testing.T, sync bool) *Cache {
	t.Helper()
	c, err := Open(f.path, Options{Sync: sync, AsideDir: f.aside, Logger: slog.New(slog.NewTextHandler(f.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// populate writes n digests with three paths each and closes the file.
func (f fixture) populate(t *testing.T, n int) []byte {
	t.Helper()
	c, err := Open(f.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ops []cache.Op
	for i := range n {
		d := digest.FromString(fmt.Sprint(i))
		for _, repo := range []string{"a", "b", "c"} {
			ops = append(ops, cache.Op{Digest: d, Path: repo + "/blobs/sha256/" + d.Encoded()})
		}
	}
	if err := c.Apply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if err := c.MarkComplete(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	b, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// usable checks that c works as a new, empty index.
func usable(t *testing.T, c *Cache) {
	t.Helper()
	d := digest.FromString("after")
	if p, err := c.Paths(ctx, d); err != nil || len(p) != 0 {
		t.Fatalf("Paths = %q, %v", p, err)
	}
	if err := c.Apply(ctx, []cache.Op{{Digest: d, Path: "x/blobs/sha256/" + d.Encoded()}}); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Paths(ctx, d); err != nil || len(p) != 1 {
		t.Fatalf("Paths = %q, %v", p, err)
	}
	if done, err := c.Complete(ctx); err != nil || done {
		t.Fatalf("a replaced index: Complete = %v, %v; want false", done, err)
	}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
}

// Whatever cache.db holds, Open gives a working, empty index, keeps the
// damaged one under .pier/ (nothing new at the root), and logs it once.
func TestOpenSurvivesDamage(t *testing.T) {
	pageSize := os.Getpagesize()
	outside := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(outside, []byte("not pier's"), 0o600)
	cases := map[string]func(t *testing.T, f fixture, good []byte){
		"empty": func(t *testing.T, f fixture, good []byte) { os.WriteFile(f.path, nil, 0o600) },
		"garbage": func(t *testing.T, f fixture, good []byte) {
			os.WriteFile(f.path, bytes.Repeat([]byte("garbage!"), 4096), 0o600)
		},
		"a directory": func(t *testing.T, f fixture, good []byte) { os.Mkdir(f.path, 0o700) },
		"a link out of the root": func(t *testing.T, f fixture, good []byte) {
			os.Symlink(outside, f.path)
		},
		"a link to a sound database": func(t *testing.T, f fixture, good []byte) {
			other := filepath.Join(t.TempDir(), "other.db")
			os.WriteFile(other, good, 0o600)
			os.Symlink(other, f.path)
		},
		"a fifo": func(t *testing.T, f fixture, good []byte) { syscallMkfifo(t, f.path) },
		"garbage after the meta pages": func(t *testing.T, f fixture, good []byte) {
			b := append([]byte(nil), good[:2*pageSize]...)
			r := rand.New(rand.NewPCG(1, 2))
			for range len(good) - 2*pageSize {
				b = append(b, byte(r.Uint32()))
			}
			os.WriteFile(f.path, b, 0o600)
		},
		"pages shifted": func(t *testing.T, f fixture, good []byte) {
			b := append(append([]byte(nil), good[:2*pageSize]...), good[3*pageSize:]...)
			os.WriteFile(f.path, append(b, make([]byte, pageSize)...), 0o600)
		},
		"both meta pages zeroed": func(t *testing.T, f fixture, good []byte) {
			b := append(make([]byte, 2*pageSize), good[2*pageSize:]...)
			os.WriteFile(f.path, b, 0o600)
		},
	}
	for _, cut := range []int{1, 100, pageSize + 50, 2 * pageSize, 2*pageSize + 1, 3 * pageSize, -pageSize, -1} {
		cases[fmt.Sprintf("cut at %d", cut)] = func(t *testing.T, f fixture, good []byte) {
			n := cut
			if n < 0 {
				n += len(good)
			}
			os.WriteFile(f.path, good[:n], 0o600)
		}
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			good := f.populate(t, 300)
			os.Remove(f.path)
			damage(t, f, good)
			c := f.open(t, true)
			usable(t, c)
			if n := strings.Count(f.log.String(), "dedupe cache is damaged"); n != 1 {
				t.Fatalf("damage logged %d times:\n%s", n, f.log)
			}
			if _, err := os.Lstat(filepath.Join(f.aside, AsideName)); err != nil {
				t.Fatalf("the damaged file was not kept under .pier: %v", err)
			}
			entries, _ := os.ReadDir(f.dir)
			for _, e := range entries {
				if e.Name() != "cache.db" && e.Name() != ".pier" {
					t.Fatalf("a file at the root, where a repository name reaches it: %s", e.Name())
				}
			}
			if b, _ := os.ReadFile(outside); string(b) != "not pier's" {
				t.Fatal("a link out of the root was followed")
			}
			c.Close()
			// Opened again: the new file is sound, nothing more is logged.
			c = f.open(t, true)
			if n := strings.Count(f.log.String(), "dedupe cache is damaged"); n != 1 {
				t.Fatalf("a sound file reported as damaged:\n%s", f.log)
			}
			if p, err := c.Paths(ctx, digest.FromString("after")); err != nil || len(p) != 1 {
				t.Fatalf("the new index lost its entry: %q, %v", p, err)
			}
		})
	}
}

// Random damage anywhere in the file, many times over: Open never takes
// the process down, and every call after it either works or reports
// cache.ErrCorrupt, after which Reset gives a working index.
func TestRandomDamage(t *testing.T) {
	f := newFixture(t)
	good := f.populate(t, 400)
	r := rand.New(rand.NewPCG(7, 11))
	runs := 150
	if testing.Short() {
		runs = 30
	}
	var setAside, corrupt int
	defer func() {
		t.Logf("%d runs: %d files set aside at open, %d found damaged in use", runs, setAside, corrupt)
	}()
	for run := range runs {
		b := append([]byte(nil), good...)
		switch run % 3 {
		case 0: // a few bytes anywhere
			for range 1 + r.IntN(8) {
				b[r.IntN(len(b))] = byte(r.Uint32())
			}
		case 1: // a run of garbage
			at, n := r.IntN(len(b)), 1+r.IntN(512)
			for i := at; i < len(b) && i < at+n; i++ {
				b[i] = byte(r.Uint32())
			}
		case 2: // one page copied over another
			ps := os.Getpagesize()
			pages := len(b) / ps
			from, to := r.IntN(pages), 2+r.IntN(pages-2)
			copy(b[to*ps:(to+1)*ps], good[from*ps:(from+1)*ps])
		}
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(f.aside)
		c, err := Open(f.path, Options{AsideDir: f.aside})
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if _, err := os.Lstat(filepath.Join(f.aside, AsideName)); err == nil {
			setAside++
		}
		err = exercise(c)
		if err != nil && !errors.Is(err, cache.ErrCorrupt) {
			t.Fatalf("run %d: %v, want an error that wraps cache.ErrCorrupt", run, err)
		}
		if err != nil {
			corrupt++
			if err := c.Reset(err); err != nil {
				t.Fatalf("run %d: Reset: %v", run, err)
			}
			if err := exercise(c); err != nil {
				t.Fatalf("run %d: after Reset: %v", run, err)
			}
		}
		c.Close()
	}
}

// exercise reads and writes every digest of populate.
func exercise(c *Cache) error {
	if err := c.Check(); err != nil {
		return err
	}
	var ops []cache.Op
	for i := range 400 {
		d := digest.FromString(fmt.Sprint(i))
		if _, err := c.Paths(ctx, d); err != nil {
			return err
		}
		ops = append(ops, cache.Op{Digest: d, Path: "a/blobs/sha256/" + d.Encoded(), Remove: i%2 == 0},
			cache.Op{Digest: d, Path: "new/blobs/sha256/" + d.Encoded()})
	}
	if err := c.Apply(ctx, ops); err != nil {
		return err
	}
	_, err := c.Complete(ctx)
	return err
}

// A cache.db written by zot (same buckets, nil values) is read as is; a
// stale original zot left behind is not returned and is replaced.
func TestReadsZotLayout(t *testing.T) {
	f := newFixture(t)
	db, err := bolt.Open(f.path, 0o600, nil) // zot's options: the freelist synced
	if err != nil {
		t.Fatal(err)
	}
	d, e := digest.FromString("zot layer"), digest.FromString("zot stale")
	p := func(repo string, d digest.Digest) string { return repo + "/blobs/sha256/" + d.Encoded() }
	db.Update(func(tx *bolt.Tx) error {
		root, _ := tx.CreateBucketIfNotExists([]byte("blobs"))
		b, _ := root.CreateBucket([]byte(d.String()))
		dup, _ := b.CreateBucket([]byte("duplicates"))
		dup.Put([]byte(p("zot/one", d)), nil)
		dup.Put([]byte(p("zot/two", d)), nil)
		orig, _ := b.CreateBucket([]byte("original"))
		orig.Put([]byte(p("zot/two", d)), nil)
		// zot's DeleteBlob of an original leaves it in original/.
		b, _ = root.CreateBucket([]byte(e.String()))
		dup, _ = b.CreateBucket([]byte("duplicates"))
		dup.Put([]byte(p("zot/y", e)), nil)
		dup.Put([]byte(p("zot/x", e)), nil)
		orig, _ = b.CreateBucket([]byte("original"))
		return orig.Put([]byte(p("zot/gone", e)), nil)
	})
	db.Close()
	c := f.open(t, false)
	if got, _ := c.Paths(ctx, d); fmt.Sprint(got) != fmt.Sprint([]string{p("zot/two", d), p("zot/one", d)}) {
		t.Fatalf("paths = %q", got)
	}
	if got, _ := c.Paths(ctx, e); fmt.Sprint(got) != fmt.Sprint([]string{p("zot/x", e), p("zot/y", e)}) {
		t.Fatalf("paths with a stale original = %q", got)
	}
	if err := c.Apply(ctx, []cache.Op{{Digest: e, Path: p("zot/y", e), Remove: true}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Paths(ctx, e); fmt.Sprint(got) != fmt.Sprint([]string{p("zot/x", e)}) {
		t.Fatalf("paths = %q", got)
	}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(f.log.String(), "damaged") {
		t.Fatalf("a zot file reported as damaged:\n%s", f.log)
	}
}

func TestInUse(t *testing.T) {
	f := newFixture(t)
	f.open(t, true)
	if _, err := Open(f.path, Options{AsideDir: f.aside}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	if _, err := os.Lstat(filepath.Join(f.aside, AsideName)); err == nil {
		t.Fatal("a file in use was set aside as damaged")
	}
}

// Earlier versions left cache.db.corrupt-<time> at the root, where a
// repository of that name reaches it; Open removes them.
func TestRemovesOldAsideFiles(t *testing.T) {
	f := newFixture(t)
	old := f.path + ".corrupt-1700000000"
	os.WriteFile(old, []byte("old"), 0o600)
	f.open(t, false)
	if _, err := os.Lstat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old aside file is still at the root: %v", err)
	}
}

// Only the latest damaged file is kept, so damage that keeps coming
// cannot fill the card.
func TestKeepsOnlyTheLatestDamagedFile(t *testing.T) {
	f := newFixture(t)
	for i := range 3 {
		os.WriteFile(f.path, bytes.Repeat([]byte{byte(i)}, 9000), 0o600)
		c := f.open(t, false)
		c.Close()
	}
	entries, _ := os.ReadDir(f.aside)
	if len(entries) != 1 {
		t.Fatalf(".pier holds %d entries, want 1", len(entries))
	}
	if b, _ := os.ReadFile(filepath.Join(f.aside, AsideName)); len(b) == 0 || b[0] != 2 {
		t.Fatal("the kept file is not the latest")
	}
}

// Apply makes its changes in order, in one transaction, and a set that
// changes nothing writes nothing (no commit, so no fsync on an SD card).
func TestApplyOneTransaction(t *testing.T) {
	f := newFixture(t)
	c := f.open(t, true)
	d := digest.FromString("layer")
	txid := func() int {
		var id int
		c.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	before := txid()
	err := c.Apply(ctx, []cache.Op{
		{Digest: d, Path: "a/blobs/sha256/x"},
		{Digest: d, Path: "b/blobs/sha256/x"},
		{Digest: d, Path: "a/blobs/sha256/x", Remove: true}, // after its put: gone
		{Digest: d, Path: "c/blobs/sha256/x", Remove: true}, // never recorded
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Paths(ctx, d); fmt.Sprint(got) != "[b/blobs/sha256/x]" {
		t.Fatalf("paths = %s", got)
	}
	if n := txid() - before; n != 1 {
		t.Fatalf("%d write transactions for one Apply, want 1", n)
	}
	before = txid()
	if err := c.Apply(ctx, []cache.Op{{Digest: d, Path: "b/blobs/sha256/x"}, {Digest: d, Path: "z/blobs/sha256/x", Remove: true}}); err != nil {
		t.Fatal(err)
	}
	if txid() != before {
		t.Fatal("a set of changes that change nothing was written")
	}
}

func syscallMkfifo(t *testing.T, path string) {
	t.Helper()
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The file cut short or overwritten while it is open (another process, a
// failing card): reads fault in the memory map or trip bbolt's checks,
// and each call reports cache.ErrCorrupt instead of taking the process
// down; Reset then gives a working index.
func TestDamageWhileOpen(t *testing.T) {
	for _, damage := range []string{"cut", "garbage"} {
		t.Run(damage, func(t *testing.T) {
			f := newFixture(t)
			f.populate(t, 400)
			c := f.open(t, false)
			switch damage {
			case "cut":
				if err := os.Truncate(f.path, int64(2*os.Getpagesize())); err != nil {
					t.Fatal(err)
				}
			case "garbage":
				fh, err := os.OpenFile(f.path, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				fh.WriteAt(bytes.Repeat([]byte{0xA5}, 64*os.Getpagesize()), int64(2*os.Getpagesize()))
				fh.Close()
			}
			err := exercise(c)
			if !errors.Is(err, cache.ErrCorrupt) {
				t.Fatalf("err = %v, want one that wraps cache.ErrCorrupt", err)
			}
			if err := c.Reset(err); err != nil {
				t.Fatal(err)
			}
			usable(t, c)
			if n := strings.Count(f.log.String(), "dedupe cache is damaged"); n != 1 {
				t.Fatalf("damage logged %d times:\n%s", n, f.log)
			}
		})
	}
}
