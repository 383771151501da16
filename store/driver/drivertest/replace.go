package drivertest

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pier-oci/pier/store/driver"
)

// ReplaceFile is a compare-and-swap: version "" creates only, a version
// replaces only that version, and a refused replace changes nothing.
func testReplaceFile(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	key := "r/index.json"

	first, err := d.ReplaceFile(ctx, key, []byte("one"), "")
	if err != nil {
		t.Fatalf("ReplaceFile with version \"\" of a missing key: %v", err)
	}
	wantContent(t, d, key, []byte("one"))

	_, err = d.ReplaceFile(ctx, key, []byte("two"), "")
	wantErr(t, "ReplaceFile with version \"\" of an existing key", err, driver.ErrConflict)
	wantContent(t, d, key, []byte("one"))

	second, err := d.ReplaceFile(ctx, key, []byte("second"), first.Version)
	if err != nil {
		t.Fatalf("ReplaceFile with the current version: %v", err)
	}
	if second.Version == first.Version || second.Version == "" {
		t.Fatalf("ReplaceFile: Version %q after %q, want a new one", second.Version, first.Version)
	}
	if st, err := d.Stat(ctx, key); err != nil || st.Version != second.Version {
		t.Fatalf("Stat after ReplaceFile: Version %q, %v; want %q", st.Version, err, second.Version)
	}
	wantContent(t, d, key, []byte("second"))

	_, err = d.ReplaceFile(ctx, key, []byte("stale"), first.Version)
	wantErr(t, "ReplaceFile with a stale version", err, driver.ErrConflict)
	wantContent(t, d, key, []byte("second"))

	// A WriteFile by someone else makes the version stale too.
	mustWrite(t, d, key, []byte("by another writer"))
	_, err = d.ReplaceFile(ctx, key, []byte("lost update"), second.Version)
	wantErr(t, "ReplaceFile after another WriteFile", err, driver.ErrConflict)
	wantContent(t, d, key, []byte("by another writer"))

	_, err = d.ReplaceFile(ctx, "r/missing.json", []byte("x"), second.Version)
	wantErr(t, "ReplaceFile with a version of a missing key", err, driver.ErrConflict)
	wantGone(t, d, "r/missing.json")
}

// Of several writers replacing the same version at once, through drivers
// of their own (replicas), exactly one wins.
func testReplaceFileRace(t *testing.T, storage Storage) {
	d, reopen := fresh(t, storage)
	ctx := ctxOf(t)
	const writers = 6
	for round := range 3 {
		var base string
		if round > 0 {
			fi := mustWrite(t, d, "r/index.json", []byte("base "+strconv.Itoa(round)))
			base = fi.Version
		}
		drivers := make([]driver.Driver, writers)
		for i := range drivers {
			drivers[i] = reopen()
		}
		var wins, conflicts atomic.Int32
		var winner atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := drivers[i].ReplaceFile(ctx, "r/index.json", []byte("writer "+strconv.Itoa(i)), base)
				switch {
				case err == nil:
					wins.Add(1)
					winner.Store(int32(i))
				case errors.Is(err, driver.ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("ReplaceFile: %v, want nil or ErrConflict", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != writers-1 {
			t.Fatalf("round %d (version %q): %d writers won, %d had a conflict; want 1 and %d", round, base, wins.Load(), conflicts.Load(), writers-1)
		}
		wantContent(t, d, "r/index.json", []byte("writer "+strconv.Itoa(int(winner.Load()))))
	}
}

// Read, change, replace, and retry on conflict: no update is lost.
func testReplaceFileCounter(t *testing.T, storage Storage) {
	d, reopen := fresh(t, storage)
	ctx := ctxOf(t)
	const workers, each = 4, 8
	if _, err := d.ReplaceFile(ctx, "counter", []byte("0"), ""); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range workers {
		dw := reopen()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				data, fi, err := dw.ReadFile(ctx, "counter", 100)
				if err != nil {
					t.Errorf("ReadFile: %v", err)
					return
				}
				n, _ := strconv.Atoi(string(data))
				_, err = dw.ReplaceFile(ctx, "counter", []byte(strconv.Itoa(n+1)), fi.Version)
				switch {
				case err == nil:
					done++
				case !errors.Is(err, driver.ErrConflict):
					t.Errorf("ReplaceFile: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	wantContent(t, d, "counter", []byte(strconv.Itoa(workers*each)))
}
