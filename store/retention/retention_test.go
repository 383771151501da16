package retention

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// img is a tag pushed pushedAgo and pulled pulledAgo (0: never) ago.
func img(tag string, pushedAgo, pulledAgo time.Duration) Image {
	im := Image{Tag: tag, Digest: digest.FromString(tag), Pushed: now.Add(-pushedAgo)}
	if pulledAgo > 0 {
		im.Pulled = now.Add(-pulledAgo)
	}
	return im
}

func patterns(p ...string) []*regexp.Regexp {
	var out []*regexp.Regexp
	for _, s := range p {
		out = append(out, regexp.MustCompile(s))
	}
	return out
}

func kept(vs []Verdict) []string {
	var out []string
	for _, v := range vs {
		if v.Keep {
			out = append(out, v.Tag)
		}
	}
	slices.Sort(out)
	return out
}

// The tags of one repository: pushed 1 to 40 days ago, some pulled.
var tags = []Image{
	img("v1.0", 40*day, 0),
	img("v1.1", 30*day, 2*day),
	img("v2.0", 20*day, 15*day),
	img("v2.1", 10*day, 9*day),
	img("latest", 1*day, time.Hour),
	img("dev-1", 5*day, 0),
	img("dev-2", 3*day, 0),
}

func TestRules(t *testing.T) {
	cases := []struct {
		name string
		keep []KeepTags
		want []string
	}{
		{"no keepTags keeps all", nil, []string{"dev-1", "dev-2", "latest", "v1.0", "v1.1", "v2.0", "v2.1"}},
		{"patterns alone", []KeepTags{{Patterns: patterns(`^v2\.`)}}, []string{"v2.0", "v2.1"}},
		{"patterns are unanchored, as zot", []KeepTags{{Patterns: patterns(`dev`)}}, []string{"dev-1", "dev-2"}},
		{"no patterns selects every tag", []KeepTags{{Rules: Rules{PushedWithin: 4 * day}}}, []string{"dev-2", "latest"}},
		{"pushedWithin", []KeepTags{{Patterns: patterns(`.*`), Rules: Rules{PushedWithin: 15 * day}}}, []string{"dev-1", "dev-2", "latest", "v2.1"}},
		{"pulledWithin (a push in the window counts)", []KeepTags{{Rules: Rules{PulledWithin: 4 * day}}}, []string{"dev-2", "latest", "v1.1"}},
		{"mostRecentlyPushedCount", []KeepTags{{Rules: Rules{MostRecentlyPushedCount: 2}}}, []string{"dev-2", "latest"}},
		{"mostRecentlyPulledCount", []KeepTags{{Rules: Rules{MostRecentlyPulledCount: 2}}}, []string{"latest", "v1.1"}},
		{"mostRecentlyPulledCount past the pulled ones takes the newest pushed", []KeepTags{{Rules: Rules{MostRecentlyPulledCount: 5}}},
			[]string{"dev-2", "latest", "v1.1", "v2.0", "v2.1"}},
		{"count larger than the tags", []KeepTags{{Patterns: patterns(`^v`), Rules: Rules{MostRecentlyPushedCount: 100}}}, []string{"v1.0", "v1.1", "v2.0", "v2.1"}},
		{"rules of one entry: OR, within its patterns", []KeepTags{{Patterns: patterns(`^v`), Rules: Rules{PushedWithin: 15 * day, MostRecentlyPulledCount: 1}}},
			[]string{"v1.1", "v2.1"}},
		{"entries: OR", []KeepTags{{Patterns: patterns(`^latest$`)}, {Patterns: patterns(`^dev-`), Rules: Rules{MostRecentlyPushedCount: 1}}},
			[]string{"dev-2", "latest"}},
		{"a count counts within its own entry's patterns", []KeepTags{{Patterns: patterns(`^v1`), Rules: Rules{MostRecentlyPushedCount: 1}}, {Patterns: patterns(`^v2`), Rules: Rules{MostRecentlyPushedCount: 1}}},
			[]string{"v1.1", "v2.1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &Policy{DeleteUntagged: true, KeepTags: tc.keep}
			if got := kept(p.Tags(tags, now)); !slices.Equal(got, tc.want) {
				t.Fatalf("kept %v, want %v", got, tc.want)
			}
		})
	}
}

// zot#3804: one keepTags entry per environment prefix, each keeping the
// latest tag of its prefix, behind an entry that keeps what was pushed in
// the last 30 days. Every tag is 32 days old. zot handed each tag to the
// first entry whose patterns match (the 30-day one) and removed them all;
// here the latest tag of each prefix stays, in every repository.
func TestZot3804(t *testing.T) {
	p := &Policy{DeleteUntagged: true, KeepTags: []KeepTags{
		{Patterns: patterns(`.*`), Rules: Rules{PushedWithin: 720 * time.Hour}},
		{Patterns: patterns(`env18-.*`), Rules: Rules{MostRecentlyPushedCount: 1}},
		{Patterns: patterns(`env19-.*`), Rules: Rules{MostRecentlyPushedCount: 1}},
	}}
	// A repository holding exactly one tag of each prefix.
	one := []Image{img("env18-abc", 32*day, 0), img("env19-def", 32*day, 0)}
	if got := kept(p.Tags(one, now)); !slices.Equal(got, []string{"env18-abc", "env19-def"}) {
		t.Fatalf("kept %v, want both: each is the latest of its prefix", got)
	}
	// Several of each: the latest of each prefix stays, the rest goes.
	many := []Image{
		img("env18-a", 40*day, 0), img("env18-b", 33*day, 0), img("env18-c", 32*day, 0),
		img("env19-a", 35*day, 0), img("env19-b", 34*day, 0),
		img("other", 50*day, 0), img("fresh", 2*day, 0),
	}
	vs := p.Tags(many, now)
	if got := kept(vs); !slices.Equal(got, []string{"env18-c", "env19-b", "fresh"}) {
		t.Fatalf("kept %v, want env18-c, env19-b, fresh", got)
	}
	for _, v := range vs {
		if v.Reason == "" {
			t.Errorf("%s: no reason given", v.Tag)
		}
	}
	// The same entries in the other order decide the same.
	slices.Reverse(p.KeepTags)
	if got := kept(p.Tags(many, now)); !slices.Equal(got, []string{"env18-c", "env19-b", "fresh"}) {
		t.Fatalf("reordered entries: kept %v", got)
	}
}

func TestReasons(t *testing.T) {
	p := &Policy{KeepTags: []KeepTags{{Patterns: patterns(`^v`), Rules: Rules{MostRecentlyPushedCount: 1}}}}
	vs := p.Tags([]Image{img("v1", 2*day, 0), img("v2", day, 0), img("x", day, 0)}, now)
	want := map[string]string{"v2": "keepTags[0] mostRecentlyPushedCount 1", "v1": "no keepTags entry keeps it", "x": "no keepTags pattern matches it"}
	for _, v := range vs {
		if v.Reason != want[v.Tag] {
			t.Errorf("%s: reason %q, want %q", v.Tag, v.Reason, want[v.Tag])
		}
	}
}

// Ties in push time are broken by name, not by the order of index.json.
func TestCountIsDeterministic(t *testing.T) {
	p := &Policy{KeepTags: []KeepTags{{Rules: Rules{MostRecentlyPushedCount: 1}}}}
	a, b := img("a", day, 0), img("b", day, 0)
	if x, y := kept(p.Tags([]Image{a, b}, now)), kept(p.Tags([]Image{b, a}, now)); !slices.Equal(x, y) || len(x) != 1 {
		t.Fatalf("kept %v and %v for the same tags in two orders", x, y)
	}
}

func TestUntagged(t *testing.T) {
	ims := []Image{
		{Digest: digest.FromString("a"), Pushed: now.Add(-10 * day), Pulled: now.Add(-time.Hour)},
		{Digest: digest.FromString("b"), Pushed: now.Add(-10 * day)},
		{Digest: digest.FromString("c"), Pushed: now.Add(-time.Hour)},
	}
	count := func(vs []Verdict) (n int) {
		for _, v := range vs {
			if v.Keep {
				n++
			}
		}
		return n
	}
	if n := count((&Policy{DeleteUntagged: true}).Untagged(ims, now)); n != 0 {
		t.Fatalf("deleteUntagged without keepUntagged kept %d", n)
	}
	if n := count((&Policy{DeleteUntagged: false}).Untagged(ims, now)); n != 3 {
		t.Fatalf("deleteUntagged false kept %d, want all 3", n)
	}
	vs := (&Policy{DeleteUntagged: true, KeepUntagged: &Rules{PulledWithin: day}}).Untagged(ims, now)
	if !vs[0].Keep || vs[1].Keep || !vs[2].Keep {
		t.Fatalf("keepUntagged pulledWithin 24h: %+v", vs)
	}
}

func TestFor(t *testing.T) {
	c := &Config{Policies: []Policy{
		{Repositories: []string{"infra/*"}, DeleteReferrers: true},
		{Repositories: []string{"tmp/**"}},
		{},
	}}
	if p := c.For("infra/db"); p != &c.Policies[0] {
		t.Fatal("infra/db does not follow the first policy")
	}
	if p := c.For("infra/db/x"); p != &c.Policies[2] {
		t.Fatal("infra/db/x: * is one component; the catch-all should govern")
	}
	if p := c.For("tmp"); p != &c.Policies[1] {
		t.Fatal("tmp/** should match tmp")
	}
	c.Policies = c.Policies[:2]
	if p := c.For("app"); p != nil {
		t.Fatal("a repository no policy matches has a policy")
	}
	if (*Config)(nil).For("app") != nil {
		t.Fatal("no retention config, yet a policy")
	}
}
