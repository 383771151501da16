package store

import (
	"encoding/json"
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

	// As if pier had watched pulls for a day.
	var f pullFile
	data, _ := os.ReadFile(file)
	if err := json.Unmarshal(data, &f); err != nil || time.Since(time.Unix(f.Since, 0)) > time.Minute {
		t.Fatalf("pulls.json: %s, %v; want since: about now", data, err)
	}
	f.Since -= 86400
	data, _ = json.Marshal(f)
	os.WriteFile(file, data, 0o644)
	fi, _ = os.Stat(file)

	s = trackingStore(t, root)
	defer s.Close()
	if got, _ := s.pullTimes(ctx, "app"); len(got) != 1 || time.Since(got[old]) > time.Minute {
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
	if got, _ := s.pullTimes(ctx, "app"); len(got) != 0 {
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

// Pulls pier did not watch remove nothing: with pull times just turned on,
// or their file damaged, a tag pulledWithin would drop is kept.
func TestUnwatchedPullsKeepTags(t *testing.T) {
	root := t.TempDir()
	s := trackingStore(t, root)
	putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "v1"))
	// Pushed 30 days ago, as far as retention can tell.
	s.updateIndex(ctx, "app", func(x *repoIndex, _ []byte) (bool, error) {
		x.Manifests[0].Annotations[AnnotationPushed] = time.Now().Add(-30 * 24 * time.Hour).Format(time.RFC3339Nano)
		return true, nil
	})
	s.SetRetention(&retention.Config{Policies: []retention.Policy{{DeleteUntagged: true,
		KeepTags: []retention.KeepTags{{Rules: retention.Rules{PulledWithin: 7 * 24 * time.Hour}}}}}})
	if rep, err := s.PreviewRepo(ctx, "app", 0); err != nil || len(rep.Untagged) != 0 {
		t.Fatalf("just turned on: %+v, %v; want v1 kept", rep, err)
	}
	s.Close()
	os.WriteFile(s.path(stateKey(pullsState)), []byte(`{"since": 1, "repos": {"app": `), 0o644) // torn
	s = trackingStore(t, root)
	defer s.Close()
	s.SetRetention(&retention.Config{Policies: []retention.Policy{{DeleteUntagged: true,
		KeepTags: []retention.KeepTags{{Rules: retention.Rules{PulledWithin: 7 * 24 * time.Hour}}}}}})
	if rep, err := s.PreviewRepo(ctx, "app", 0); err != nil || len(rep.Untagged) != 0 {
		t.Fatalf("damaged pull times: %+v, %v; want v1 kept", rep, err)
	}
	// Watched for longer than the window, and not pulled: it goes.
	s.pulls.kept.Since = time.Now().Add(-8 * 24 * time.Hour).Unix()
	if rep, err := s.PreviewRepo(ctx, "app", 0); err != nil || len(rep.Untagged) != 1 {
		t.Fatalf("watched 8 days, never pulled: %+v, %v; want v1 dropped", rep, err)
	}
}
