package store

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// bigManifest is an image manifest of n layers, each with annotations
// pier has no use for.
func bigManifest(t *testing.T, n int) []byte {
	t.Helper()
	m := ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest,
		Config: ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 6},
		Layers: make([]ispec.Descriptor, n)}
	for i := range m.Layers {
		m.Layers[i] = ispec.Descriptor{MediaType: ispec.MediaTypeImageLayerGzip, Digest: digest.FromString(fmt.Sprint(i)), Size: int64(i),
			Annotations: map[string]string{"n": fmt.Sprintf("%05d", i)}}
	}
	return mustJSON(t, m)
}

// allocated is how many bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A 4 MiB manifest of 20,000 layers is decoded into what pier acts on
// (media types, digests, sizes), allocated once: less than the body
// itself, where the image spec's generic structures took about ten times
// its size on every PUT, GET and referrers query.
func TestALargeManifestDecodesIntoLessThanItsSize(t *testing.T) {
	const n = 20000
	body := bigManifest(t, n)
	var m *manifestDoc
	var err error
	got := allocated(func() { m, err = parseManifest(body, "") })
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != n || cap(m.Layers) != n || m.Layers[n-1].Digest != digest.FromString(fmt.Sprint(n-1)) {
		t.Fatalf("decoded %d layers (capacity %d)", len(m.Layers), cap(m.Layers))
	}
	if got > uint64(len(body)) {
		t.Fatalf("decoding a manifest of %d bytes allocated %d bytes, more than the manifest", len(body), got)
	}
	got = allocated(func() { _, err = decodeHead(body) })
	if err != nil || got > 64<<10 {
		t.Fatalf("decoding what a referrers answer needs allocated %d bytes (%v), want nearly nothing", got, err)
	}
	t.Logf("%d bytes of manifest: %d bytes decoded", len(body), allocated(func() { parseManifest(body, "") }))
}

// countElements must count exactly what the decoder will find, whatever
// the strings and nesting inside the elements hold.
func TestCountElements(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`[]`, 0}, {` [ ] `, 0}, {`null`, 0}, {`[1]`, 1}, {`[{},{}]`, 2},
		{`[{"a":"x,y"},{"b":"\"],["}, {"c":[1,2,{"d":[]}]}]`, 3},
		{`["\\", "\\\""]`, 2},
	} {
		if got := countElements([]byte(tc.in)); got != tc.want {
			t.Errorf("countElements(%s) = %d, want %d", tc.in, got, tc.want)
		}
		var generic []json.RawMessage
		if json.Unmarshal([]byte(tc.in), &generic) == nil && len(generic) != tc.want {
			t.Errorf("the test case %s has %d elements, not %d", tc.in, len(generic), tc.want)
		}
	}
}

// Reading manifests holds their bytes against the store's budget, so
// however many requests read large manifests at once, only a few are in
// memory.
func TestManifestReadsStayWithinTheBudget(t *testing.T) {
	s := newStore(t, false)
	cfg := pushBlob(t, s, "app", ispec.MediaTypeImageConfig, []byte("{}"))
	layer := pushBlob(t, s, "app", ispec.MediaTypeImageLayerGzip, []byte("layer"))
	m := ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfg}
	for range 5000 {
		m.Layers = append(m.Layers, layer)
	}
	body := mustJSON(t, m)
	putManifest(t, s, "app", "v1", body)
	limit := s.manifests.Limit()
	var peak int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // sample what the budget holds while the reads run
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			peak = max(peak, s.manifests.InUse())
			mu.Unlock()
		}
	}()
	for range 16 {
		wg.Go(func() {
			if _, err := s.GetManifest(ctx, "app", "v1"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	mu.Lock()
	defer mu.Unlock()
	if peak == 0 || peak > limit {
		t.Fatalf("the budget held %d bytes at most (limit %d): reads are not counted against it", peak, limit)
	}
}
