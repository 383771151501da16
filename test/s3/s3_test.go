// Package s3 runs pier on the S3 server of test/services.sh (versitygw),
// through the real binary: a bucket carries from one pier to the next,
// replicas share one, the bucket, the index and pier itself fail and come
// back, and the store-wide lookup saves uploads.
package s3

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/ociclient"
)

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// redisIndex is a cacheDriver on the Redis of test/services.sh, with a
// key prefix of the bucket's own.
func redisIndex(t *testing.T, b bucket.Bucket) map[string]any {
	t.Helper()
	addr := os.Getenv("PIER_TEST_REDIS")
	if addr == "" {
		t.Fatal("PIER_TEST_REDIS is not set: run the tests under test/services.sh (make test does)")
	}
	return map[string]any{"name": "redis", "url": "redis://" + addr + "/0", "keyprefix": strings.TrimPrefix(b.Root, "/")}
}

// blobKey is where a repository's blob is, below the bucket's prefix.
func blobKey(repo string, d digest.Digest) string { return repo + "/blobs/sha256/" + d.Encoded() }

// storedBytes is how many bytes the keys of d in repos take in the bucket
// (a placeholder takes none).
func storedBytes(t *testing.T, b bucket.Bucket, d digest.Digest, repos ...string) int64 {
	t.Helper()
	drv := b.Open(t)
	var n int64
	for _, r := range repos {
		if info, err := drv.Stat(context.Background(), blobKey(r, d)); err == nil {
			n += info.Size
		}
	}
	return n
}

// wantImage fails unless every one of clients serves img under ref, byte
// for byte.
func wantImage(t *testing.T, repo, ref string, img ociclient.Image, clients ...*ociclient.Client) {
	t.Helper()
	for _, c := range clients {
		body, d, err := c.GetManifest(repo, ref)
		if err != nil {
			t.Fatalf("%s: %s:%s: %v", c.Base, repo, ref, err)
		}
		if d != img.Digest || string(body) != string(img.Manifest) {
			t.Fatalf("%s: %s:%s is %s, want %s", c.Base, repo, ref, d, img.Digest)
		}
		for bd, data := range img.Blobs {
			got, err := c.GetBlob(repo, bd)
			if err != nil {
				t.Fatalf("%s: blob %s of %s:%s: %v", c.Base, bd, repo, ref, err)
			}
			if string(got) != string(data) {
				t.Fatalf("%s: blob %s of %s:%s: %d bytes, not the %d pushed", c.Base, bd, repo, ref, len(got), len(data))
			}
		}
	}
}

// indexParses fails unless repo's index.json in the bucket is JSON.
func indexParses(t *testing.T, b bucket.Bucket, repo string) {
	t.Helper()
	data, _, err := b.Open(t).ReadFile(context.Background(), repo+"/index.json", 64<<20)
	if err != nil {
		t.Fatalf("%s/index.json: %v", repo, err)
	}
	var x struct {
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(data, &x); err != nil {
		t.Fatalf("%s/index.json does not parse: %v\n%s", repo, err, data)
	}
}

// roundRobin is a proxy that sends each request to the next of backends
// (host:port), as a load balancer without affinity does: the requests of
// one chunked upload land on different replicas.
func roundRobin(t *testing.T, backends ...string) string {
	t.Helper()
	var next atomic.Int64
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		u := &url.URL{Scheme: "http", Host: backends[int(next.Add(1))%len(backends)]}
		r.SetURL(u)
		r.Out.Host = r.In.Host
	}}
	return serve(t, proxy)
}

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// counting is a TCP proxy to addr that counts the bytes clients send.
func counting(t *testing.T, addr string) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var sent atomic.Int64
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(in, out); in.Close() }()
				n, _ := io.Copy(out, in)
				sent.Add(n)
			}()
		}
	}()
	return l.Addr().String(), &sent
}

// eventually waits for cond, failing with what after the deadline.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

func image(repo string, layers ...[]byte) ociclient.Image {
	return ociclient.ImageManifest(fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","repo":%q,"n":%q}`, repo, rand.Text()), layers...)
}

var specsV2 = specs.Versioned{SchemaVersion: 2}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
