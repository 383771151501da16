package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/driver"
)

// hooked runs a hook once before the next write (ReplaceFile) or delete
// of a key: another replica acting at that very moment.
type hooked struct {
	driver.Driver
	mu     sync.Mutex
	before map[string]func()
}

func (h *hooked) run(key string) {
	h.mu.Lock()
	f := h.before[key]
	delete(h.before, key)
	h.mu.Unlock()
	if f != nil {
		f()
	}
}

func (h *hooked) on(key string, f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.before == nil {
		h.before = map[string]func(){}
	}
	h.before[key] = f
}

func (h *hooked) ReplaceFile(ctx context.Context, key string, data []byte, version string) (driver.Info, error) {
	h.run("replace " + key)
	return h.Driver.ReplaceFile(ctx, key, data, version)
}

func (h *hooked) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		h.run("delete " + k)
	}
	return h.Driver.Delete(ctx, keys...)
}

// testGCRacesPushOnReplica: a blob older than gcDelay that nothing
// references yet; a client finds it there (HEAD) and pushes a manifest
// naming it on one replica while the other collects the repository. At
// every moment the two can meet, the push either succeeds and the image
// pulls whole, or fails with MANIFEST_BLOB_UNKNOWN, and a push of the
// blob and manifest again then succeeds.
func testGCRacesPushOnReplica(t *testing.T, b Backend) {
	type race struct {
		name string
		// at is the key whose write (by the collector) or delete the push
		// runs before, and by whom.
		at        func(layer string) string
		collector bool
		shared    bool // the raced manifest's blobs are the kept image's: only the manifest is collected
	}
	races := []race{
		{"only the manifest collected between the push's write and its swap", func(string) string { return "replace app/index.json" }, false, true},
		{"push before the collector marks the index", func(string) string { return "replace app/index.json" }, true, false},
		{"push after the mark, before the delete", func(l string) string { return "delete " + l }, true, false},
		{"collection between the push's check and its write", func(string) string { return "replace app/index.json" }, false, false},
	}
	for _, r := range races {
		t.Run(r.name, func(t *testing.T) {
			drv := b.New(t)
			ha, hb := &hooked{Driver: drv}, &hooked{Driver: b.Share(t, drv)}
			a, c := New(t, ha, false), New(t, hb, false) // a collects, c is pushed to
			kept := image(t, c, "app", "kept")
			putManifest(t, c, "app", "keep", kept) // the repository stays
			body := image(t, c, "app", "raced")
			var m ispec.Manifest
			if r.shared {
				json.Unmarshal(kept, &m)
				m.Annotations = map[string]string{"raced": "yes"}
				body = mustJSON(t, m)
			}
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			layerKey := "app/blobs/sha256/" + m.Layers[0].Digest.Encoded()
			put := func() error { _, err := c.PutManifest(ctx, "app", "v1", "", body, nil); return err }

			var pushErr error
			pushed := false
			if r.collector {
				ha.on(r.at(layerKey), func() { pushErr, pushed = put(), true })
				if _, err := a.CollectRepo(ctx, "app", 0); err != nil {
					t.Fatal(err)
				}
			} else {
				hb.on(r.at(layerKey), func() {
					if _, err := a.CollectRepo(ctx, "app", 0); err != nil {
						t.Error(err)
					}
				})
				pushErr, pushed = put(), true
			}
			if !pushed {
				t.Fatal("the race did not happen: the hook never ran")
			}
			if pushErr != nil && !errors.Is(pushErr, store.ErrManifestBlobUnknown) {
				t.Fatalf("the raced push: %v, want success or MANIFEST_BLOB_UNKNOWN", pushErr)
			}
			if pushErr != nil { // the client sends everything again
				if !r.shared {
					body = image(t, c, "app", "raced")
				}
				if err := put(); err != nil {
					t.Fatalf("the push sent again: %v", err)
				}
			}
			for _, st := range []*store.Store{a, c} {
				if _, err := st.GetManifest(ctx, "app", "v1"); err != nil {
					t.Fatalf("the acknowledged image cannot be pulled: %v", err)
				}
				for _, l := range append(m.Layers, m.Config) {
					if _, err := st.StatBlob(ctx, "app", l.Digest); err != nil {
						t.Fatalf("a blob of the acknowledged image is gone: %v", err)
					}
				}
			}
		})
	}
}

// testSoleReplica: a store whose dedupe index is its own holds the
// storage alone: a second one on the same storage is refused while the
// first serves, and starts once the first is gone.
func testSoleReplica(t *testing.T, b Backend) {
	drv := b.New(t)
	first, err := store.New(store.Options{Driver: drv, SoleReplica: "host-a:/var/lib/pier/cache.db"})
	if err != nil {
		t.Fatal(err)
	}
	push(t, first, "app", "x", []byte("the first writes"))
	second, err := store.New(store.Options{Driver: b.Share(t, drv), SoleReplica: "host-b:/var/lib/pier/cache.db"})
	if !errors.Is(err, store.ErrLeased) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("a second store with its own index on the same storage: %v, want ErrLeased", err)
	}
	// The first, restarted after a crash (it never gave the lease up),
	// takes its own lease back.
	again, err := store.New(store.Options{Driver: b.Share(t, drv), SoleReplica: "host-a:/var/lib/pier/cache.db"})
	if err != nil {
		t.Fatalf("the same pier restarted: %v", err)
	}
	again.Close()
	first.Close()
	second, err = store.New(store.Options{Driver: b.Share(t, drv), SoleReplica: "host-b:/var/lib/pier/cache.db"})
	if err != nil {
		t.Fatalf("once the first closed: %v", err)
	}
	defer second.Close()
	push(t, second, "app", "x", []byte("the second writes"))
}
