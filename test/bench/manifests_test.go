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

// BenchmarkManifestGet16 measures GET of a manifest by tag with 16
// workers on keep-alive connections, against the same load on GET /v2/:
// what the HTTP stack alone costs (on the same two cores as the client).
func BenchmarkManifestGet16(b *testing.B) {
	p := startPier(b, pierproc.Options{})
	img := newImage([]byte(`{"architecture":"arm64","os":"linux"}`), randomBytes(7, 4096), randomBytes(8, 4096))
	if _, err := pushImage(p.Client, "rate/app", "latest", img, "", nil, nil); err != nil {
		b.Fatal(err)
	}
	accept := ispec.MediaTypeImageManifest + "," + ispec.MediaTypeImageIndex
	var base, manifests float64
	b.ResetTimer()
	for range b.N {
		base = requestRate(b, p.URL("/v2/"), "")
		manifests = requestRate(b, p.URL("/v2/rate/app/manifests/latest"), accept)
	}
	b.StopTimer()
	record(b, measure{
		name: fmt.Sprintf("manifest GET by tag, %d workers", rateWorkers), value: manifests, unit: "req/s",
		limit: base, limitName: "GET /v2/", metric: "x_base",
	}, nil)
}

// requestRate runs rateWorkers workers sending GET url (with an Accept
// header when accept is set) for rateDuration after a warm-up, and
// returns the rate of 200 responses.
func requestRate(b *testing.B, url, accept string) float64 {
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
			req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
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
					errs <- fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
					return
				}
				if counting.Load() {
					count.Add(1)
				}
			}
		}()
	}
	time.Sleep(rateWarmup)
	start := time.Now()
	counting.Store(true)
	time.Sleep(rateDuration)
	counting.Store(false)
	n, took := count.Load(), time.Since(start)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	rate := float64(n) / took.Seconds()
	b.Logf("GET %s: %d requests in %v with %d workers: %.0f req/s", url, n, took.Round(time.Millisecond), rateWorkers, rate)
	return rate
}
