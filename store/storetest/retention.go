package storetest

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/retention"
)

func tagsOf(t *testing.T, st *store.Store, repo string) []string {
	t.Helper()
	tags, err := st.Tags(ctx, repo)
	if err != nil {
		t.Fatalf("tags of %s: %v", repo, err)
	}
	return tags
}

// testRetention: retention policies, applied by garbage collection, on
// zot#3804's configuration (an entry keeping what was pushed lately ahead
// of one entry per prefix keeping its latest tag). A preview and dryRun
// remove nothing; a pass drops the tags no entry keeps and leaves their
// manifests pullable by digest for the retention delay; a repository no
// policy matches, and untagged manifests a policy keeps, are left alone.
func testRetention(t *testing.T, b Backend) {
	st := open(t, b)
	re := regexp.MustCompile
	cfg := &retention.Config{Delay: time.Hour, Policies: []retention.Policy{
		{Repositories: []string{"ci/**"}, DeleteUntagged: true, KeepTags: []retention.KeepTags{
			{Patterns: []*regexp.Regexp{re(`.*`)}, Rules: retention.Rules{PushedWithin: time.Nanosecond}},
			{Patterns: []*regexp.Regexp{re(`env18-.*`)}, Rules: retention.Rules{MostRecentlyPushedCount: 1}},
			{Patterns: []*regexp.Regexp{re(`env19-.*`)}, Rules: retention.Rules{MostRecentlyPushedCount: 1}},
		}},
		{Repositories: []string{"keep/**"}, DeleteUntagged: false},
	}}
	st.SetRetention(cfg)
	digests := map[string]string{}
	for _, tag := range []string{"env18-a", "env19-a", "other", "env18-b", "env19-b"} {
		digests[tag] = putManifest(t, st, "ci/app", tag, image(t, st, "ci/app", tag)).String()
		time.Sleep(2 * time.Millisecond) // distinct push times
	}
	putManifest(t, st, "app", "old", image(t, st, "app", "old"))
	untagged := putManifest(t, st, "keep/x", "v1", image(t, st, "keep/x", "x"))
	if err := st.DeleteManifest(ctx, "keep/x", "v1"); err != nil {
		t.Fatal(err)
	}
	all := []string{"env18-a", "env18-b", "env19-a", "env19-b", "other"}

	rep, err := st.PreviewRepo(ctx, "ci/app", 0)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Sort(rep.Untagged); !slices.Equal(rep.Untagged, []string{"env18-a", "env19-a", "other"}) || !rep.DryRun || len(rep.Verdicts) != 5 {
		t.Fatalf("preview = %+v; want env18-a, env19-a and other dropped, the latest of each prefix kept", rep)
	}
	if got := tagsOf(t, st, "ci/app"); !slices.Equal(got, all) {
		t.Fatalf("a preview removed tags: %v", got)
	}
	dry := *cfg
	dry.DryRun = true
	st.SetRetention(&dry)
	if rep, err := st.CollectRepo(ctx, "ci/app", 0); err != nil || len(rep.Untagged) != 3 || !rep.DryRun {
		t.Fatalf("dryRun pass: %+v, %v", rep, err)
	}
	if got := tagsOf(t, st, "ci/app"); !slices.Equal(got, all) {
		t.Fatalf("dryRun removed tags: %v", got)
	}

	st.SetRetention(cfg)
	if rep, err = st.CollectRepo(ctx, "ci/app", 0); err != nil {
		t.Fatal(err)
	}
	if got := tagsOf(t, st, "ci/app"); !slices.Equal(got, []string{"env18-b", "env19-b"}) {
		t.Fatalf("after retention: tags %v, want env18-b and env19-b", got)
	}
	for _, tag := range []string{"env18-a", "other"} {
		if _, err := st.GetManifest(ctx, "ci/app", digests[tag]); err != nil {
			t.Fatalf("%s's manifest is gone at once; it should stay pullable by digest for the delay: %v", tag, err)
		}
	}
	// Once the delay has passed, the dropped tags' images go.
	short := *cfg
	short.Delay = time.Nanosecond
	st.SetRetention(&short)
	if rep, err = st.CollectRepo(ctx, "ci/app", 0); err != nil || len(rep.Manifests) != 3 || rep.Blobs < 6 {
		t.Fatalf("second pass: %+v, %v; want the 3 untagged images and their blobs", rep, err)
	}
	if _, err := st.GetManifest(ctx, "ci/app", digests["env18-a"]); err == nil {
		t.Fatal("a dropped tag's image survived the delay")
	}
	if _, err := st.GetManifest(ctx, "ci/app", "env19-b"); err != nil {
		t.Fatalf("a kept tag lost its image: %v", err)
	}

	// No policy matches app: every tag stays. keep/** keeps untagged.
	if _, err := st.CollectRepo(ctx, "app", 0); err != nil || !slices.Equal(tagsOf(t, st, "app"), []string{"old"}) {
		t.Fatalf("a repository no policy matches lost tags: %v", err)
	}
	if rep, err := st.CollectRepo(ctx, "keep/x", 0); err != nil || len(rep.Manifests) != 0 {
		t.Fatalf("deleteUntagged false: %+v, %v", rep, err)
	}
	if _, err := st.GetManifest(ctx, "keep/x", untagged.String()); err != nil {
		t.Fatalf("deleteUntagged false, yet the untagged manifest went: %v", err)
	}
}

// testPullTimesAcrossReplicas: a tag pulled only through one replica is
// kept by another's collection under a pulledWithin rule: each replica
// merges the pull times the others kept, and writes its own without
// losing theirs.
func testPullTimesAcrossReplicas(t *testing.T, b Backend) {
	drv := b.New(t)
	a, err := store.New(store.Options{Driver: drv, TrackPulls: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	const within = 3 * time.Second
	putManifest(t, a, "app", "pulled", image(t, a, "app", "pulled"))
	putManifest(t, a, "app", "idle", image(t, a, "app", "idle"))
	// A preview reads the pull times this replica keeps, before the
	// other replica has written any.
	a.SetRetention(&retention.Config{DryRun: true, Policies: []retention.Policy{{
		KeepTags: []retention.KeepTags{{Patterns: []*regexp.Regexp{regexp.MustCompile(`.*`)}, Rules: retention.Rules{PulledWithin: within}}},
	}}})
	if _, err := a.PreviewRepo(ctx, "app", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(within + 500*time.Millisecond) // pulls are watched for longer than the rule looks back

	// A pull served by the other replica, kept when it closes; then one
	// by this replica, so that each has something to write.
	other, err := store.New(store.Options{Driver: b.Share(t, drv), TrackPulls: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.GetManifest(ctx, "app", "pulled"); err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetManifest(ctx, "app", "idle"); err != nil {
		t.Fatal(err)
	}
	a.Close() // writes its pull, merged with the other's
	a, err = store.New(store.Options{Driver: b.Reopen(t, drv), TrackPulls: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	// Every tag is kept if pulled within the window; "idle" was pulled
	// too, through this replica, so a rule that looks at "pulled" alone
	// tells whose pulls were kept.
	a.SetRetention(&retention.Config{Policies: []retention.Policy{{
		KeepTags: []retention.KeepTags{{Patterns: []*regexp.Regexp{regexp.MustCompile(`^pulled$`)}, Rules: retention.Rules{PulledWithin: within}}},
	}}})
	if _, err := a.CollectRepo(ctx, "app", 0); err != nil {
		t.Fatal(err)
	}
	if got := tagsOf(t, a, "app"); !slices.Equal(got, []string{"pulled"}) {
		t.Fatalf("after a collection on one replica: tags %v, want the tag pulled through the other kept", got)
	}
}
