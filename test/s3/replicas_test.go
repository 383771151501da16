package s3

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Three replicas on one bucket with one Redis index, clients round-robined
// over them request by request (a chunked upload's chunks land on
// different replicas), pushing into the same repositories and moving the
// same tags while one replica collects garbage every second: every tag
// acknowledged pulls with its digest from every replica, latest is one
// that was acknowledged, index.json parses, the shared layer is stored
// once, and what GC removed was garbage.
func TestReplicas(t *testing.T) {
	b := bucket.New(t)
	index := redisIndex(t, b)
	var piers []*pierproc.Server
	var direct []*ociclient.Client
	for i := range 3 {
		p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{
			"dedupe": true, "remoteCache": true, "cacheDriver": index,
			"gc": i == 0, "gcDelay": "2s", "gcInterval": "1s",
		})})
		piers = append(piers, p)
		direct = append(direct, ociclient.New(p.Addr))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range piers {
				t.Logf("replica %d:\n%s", i, p.Stderr())
			}
		}
	})
	c := ociclient.New(roundRobin(t, piers[0].Addr, piers[1].Addr, piers[2].Addr))
	base := random(3 << 20)
	baseD := digest.FromBytes(base)
	if _, err := c.PushBlobChunked("shared/r0", base, 1<<20); err != nil { // one copy before the rush
		t.Fatal(err)
	}
	orphan, err := c.PushBlob("shared/r1", random(10_000)) // garbage for the collector
	if err != nil {
		t.Fatal(err)
	}

	const workers, rounds, repos = 6, 5, 3
	type ack struct {
		repo, tag string
		img       ociclient.Image
	}
	var mu sync.Mutex
	var acks []ack
	latest := map[string][]digest.Digest{}
	var failures []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				repo := fmt.Sprintf("shared/r%d", (w+i)%repos)
				tag := fmt.Sprintf("w%d-%d", w, i)
				img := image(repo, base, random(30_000))
				err := push(c, repo, tag, img, baseD)
				if err == nil {
					_, err = c.PutManifest(repo, "latest", ispec.MediaTypeImageManifest, img.Manifest)
					mu.Lock()
					acks = append(acks, ack{repo, tag, img})
					if err == nil {
						latest[repo] = append(latest[repo], img.Digest)
					}
					mu.Unlock()
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Errorf("%s:%s: %w", repo, tag, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d pushes acknowledged, %d failed", len(acks), len(failures))
	if len(failures) > workers*rounds/4 {
		t.Errorf("%d of %d pushes failed (a client retries blobs GC took, so few should): %v", len(failures), workers*rounds, failures)
	}
	for _, f := range failures {
		var se *ociclient.StatusError
		if !errors.As(f, &se) || se.Status >= 500 {
			t.Errorf("a push failed other than with a spec error a client retries: %v", f)
		}
	}
	time.Sleep(3 * time.Second) // a collection past gcDelay of everything
	for _, a := range acks {
		wantImage(t, a.repo, a.tag, a.img, direct...)
	}
	for r := range repos {
		repo := fmt.Sprintf("shared/r%d", r)
		indexParses(t, b, repo)
		if len(latest[repo]) == 0 {
			continue
		}
		for _, cl := range direct {
			_, d, err := cl.GetManifest(repo, "latest")
			if err != nil || !slices.Contains(latest[repo], d) {
				t.Errorf("%s: %s:latest is %s, %v; not one of the acknowledged %v", cl.Base, repo, d, err, latest[repo])
			}
		}
	}
	var all []string
	for r := range repos {
		all = append(all, fmt.Sprintf("shared/r%d", r))
	}
	if n := storedBytes(t, b, baseD, all...); n != int64(len(base)) {
		t.Errorf("the layer every image shares takes %d bytes over the replicas' pushes, want one copy of %d", n, len(base))
	}
	eventually(t, 10*time.Second, "the collecting replica never removed the orphan blob", func() bool {
		_, err := direct[1].HeadBlob("shared/r1", orphan)
		var se *ociclient.StatusError
		return errors.As(err, &se) && se.Status == http.StatusNotFound
	})
}

// push sends an image as crane does: HEAD each blob, upload the missing
// ones (the shared layer in chunks), then the manifest; a blob collected
// in between (MANIFEST_BLOB_UNKNOWN) is sent again, twice at most.
func push(c *ociclient.Client, repo, tag string, img ociclient.Image, chunked digest.Digest) error {
	var err error
	for range 3 {
		for d, data := range img.Blobs {
			if _, herr := c.HeadBlob(repo, d); herr == nil {
				continue
			}
			if d == chunked {
				_, err = c.PushBlobChunked(repo, data, 1<<20)
			} else {
				_, err = c.PushBlob(repo, data)
			}
			if err != nil {
				return err
			}
		}
		_, err = c.PutManifest(repo, tag, ispec.MediaTypeImageManifest, img.Manifest)
		var se *ociclient.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
			return err
		}
	}
	return err
}
