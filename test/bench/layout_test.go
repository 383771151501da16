package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/ociclient"
)

// Synthetic stores: OCI image layouts written straight to the disk, as
// pier, zot or a copy tool would leave them, so that the benchmarks of
// whole-store passes (gc, scrub, dedupe, start-up) do not first push tens
// of thousands of blobs through HTTP. Blobs are small (1 to 4 KiB): these
// passes cost per file, not per byte.

// refNameKey is the annotation an index.json entry carries its tag in.
const refNameKey = "org.opencontainers.image.ref.name"

// A synthStore describes a synthetic store.
type synthStore struct {
	Prefix   string // repositories are <Prefix>/r0000, <Prefix>/r0001, ...
	Repos    int
	Images   int // tagged images per repository: config, base layer, own layer, manifest
	Bases    int // distinct base layers, hard-linked into every repository as dedupe leaves them; 0: every base layer is its own
	Untagged int // per repository: untagged manifests, each with its own config and layer (garbage for gc)
	Orphans  int // per repository: blobs nothing references (garbage for gc)
	// Copies, when set, writes every repository a second time under this
	// prefix as separate files: unlinked duplicates, as when a zot root (or
	// an rsync without -H) is copied in. Half the blobs are then duplicates.
	Copies string
}

// synthTotals counts what a synthStore wrote.
type synthTotals struct {
	Repos        int
	Blobs        int   // blob paths, hard links included
	Bytes        int64 // of those paths
	Files        int   // distinct blob inodes
	Garbage      int   // blob paths gc should remove (untagged manifests with their config and layer, orphans)
	GarbageBytes int64
	Took         time.Duration
}

// writers is how many repositories are written at once: creating small
// files is bound by metadata operations, which overlap.
const writers = 4

// write writes the store under root. The base layers' first copies are
// kept beside root (in root + ".bases"), on the same filesystem, so that
// every repository can link them.
func (s synthStore) write(root string) (synthTotals, error) {
	start := time.Now()
	var t synthTotals
	bases := make([]string, s.Bases) // a file of each base layer, to link
	baseData := make([][]byte, s.Bases)
	if s.Bases > 0 {
		dir := root + ".bases"
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return t, err
		}
		for i := range s.Bases {
			baseData[i] = randomBytes(uint64(9000+i), 4<<10)
			bases[i] = filepath.Join(dir, digest.FromBytes(baseData[i]).Encoded())
			if err := os.WriteFile(bases[i], baseData[i], 0o644); err != nil {
				return t, err
			}
			t.Files++
		}
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	repos := make(chan int)
	for range writers {
		wg.Go(func() {
			for r := range repos {
				rt, err := s.writeRepo(root, r, bases, baseData)
				mu.Lock()
				t = t.plus(rt)
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	for r := range s.Repos {
		repos <- r
	}
	close(repos)
	wg.Wait()
	t.Took = time.Since(start)
	return t, errors.Join(errs...)
}

// writeRepo writes repository r (and its copy, with Copies).
func (s synthStore) writeRepo(root string, r int, bases []string, baseData [][]byte) (synthTotals, error) {
	var t synthTotals
	// An untagged image shares the base of a tagged one, which keeps it.
	baseOf := func(i int) int { return (r + i%max(s.Images, 1)) % s.Bases }
	prefixes := []string{s.Prefix}
	if s.Copies != "" {
		prefixes = append(prefixes, s.Copies)
	}
	for _, prefix := range prefixes {
		w, err := newLayoutWriter(filepath.Join(root, prefix, fmt.Sprintf("r%04d", r)), &t)
		if err != nil {
			return t, err
		}
		for i := range s.Images + s.Untagged {
			seed := uint64(r)<<16 | uint64(i)
			config := fmt.Appendf(nil, `{"architecture":"arm64","os":"linux","config":{"Labels":{"repo":"r%04d","image":"%d"}},"rootfs":{"type":"layers","diff_ids":[]}}`, r, i)
			own := randomBytes(seed, ownLayerSize(seed))
			var base []byte
			if s.Bases > 0 {
				base = baseData[baseOf(i)]
			} else {
				base = randomBytes(seed|1<<40, ownLayerSize(seed+7))
			}
			img := ociclient.ImageManifest(config, base, own)
			tag := fmt.Sprintf("v%d", i)
			garbage := i >= s.Images
			if garbage {
				tag = "" // untagged: nothing refers to it
			}
			if s.Bases > 0 {
				err = w.link(bases[baseOf(i)], base)
			} else {
				_, err = w.blob(base, garbage)
			}
			for _, data := range [][]byte{config, own, img.Manifest} {
				if err == nil {
					_, err = w.blob(data, garbage)
				}
			}
			if err != nil {
				return t, err
			}
			w.entry(img, tag)
		}
		for i := range s.Orphans {
			if _, err := w.blob(randomBytes(uint64(r)<<16|uint64(0x8000+i), ownLayerSize(uint64(i))), true); err != nil {
				return t, err
			}
		}
		if err := w.close(); err != nil {
			return t, err
		}
	}
	return t, nil
}

func (t synthTotals) plus(o synthTotals) synthTotals {
	t.Repos += o.Repos
	t.Blobs += o.Blobs
	t.Bytes += o.Bytes
	t.Files += o.Files
	t.Garbage += o.Garbage
	t.GarbageBytes += o.GarbageBytes
	return t
}

// ownLayerSize is 1 to 4 KiB, varying with seed.
func ownLayerSize(seed uint64) int { return 1<<10 + int(seed*977%(3<<10)) }

// layoutWriter writes one repository's OCI layout.
type layoutWriter struct {
	dir   string
	t     *synthTotals
	index ispec.Index
	has   map[digest.Digest]string // blobs written, to their paths
}

func newLayoutWriter(dir string, t *synthTotals) (*layoutWriter, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, err
	}
	t.Repos++
	return &layoutWriter{
		dir: dir, t: t, has: map[digest.Digest]string{},
		index: ispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageIndex, Manifests: []ispec.Descriptor{}},
	}, nil
}

func (w *layoutWriter) path(d digest.Digest) string {
	return filepath.Join(w.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// blob writes data as a blob, unless the repository has it already, and
// returns its path; garbage counts it as something gc should remove.
func (w *layoutWriter) blob(data []byte, garbage bool) (string, error) {
	d := digest.FromBytes(data)
	if p, ok := w.has[d]; ok {
		return p, nil
	}
	p := w.path(d)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return "", err
	}
	w.has[d] = p
	w.count(len(data), garbage)
	w.t.Files++
	return p, nil
}

// link makes data's blob a hard link to src, which holds the same bytes,
// unless the repository has it already.
func (w *layoutWriter) link(src string, data []byte) error {
	d := digest.FromBytes(data)
	if _, ok := w.has[d]; ok {
		return nil
	}
	if err := os.Link(src, w.path(d)); err != nil {
		return err
	}
	w.has[d] = w.path(d)
	w.count(len(data), false)
	return nil
}

func (w *layoutWriter) count(n int, garbage bool) {
	w.t.Blobs++
	w.t.Bytes += int64(n)
	if garbage {
		w.t.Garbage++
		w.t.GarbageBytes += int64(n)
	}
}

// entry lists img's manifest in index.json, under tag unless it is "".
func (w *layoutWriter) entry(img ociclient.Image, tag string) {
	d := ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: img.Digest, Size: int64(len(img.Manifest))}
	if tag != "" {
		d.Annotations = map[string]string{refNameKey: tag}
	}
	w.index.Manifests = append(w.index.Manifests, d)
}

func (w *layoutWriter) close() error {
	data, err := json.Marshal(w.index)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(w.dir, ispec.ImageIndexFile), data, 0o644)
}

// makeStore writes s under a new directory in b's temp dir (removed when
// b ends) and logs what it wrote.
func makeStore(b *testing.B, s synthStore) (string, synthTotals) {
	b.Helper()
	root := filepath.Join(b.TempDir(), "data")
	t, err := s.write(root)
	if err != nil {
		b.Fatalf("write synthetic store: %v", err)
	}
	b.Logf("synthetic store: %d repositories, %d blob paths (%d files, %.1f MiB), %d of them garbage; written in %v",
		t.Repos, t.Blobs, t.Files, float64(t.Bytes)/MiB, t.Garbage, t.Took.Round(time.Millisecond))
	return root, t
}

// blobTimes is the mtime and ctime of every blob file under root, by path:
// what a pass that only stats must leave as it was.
func blobTimes(root string) (map[string][2]int64, error) {
	times := map[string][2]int64{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || filepath.Base(filepath.Dir(filepath.Dir(path))) != "blobs" {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		times[path] = [2]int64{st.Mtim.Nano(), st.Ctim.Nano()}
		return nil
	})
	return times, err
}
