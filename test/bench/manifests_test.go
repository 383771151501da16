package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

const (
	rateWorkers  = 16
	rateDuration = 5 * time.Second
	rateWarmup   = 300 * time.Millisecond
)

// BenchmarkManifestGet16 measures GET and HEAD of a manifest by tag with
// 16 workers on keep-alive connections, against the same load on GET
// /v2/: what the HTTP stack alone costs (on the same two cores as the
// client). The targets are issue 11's: at least 0.7x the rate of GET /v2/,
// and at most 50 µs of pier's CPU per request (zot spent 114 µs here).
func BenchmarkManifestGet16(b *testing.B) {
	p := startPier(b, pierproc.Options{})
	img := newImage([]byte(`{"architecture":"arm64","os":"linux"}`), randomBytes(7, 4096), randomBytes(8, 4096))
	if _, err := pushImage(p.Client, "rate/app", "latest", img, "", nil, nil); err != nil {
		b.Fatal(err)
	}
	accept := ispec.MediaTypeImageManifest + "," + ispec.MediaTypeImageIndex
	var base, get, head rate
	b.ResetTimer()
	for range b.N {
		base = requestRate(b, p.Pid, "GET", p.URL("/v2/"), "")
		get = requestRate(b, p.Pid, "GET", p.URL("/v2/rate/app/manifests/latest"), accept)
		head = requestRate(b, p.Pid, "HEAD", p.URL("/v2/rate/app/manifests/latest"), accept)
	}
	b.StopTimer()
	for _, r := range []struct {
		method string
		rate   rate
	}{{"GET", get}, {"HEAD", head}} {
		record(b, measure{
			name: fmt.Sprintf("manifest %s by tag, %d workers", r.method, rateWorkers), value: r.rate.perSecond, unit: "req/s",
			limit: base.perSecond, limitName: "GET /v2/", metric: "x_base_" + r.method,
		}, ratioAtLeast(0.7))
		record(b, measure{
			name: fmt.Sprintf("manifest %s by tag: pier CPU per request", r.method), value: r.rate.cpuPerRequest, unit: "µs",
			limit: 50, limitName: "target", metric: "x_cpu_target_" + r.method,
		}, ratioAtMost(1))
	}
}

// rate is what requestRate measured.
type rate struct {
	perSecond     float64 // 200 responses a second
	cpuPerRequest float64 // µs of pier's CPU (user and system) per request
}

// requestRate runs rateWorkers workers sending method url (with an Accept
// header when accept is set) for rateDuration after a warm-up, and
// returns the rate of 200 responses and the CPU pier (pid) spent on each.
func requestRate(b *testing.B, pid int, method, url, accept string) rate {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: rateWorkers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var count atomic.Int64
	var counting atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, rateWorkers)
	var wg sync.WaitGroup
	for range rateWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, method, url, nil)
			if err != nil {
				errs <- err
				return
			}
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			for ctx.Err() == nil {
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s %s: status %d", method, url, resp.StatusCode)
					return
				}
				if counting.Load() {
					count.Add(1)
				}
			}
		}()
	}
	time.Sleep(rateWarmup)
	cpu0, err := procCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	counting.Store(true)
	time.Sleep(rateDuration)
	counting.Store(false)
	n, took := count.Load(), time.Since(start)
	cpu1, err := procCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	r := rate{perSecond: float64(n) / took.Seconds(), cpuPerRequest: float64((cpu1 - cpu0).Microseconds()) / float64(max(n, 1))}
	b.Logf("%s %s: %d requests in %v with %d workers: %.0f req/s, %.1f µs of pier CPU each",
		method, url, n, took.Round(time.Millisecond), rateWorkers, r.perSecond, r.cpuPerRequest)
	return r
}
