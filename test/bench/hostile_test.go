package bench

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// BenchmarkHugeManifestMemory is pier's peak resident size after a client
// streams a 100 MiB manifest (chunked, so pier cannot refuse it by its
// Content-Length), compared with its peak after the largest manifest body
// it reads, 4 MiB, in the same process just before. pier stops reading at
// the cap, so the huge one must not raise the peak beyond the noise of
// the garbage collector's timing; one that buffered it would be at 5x or
// more. Target: <= 1.25x.
func BenchmarkHugeManifestMemory(b *testing.B) {
	var base, after int64
	for range b.N {
		p := startPier(b, pierproc.Options{})
		put := func(size int) int {
			body := io.LimitReader(endless{}, int64(size))
			req, _ := http.NewRequest("PUT", p.URL("/v2/huge/app/manifests/v1"), struct{ io.Reader }{body})
			req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0 // cut off while sending: refused too
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := put(4 << 20); code != http.StatusBadRequest {
			b.Fatalf("4 MiB of spaces as a manifest: %d, want 400", code)
		}
		var err error
		if _, base, err = procStatus(p.Pid); err != nil {
			b.Fatal(err)
		}
		if code := put(100 << 20); code != http.StatusRequestEntityTooLarge && code != 0 {
			b.Fatalf("100 MiB manifest: %d, want 413", code)
		}
		if _, after, err = procStatus(p.Pid); err != nil {
			b.Fatal(err)
		}
	}
	record(b, measure{
		name: "peak RSS after a 100 MiB manifest", value: float64(after) / 1024, unit: "MiB",
		limit: float64(base) / 1024, limitName: "peak after a 4 MiB manifest body", metric: "x_4mib_peak",
	}, ratioAtMost(1.25))
}

// endless is an unending stream of spaces (valid JSON whitespace).
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// BenchmarkSlowHeadersLatency is the time a normal client takes to get
// /v2/ while 200 connections send their headers one byte a second,
// compared with the same request on the same pier with no such
// connections. Target: <= 3x.
func BenchmarkSlowHeadersLatency(b *testing.B) {
	var quiet, attacked time.Duration
	for range b.N {
		p := startPier(b, pierproc.Options{HTTP: map[string]any{"readHeaderTimeout": "30s"}})
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		get := func() time.Duration {
			start := time.Now()
			resp, err := client.Get(p.URL("/v2/"))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return time.Since(start)
		}
		quiet = bestOf(b, 50, get)
		stop := make(chan struct{})
		for range 200 {
			conn, err := net.Dial("tcp", p.Addr)
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				defer conn.Close()
				req := []byte("GET /v2/ HTTP/1.1\r\nHost: pier\r\n")
				for i := 0; ; i = (i + 1) % len(req) {
					if _, err := conn.Write(req[i : i+1]); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-time.After(time.Second):
					}
				}
			}()
		}
		time.Sleep(2 * time.Second)
		attacked = bestOf(b, 50, get)
		close(stop)
	}
	b.Logf("GET /v2/: %v alone, %v beside 200 slow connections", quiet, attacked)
	record(b, measure{
		name: "GET /v2/ beside 200 slowloris connections", value: float64(attacked.Microseconds()), unit: "us",
		limit: float64(quiet.Microseconds()), limitName: "GET /v2/ alone", metric: "x_alone",
	}, ratioAtMost(3))
}

// BenchmarkLoginOverhead is the time of a request with Basic credentials
// (a user of an htpasswd file, bcrypt cost 10) against the same request
// without credentials, on one pier whose policy lets both read. Clients
// send the password with every request of a push; pier checks it with
// bcrypt (tens of milliseconds, on purpose) once, then remembers it for a
// few minutes: without that, each request would take the first's time.
// Target: <= 3x.
func BenchmarkLoginOverhead(b *testing.B) {
	var anon, user time.Duration
	for range b.N {
		dir := b.TempDir()
		htpasswd := filepath.Join(dir, "htpasswd")
		cmd := exec.Command(pierproc.Binary(b), "htpasswd", htpasswd, "ci")
		cmd.Stdin = strings.NewReader("ci-secret\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pier htpasswd: %v\n%s", err, out)
		}
		p := startPier(b, pierproc.Options{HTTP: map[string]any{
			"auth":          map[string]any{"htpasswd": map[string]any{"path": htpasswd}},
			"accessControl": map[string]any{"repositories": map[string]any{"**": map[string]any{"anonymousPolicy": []string{"read"}, "defaultPolicy": []string{"read"}}}},
		}})
		client := &http.Client{}
		get := func(login bool) func() time.Duration {
			return func() time.Duration {
				req, _ := http.NewRequest("GET", p.URL("/v2/_catalog"), nil)
				if login {
					req.SetBasicAuth("ci", "ci-secret")
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("GET /v2/_catalog (login %v): %s", login, resp.Status)
				}
				return time.Since(start)
			}
		}
		first := get(true)()
		anon = bestOf(b, 100, get(false))
		user = bestOf(b, 100, get(true))
		b.Logf("first login %v (bcrypt); then %v with the password, %v without", first, user, anon)
	}
	record(b, measure{
		name: "request with a password (after the first)", value: float64(user.Microseconds()), unit: "us",
		limit: float64(anon.Microseconds()), limitName: "without credentials", metric: "x_anonymous",
	}, ratioAtMost(3))
}
