package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store"
)

func storeWithBlob(t *testing.T, size int) *store.Store {
	t.Helper()
	st := newStore(t)
	data := make([]byte, size)
	rand.Read(data)
	// An unreferenced blob is not hashed; give the bytes a manifest.
	cfg := []byte("{}")
	for _, b := range [][]byte{data, cfg} {
		if _, err := st.PutBlob(context.Background(), "app", digest.FromBytes(b), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		digest.FromBytes(cfg).String() + `","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` +
		digest.FromBytes(data).String() + `","size":` + strconv.Itoa(size) + `}]}`)
	if _, err := st.PutManifest(context.Background(), "app", "v1", "", m, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

// The throttle holds: 1 MiB at 2 MiB/s takes at least half a second, and
// while clients are served the pace drops by busyDivisor.
func TestThrottle(t *testing.T) {
	st := storeWithBlob(t, 1<<20)
	start := time.Now()
	res, err := ScrubAll(context.Background(), st, ScrubConfig{MaxBytesPerSecond: 2 << 20}, quiet, nil)
	if err != nil || res.Bytes < 1<<20 || res.Failed() {
		t.Fatalf("pass: %+v %v", res, err)
	}
	if el := time.Since(start); el < 450*time.Millisecond {
		t.Fatalf("1 MiB at 2 MiB/s took %v", el)
	}
	start = time.Now()
	ScrubAll(context.Background(), st, ScrubConfig{MaxBytesPerSecond: 16 << 20, Busy: func() bool { return true }}, quiet, nil)
	if el := time.Since(start); el < 450*time.Millisecond {
		t.Fatalf("busy: 1 MiB at 16/8 MiB/s took %v", el)
	}
	start = time.Now()
	ScrubAll(context.Background(), st, ScrubConfig{}, quiet, nil)
	if el := time.Since(start); el > 400*time.Millisecond {
		t.Fatalf("unthrottled pass took %v", el)
	}
}

// Run keeps its result on the disk and schedules from it.
func TestRunKeepsResultAndSchedule(t *testing.T) {
	st := storeWithBlob(t, 1000)
	if _, ok := LoadScrubResult(context.Background(), st); ok {
		t.Fatal("a result before any pass")
	}
	old := ScrubResult{Started: time.Now().Add(-2 * time.Hour), Finished: time.Now().Add(-2 * time.Hour), Complete: true}
	if err := SaveScrubResult(context.Background(), st, old); err != nil {
		t.Fatal(err)
	}
	// Interval 1h, last pass 2h ago: due now.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go RunScrub(ctx, st, ScrubConfig{Interval: time.Hour}, quiet)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if r, ok := LoadScrubResult(context.Background(), st); ok && r.Started.After(old.Started) {
			if r.OK != 1 || !r.Complete {
				t.Fatalf("result = %+v", r)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("an overdue scrub did not run")
}

func TestResultCountsDamage(t *testing.T) {
	st := storeWithBlob(t, 5000)
	// Damage the layer (the only blob over 1000 bytes).
	entries, _ := os.ReadDir(dirOf(st) + "/app/blobs/sha256")
	for _, e := range entries {
		p := dirOf(st) + "/app/blobs/sha256/" + e.Name()
		b, _ := os.ReadFile(p)
		if len(b) > 1000 {
			b[0] ^= 1
			os.WriteFile(p, b, 0o644)
		}
	}
	res, err := ScrubAll(context.Background(), st, ScrubConfig{}, quiet, nil)
	if err != nil || res.Corrupt != 1 || res.Unreferenced != 0 || !res.Failed() || len(res.Affected) != 1 {
		t.Fatalf("result = %+v, %v", res, err)
	}
}
