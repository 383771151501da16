package store

import (
	"errors"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/driver/local"
	"github.com/pier-oci/pier/store/retention"
)

func trackingStore(t *testing.T, root string) *Store {
	t.Helper()
	drv, err := local.Open(root, local.Options{Lock: true, TempDir: StateDir + "/tmp", Reserve: ReserveSize})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Driver: drv, TrackPulls: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Pulls are noted in memory and written once per interval, whatever their
// number; the times survive a restart and drive mostRecentlyPulledCount.
func TestPullTimes(t *testing.T) {
	root := t.TempDir()
	s := trackingStore(t, root)
	old := putManifest(t, s, "app", "old", imageManifest(t, s, "app", "old"))
	putManifest(t, s, "app", "new", imageManifest(t, s, "app", "new"))
	file := s.path(stateKey(pullsState))
	for range 1000 {
		if _, err := s.GetManifest(ctx, "app", "old"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pull times written before the interval: %v", err)
	}
	s.Close() // writes what is pending
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatalf("pull times not written at Close: %v", err)
	}

	s = trackingStore(t, root)
	defer s.Close()
	if got := s.pullTimes(ctx, "app"); len(got) != 1 || time.Since(got[old]) > time.Minute {
		t.Fatalf("pull times after a restart = %v; want old's, just now", got)
	}
	s.savePulls() // nothing pending: nothing written
	if fi2, _ := os.Stat(file); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("a save with nothing pending rewrote the file")
	}
	if s.pulls.timer != nil {
		t.Fatal("a timer is armed with nothing pending")
	}
	s.SetRetention(&retention.Config{Policies: []retention.Policy{{DeleteUntagged: true,
		KeepTags: []retention.KeepTags{{Patterns: []*regexp.Regexp{regexp.MustCompile(`.*`)}, Rules: retention.Rules{MostRecentlyPulledCount: 1}}}}}})
	// Only old was pulled (the last pull written by Close alone): it is
	// the most recently pulled, though new was pushed later.
	if rep, err := s.PreviewRepo(ctx, "app", 0); err != nil || !slices.Equal(rep.Untagged, []string{"new"}) {
		t.Fatalf("preview %+v, %v; want new dropped, old kept (pulled)", rep, err)
	}
	// A manifest no longer listed loses its pull time at collection.
	if err := s.DeleteManifest(ctx, "app", old.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CollectRepo(ctx, "app", time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := s.pullTimes(ctx, "app"); len(got) != 0 {
		t.Fatalf("pull times after old was deleted and collected: %v", got)
	}
}

// A tag's push time is stamped on its entry; pushing the same content
// again under the tag rewrites nothing.
func TestPushTimeStamped(t *testing.T) {
	s := newStore(t, false)
	body := imageManifest(t, s, "app", "a")
	putManifest(t, s, "app", "v1", body)
	idx := readIndexFile(t, s, "app")
	at, err := time.Parse(time.RFC3339Nano, idx.Manifests[0].Annotations[AnnotationPushed])
	if err != nil || time.Since(at) > time.Minute {
		t.Fatalf("push stamp %q: %v", idx.Manifests[0].Annotations[AnnotationPushed], err)
	}
	before, _ := os.Stat(s.indexPath("app"))
	putManifest(t, s, "app", "v1", body)
	if after, _ := os.Stat(s.indexPath("app")); !os.SameFile(before, after) {
		t.Fatal("pushing the same tag again rewrote index.json")
	}
}
