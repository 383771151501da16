package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/ociclient"
)

// pullBufSize is the read size of pulls here and of the page-cache limit:
// large, as a real client reading into a file would use.
const pullBufSize = 1 << 20

// randomBytes is n bytes of seeded random data (incompressible, like the
// layers of a real image).
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(seedOf(seed)).Read(b)
	return b
}

// randomStream is randomBytes(seed, n) as a stream, for content larger
// than the benchmark should hold in memory.
func randomStream(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(seedOf(seed)), n)
}

// streamDigest is the digest of randomStream(seed, n).
func streamDigest(seed uint64, n int64) (digest.Digest, error) {
	return digest.SHA256.FromReader(randomStream(seed, n))
}

func seedOf(seed uint64) (s [32]byte) {
	for i := range 4 {
		s[i*8] = byte(seed >> (8 * i))
		s[i*8+1] = byte(i)
	}
	return s
}

var blob256Once struct {
	once sync.Once
	data []byte
	d    digest.Digest
}

// blob256 is the 256 MiB random blob of the push and pull benchmarks (and
// of the sha256 limit), made once per run.
func blob256(b *testing.B) ([]byte, digest.Digest) {
	b.Helper()
	blob256Once.once.Do(func() {
		blob256Once.data = randomBytes(256, 256*MiB)
		blob256Once.d = digest.FromBytes(blob256Once.data)
	})
	return blob256Once.data, blob256Once.d
}

// getBlob fetches blob d of repo, discarding the body, and checks that it
// has size bytes. The client hashes nothing: the figure is the server's.
func getBlob(c *ociclient.Client, repo string, d digest.Digest, size int64, buf []byte) error {
	resp, err := c.Do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil, nil, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := drain(resp.Body, buf)
	if err != nil {
		return fmt.Errorf("GET blob %s of %s: %w", d, repo, err)
	}
	if n != size {
		return fmt.Errorf("GET blob %s of %s: %d bytes, want %d", d, repo, n, size)
	}
	return nil
}

// pushChunked uploads data, whose digest is d, in PATCH chunks of chunk
// bytes with Content-Range, then completes with an empty PUT. Unlike
// ociclient.PushBlobChunked it takes the digest rather than hashing the
// data itself, so the time measured is the server's, not the client's
// sha256.
func pushChunked(c *ociclient.Client, repo string, d digest.Digest, data []byte, chunk int) error {
	resp, err := c.Do("POST", "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, end-1)}, "Content-Type": {"application/octet-stream"}}
		resp, err := c.Do("PATCH", loc, bytes.NewReader(data[off:end]), hdr, http.StatusAccepted)
		if err != nil {
			return err
		}
		resp.Body.Close()
		loc = resp.Header.Get("Location")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return fmt.Errorf("upload location %q: %w", loc, err)
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	resp, err = c.Do("PUT", u.String(), nil, nil, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// blobExists asks, with HEAD, whether repo has blob d, as a client does
// before uploading a layer.
func blobExists(c *ociclient.Client, repo string, d digest.Digest) (bool, error) {
	resp, err := c.Do("HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil, nil, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// An image is a config and layers to push under a tag.
type image struct {
	ociclient.Image
	Size int64 // config, layers and manifest, in bytes
}

// newImage builds an image over config and layers.
func newImage(config []byte, layers ...[]byte) image {
	img := image{Image: ociclient.ImageManifest(config, layers...)}
	img.Size = int64(len(img.Manifest))
	for _, b := range img.Blobs {
		img.Size += int64(len(b))
	}
	return img
}

// opTimes adds up the time spent per kind of request (HEAD, mount, small
// or large blob upload, manifest), to show where a push's time goes. A nil
// *opTimes records nothing.
type opTimes struct {
	took  map[string]time.Duration
	count map[string]int
}

func (o *opTimes) time(kind string, f func() error) error {
	start := time.Now()
	err := f()
	if o != nil {
		if o.took == nil {
			o.took, o.count = map[string]time.Duration{}, map[string]int{}
		}
		o.took[kind] += time.Since(start)
		o.count[kind]++
	}
	return err
}

func (o *opTimes) String() string {
	kinds := slices.Sorted(maps.Keys(o.took))
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d x %.2f ms", k, o.count[k], float64(o.took[k].Microseconds())/1000/float64(o.count[k])))
	}
	return strings.Join(parts, ", ")
}

// pushImage pushes img to repo:tag the way a client does: HEAD each blob,
// mount it from mountFrom when it is a blob that repository holds (the
// client knows, because it pushed it there), else POST and PUT it. It
// returns the bytes sent, manifest included; ops (may be nil) collects the
// time per kind of request.
func pushImage(c *ociclient.Client, repo, tag string, img image, mountFrom string, shared map[digest.Digest]bool, ops *opTimes) (int64, error) {
	var sent int64
	for d, data := range img.Blobs {
		var ok bool
		err := ops.time("HEAD", func() (err error) { ok, err = blobExists(c, repo, d); return err })
		if err != nil {
			return sent, err
		}
		if ok {
			continue
		}
		if mountFrom != "" && shared[d] {
			var mounted bool
			err := ops.time("mount", func() (err error) { mounted, err = c.Mount(repo, mountFrom, d); return err })
			if err != nil {
				return sent, err
			}
			if mounted {
				continue
			}
			return sent, fmt.Errorf("mount %s from %s into %s: not mounted", d, mountFrom, repo)
		}
		kind := "upload <64KiB"
		if len(data) >= 64<<10 {
			kind = "upload >=64KiB"
		}
		err = ops.time(kind, func() error { return c.PushBlobStream(repo, d, bytes.NewReader(data), int64(len(data))) })
		if err != nil {
			return sent, err
		}
		sent += int64(len(data))
	}
	err := ops.time("manifest PUT", func() error {
		_, err := c.PutManifest(repo, tag, ispec.MediaTypeImageManifest, img.Manifest)
		return err
	})
	if err != nil {
		return sent, err
	}
	return sent + int64(len(img.Manifest)), nil
}

// pullImage pulls repo:tag as a client does: the manifest by tag, then
// its config and every layer. It returns the bytes received.
func pullImage(c *ociclient.Client, repo, tag string, buf []byte) (int64, error) {
	body, _, err := c.GetManifest(repo, tag)
	if err != nil {
		return 0, err
	}
	var m ispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, fmt.Errorf("manifest %s:%s: %w", repo, tag, err)
	}
	total := int64(len(body))
	for _, desc := range append([]ispec.Descriptor{m.Config}, m.Layers...) {
		if err := getBlob(c, repo, desc.Digest, desc.Size, buf); err != nil {
			return total, err
		}
		total += desc.Size
	}
	return total, nil
}
