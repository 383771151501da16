package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// The large manifests of BenchmarkManifestMemory: ~4 MiB each (the most
// pier accepts), 24,000 layers, as a hostile or careless client sends.
const (
	bigLayers    = 24000
	bigTarget    = 4<<20 - 4096 // bytes a big manifest is padded to
	bigVariants  = 9            // 1 pushed alone, 8 at once
	bigRepo      = "mem/app"
	memLimitUnit = 64 * MiB // GOMEMLIMIT of packaging/pier.service
)

// BenchmarkManifestMemory is the peak resident size of pier handling ~4
// MiB manifests of 24,000 layers: one PUT alone, eight PUTs at once,
// eight GETs at once and eight referrers queries at once (the repository
// then holds nine such manifests, every one a referrer of the same
// subject, so each query reads 36 MiB of manifests). Each phase runs in a
// fresh process on the same root, so its VmHWM is its own. Every figure is
// compared with the packaged unit's GOMEMLIMIT (64 MiB, target <= 1x), and
// its growth over the idle process with the manifest bytes in flight
// (target <= 5x): memory must follow the request, not the shape of the
// JSON. A manifest being pushed or checked is in memory with its digests
// (1.7 times its size for 24,000 layers), Go's collector lets the heap
// grow to twice what is live (GOGC=100) before it collects, and the
// runtime keeps some more: about 4x for one manifest alone, less when
// several wait their turn for the budget. Before pier decoded manifests
// compactly within a budget, one took 7.5x and eight at once 6.4x (212
// MiB).
func BenchmarkManifestMemory(b *testing.B) {
	root := filepath.Join(b.TempDir(), "data")
	manifests, subject, err := writeBigRepo(root)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d manifests of %d layers, %.2f MiB each", len(manifests), bigLayers, float64(len(manifests[0]))/MiB)
	for range b.N {
		// Dedupe off: its start-up walk over the 24,000 layers would
		// measure itself (see the dedupe reconcile benchmarks).
		s := pierproc.Start(b, pierproc.Options{Root: root, Storage: map[string]any{"dedupe": false}})
		phase := func(name string, parallel int, f func(i int) error) {
			b.Helper()
			idle, peak := rssDuring(b, s, parallel, f)
			inFlight := float64(parallel) * float64(len(manifests[0])) / MiB
			record(b, measure{
				name: "peak RSS, " + name, value: peak, unit: "MiB",
				limit: memLimitUnit / MiB, limitName: "GOMEMLIMIT", metric: "x_gomemlimit",
			}, ratioAtMost(1))
			record(b, measure{
				name: fmt.Sprintf("RSS growth, %s (idle %.1f MiB)", name, idle), value: peak - idle, unit: "MiB",
				limit: inFlight, limitName: "manifest bytes in flight", metric: "x_inflight",
			}, ratioAtMost(5))
		}
		put := func(i int) error {
			_, err := putBig(s, fmt.Sprintf("v%d", i), manifests[i])
			return err
		}
		phase("PUT 1 manifest of 4 MiB", 1, func(int) error { return put(0) })
		phase("PUT 8 manifests of 4 MiB at once", 8, func(i int) error { return put(1 + i) })
		phase("GET 8 manifests of 4 MiB at once", 8, func(i int) error {
			return getBig(s, fmt.Sprintf("v%d", 1+i), len(manifests[1+i]))
		})
		phase("referrers (9 manifests of 4 MiB), 8 queries at once", 8, func(int) error {
			return referrersBig(s, subject, bigVariants)
		})
	}
}

// rssDuring restarts s, lets it settle, runs f(0..parallel-1) at once and
// returns the idle RSS before and the peak RSS (VmHWM) after, in MiB.
func rssDuring(b *testing.B, s *pierproc.Server, parallel int, f func(i int) error) (idle, peak float64) {
	b.Helper()
	if s.Cmd.ProcessState == nil {
		s.Stop(b)
	}
	s.Restart(b)
	time.Sleep(time.Second)
	pid := s.Cmd.Process.Pid
	rss, _, err := procStatus(pid)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	for i := range parallel {
		wg.Go(func() { errs <- f(i) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	_, hwm, err := procStatus(pid)
	if err != nil {
		b.Fatal(err)
	}
	s.Stop(b)
	return float64(rss) / 1024, float64(hwm) / 1024
}

// writeBigRepo writes repository bigRepo under root, with a config and
// bigLayers small layers but no manifest, and returns bigVariants
// manifests over them (each a referrer of the returned subject digest).
func writeBigRepo(root string) ([][]byte, digest.Digest, error) {
	dir := filepath.Join(root, bigRepo)
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return nil, "", err
	}
	write := func(data []byte) (ispec.Descriptor, error) {
		d := digest.FromBytes(data)
		return ispec.Descriptor{Digest: d, Size: int64(len(data))}, os.WriteFile(filepath.Join(blobs, d.Encoded()), data, 0o644)
	}
	config, err := write([]byte(`{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	if err != nil {
		return nil, "", err
	}
	config.MediaType = ispec.MediaTypeImageConfig
	layers := make([]ispec.Descriptor, bigLayers)
	for i := range layers {
		if layers[i], err = write(fmt.Appendf(nil, "layer %d", i)); err != nil {
			return nil, "", err
		}
		layers[i].MediaType = ispec.MediaTypeImageLayerGzip
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644); err != nil {
		return nil, "", err
	}
	subject := digest.FromString("the subject of every big manifest")
	// An annotation of the config pads the manifest to just under 4 MiB
	// (one of the manifest's own would be copied into every referrers
	// answer).
	build := func(variant int, pad string) ([]byte, error) {
		m := ispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageManifest,
			ArtifactType: "application/vnd.example.big", Config: config, Layers: make([]ispec.Descriptor, bigLayers),
			Subject:     &ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: subject, Size: 1234},
			Annotations: map[string]string{"variant": fmt.Sprint(variant)},
		}
		m.Config.Annotations = map[string]string{"pad": pad}
		copy(m.Layers, layers)
		return json.Marshal(m)
	}
	probe, err := build(0, "")
	if err != nil {
		return nil, "", err
	}
	if len(probe) > bigTarget {
		return nil, "", fmt.Errorf("a manifest of %d layers is %d bytes, more than %d", bigLayers, len(probe), bigTarget)
	}
	pad := strings.Repeat("x", bigTarget-len(probe))
	out := make([][]byte, bigVariants)
	for i := range out {
		if out[i], err = build(i, pad); err != nil {
			return nil, "", err
		}
	}
	return out, subject, nil
}

func putBig(s *pierproc.Server, tag string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest("PUT", s.URL("/v2/"+bigRepo+"/manifests/"+tag), strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("PUT manifest %s: status %d", tag, resp.StatusCode)
	}
	return resp, nil
}

func getBig(s *pierproc.Server, tag string, size int) error {
	req, err := http.NewRequest("GET", s.URL("/v2/"+bigRepo+"/manifests/"+tag), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", ispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := drain(resp.Body, make([]byte, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != int64(size) {
		return fmt.Errorf("GET manifest %s: status %d, %d bytes", tag, resp.StatusCode, n)
	}
	return nil
}

func referrersBig(s *pierproc.Server, subject digest.Digest, want int) error {
	resp, err := http.Get(s.URL("/v2/" + bigRepo + "/referrers/" + subject.String()))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var idx ispec.Index
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || len(idx.Manifests) != want {
		return fmt.Errorf("referrers: status %d, %d referrers, want %d", resp.StatusCode, len(idx.Manifests), want)
	}
	return nil
}
