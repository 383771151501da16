package store

import (
	"context"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/local"
)

// sweeper is a local driver that records the sweeps of unfinished writes
// asked of it (a local disk leaves none; s3's Sweep has its own tests).
type sweeper struct {
	*local.Driver
	dirs    []string
	befores []time.Time
	busy    func(string) bool
}

func (s *sweeper) Sweep(_ context.Context, dir string, before time.Time, busy func(string) bool) (int, error) {
	s.dirs, s.befores, s.busy = append(s.dirs, dir), append(s.befores, before), busy
	return 1, nil
}

var _ driver.Sweeper = (*sweeper)(nil)

// A collection of a repository sweeps the unfinished writes below its
// blobs, older than the greater of gcDelay and an hour, sparing the keys
// a push of this process is writing; what it sweeps counts as uploads.
func TestCollectionSweepsUnfinishedWrites(t *testing.T) {
	drv, err := local.Open(t.TempDir(), local.Options{TempDir: StateDir + "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	sw := &sweeper{Driver: drv}
	s, err := New(Options{Driver: sw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "one"))
	live := "app/blobs/sha256/being-written"
	done := s.placing.add(live)
	defer done()

	rep, err := s.CollectRepo(context.Background(), "app", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(sw.dirs) != 1 || sw.dirs[0] != "app/blobs" {
		t.Fatalf("sweeps asked: %v, want one of app/blobs", sw.dirs)
	}
	if age := time.Since(sw.befores[0]); age < unfinishedWriteAge || age > unfinishedWriteAge+time.Minute {
		t.Fatalf("the sweep's cut-off is %v ago, want %v", age, unfinishedWriteAge)
	}
	if !sw.busy(live) || sw.busy("app/blobs/sha256/other") {
		t.Fatal("the sweep is not told which keys this process is writing")
	}
	if rep.Uploads < 1 {
		t.Fatalf("the report counts %d uploads, want the swept write", rep.Uploads)
	}

	sw.dirs = nil
	if _, err := s.CollectRepo(context.Background(), "app", 2*unfinishedWriteAge); err != nil {
		t.Fatal(err)
	}
	if age := time.Since(sw.befores[len(sw.befores)-1]); age < 2*unfinishedWriteAge {
		t.Fatalf("with a gcDelay of %v the cut-off is %v ago", 2*unfinishedWriteAge, age)
	}
}
