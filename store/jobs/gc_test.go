package jobs

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/driver/local"
)

var quiet = slog.New(slog.DiscardHandler)

// orphans pushes n unreferenced blobs into repo.
func orphans(t *testing.T, st *store.Store, repo string, n int) []digest.Digest {
	t.Helper()
	var out []digest.Digest
	for i := range n {
		data := []byte(repo + string(rune('a'+i)))
		d := digest.FromBytes(data)
		if _, err := st.PutBlob(context.Background(), repo, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func count(st *store.Store, repo string, ds []digest.Digest) int {
	n := 0
	for _, d := range ds {
		if _, err := st.StatBlob(context.Background(), repo, d); err == nil {
			n++
		}
	}
	return n
}

func newStore(t *testing.T) *store.Store {
	t.Helper()
	drv, err := local.Open(t.TempDir(), local.Options{Lock: true, TempDir: store.StateDir + "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(store.Options{Driver: drv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestPassVisitsEveryRepository(t *testing.T) {
	st := newStore(t)
	a := orphans(t, st, "a", 3)
	b := orphans(t, st, "b/c", 2)
	var seen []string
	tot, err := CollectAll(context.Background(), st, 0, quiet, func(r store.CollectReport) { seen = append(seen, r.Repo) })
	if err != nil {
		t.Fatal(err)
	}
	if tot.Repos != 2 || tot.Blobs != 5 || tot.ReposRemoved != 2 || count(st, "a", a)+count(st, "b/c", b) != 0 {
		t.Fatalf("totals %+v, seen %v", tot, seen)
	}
}

// The schedule table of zot's docs.
func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sched    GCSchedule
		runFor   time.Duration
		wantGone bool
	}{
		{"gc off", GCSchedule{Enabled: false, Interval: 10 * time.Millisecond}, 200 * time.Millisecond, false},
		{"periodic", GCSchedule{Enabled: true, Interval: 50 * time.Millisecond}, 300 * time.Millisecond, true},
		{"once after gcDelay", GCSchedule{Enabled: true, Once: true, Delay: 50 * time.Millisecond}, 300 * time.Millisecond, true},
		{"not before the interval", GCSchedule{Enabled: true, Interval: time.Hour}, 200 * time.Millisecond, false},
		{"inside the window", GCSchedule{Enabled: true, Interval: 50 * time.Millisecond, Window: window{in: true}}, 300 * time.Millisecond, true},
		{"outside the window: waits for it", GCSchedule{Enabled: true, Interval: 50 * time.Millisecond, Window: window{in: false}}, 300 * time.Millisecond, false},
		{"outside the window, the disk low: now", GCSchedule{Enabled: true, Interval: time.Hour, Window: window{in: false}, Kick: kicked()}, 300 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			ds := orphans(t, st, "app", 2)
			ctx, cancel := context.WithTimeout(context.Background(), tc.runFor)
			defer cancel()
			done := make(chan struct{})
			go func() { RunGC(ctx, st, tc.sched, quiet); close(done) }()
			<-ctx.Done()
			<-done
			if gone := count(st, "app", ds) == 0; gone != tc.wantGone {
				t.Fatalf("blobs collected = %v, want %v", gone, tc.wantGone)
			}
		})
	}
}

// Once means once: blobs orphaned after the single pass stay.
func TestOnceRunsOnce(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { RunGC(ctx, st, GCSchedule{Enabled: true, Once: true}, quiet); close(done) }()
	<-done // Run returns after its one pass
	late := orphans(t, st, "app", 1)
	time.Sleep(50 * time.Millisecond)
	if count(st, "app", late) != 1 {
		t.Fatal("a second pass ran")
	}
}

// dirOf is the directory of a store opened by newStore.
func dirOf(st *store.Store) string { return st.Driver().(*local.Driver).Dir() }

// window is a time window that is open, or closed for an hour.
type window struct{ in bool }

func (w window) Contains(time.Time) bool { return w.in }
func (w window) Next(t time.Time) time.Time {
	if w.in {
		return t
	}
	return t.Add(time.Hour)
}

func kicked() <-chan struct{} {
	c := make(chan struct{}, 1)
	c <- struct{}{}
	return c
}

// A window closing mid-pass stops the pass between repositories.
func TestWindowClosesMidPass(t *testing.T) {
	st := newStore(t)
	a, b := orphans(t, st, "a", 1), orphans(t, st, "b", 1)
	visits := 0
	open := func() bool { visits++; return visits == 1 } // open for the first repository only
	tot, err := collectAll(context.Background(), st.Repositories, func(repo string) (store.CollectReport, error) {
		return st.CollectRepo(context.Background(), repo, 0)
	}, quiet, nil, open)
	if err != nil || tot.Repos != 1 || count(st, "a", a) != 0 || count(st, "b", b) != 1 {
		t.Fatalf("pass %+v, %v: want a collected and b left for the next window", tot, err)
	}
}
