// Package retention decides which tags and untagged manifests of a
// repository zot's retention policies keep (storage.retention). It is pure:
// given the images of one repository with their push and pull times, it
// returns a verdict for each, with the reason; the store applies them in
// its garbage collection (store/gc.go).
//
// The semantics are zot's, as its documentation states them:
//   - a repository follows the first policy whose repositories globs match
//     it; one no policy matches keeps every tag;
//   - a policy without keepTags (or with an empty list) keeps every tag;
//   - with keepTags, a tag is kept when at least one entry keeps it, and
//     removed otherwise;
//   - an entry keeps the tags its patterns match (regular expressions,
//     unanchored, as zot matches them; no patterns: every tag), and when it
//     has rules (pushedWithin, pulledWithin, mostRecentlyPushedCount,
//     mostRecentlyPulledCount), only those of them that at least one rule
//     keeps;
//   - counts are per repository.
//
// minus zot's bug (zot#3804): zot hands each tag to the first entry whose
// patterns match it and applies only that entry's rules, so an entry
// matching everything with a pushedWithin ahead of
// {"patterns":["env18-.*"],"mostRecentlyPushedCount":1} loses every old
// env18 tag. Here every entry is evaluated on its own, over all the tags
// its patterns match, and a tag is kept if any entry keeps it.
package retention

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/oci"
)

// Config is storage.retention of one root.
type Config struct {
	// DryRun logs what would be removed and removes nothing.
	DryRun bool
	// Delay is how old an untagged manifest or a referrer whose subject is
	// gone must be before it is removed; 0 is the root's gcDelay.
	Delay time.Duration
	// Policies, in order: a repository follows the first that matches.
	Policies []Policy
}

// Policy is one entry of storage.retention.policies.
type Policy struct {
	// Repositories are globs over repository names (zot's doublestar:
	// "infra/*", "tmp/**"); none matches every repository.
	Repositories []string
	// DeleteReferrers removes referrers whose subject is gone (zot's
	// default: false).
	DeleteReferrers bool
	// DeleteUntagged removes untagged manifests once older than the delay
	// (zot's default: true).
	DeleteUntagged bool
	// KeepTags decide which tags stay; nil keeps them all.
	KeepTags []KeepTags
	// KeepUntagged, when set, keeps the untagged manifests its rules
	// keep, even once older than the delay.
	KeepUntagged *Rules
}

// KeepTags is one entry of a policy's keepTags.
type KeepTags struct {
	// Patterns select the tags the entry is about: a tag matching any of
	// them (unanchored, as zot); none selects every tag.
	Patterns []*regexp.Regexp
	Rules
}

// Rules keep, among the images an entry selects, those that meet any of
// them. With none set, the entry keeps every image it selects.
type Rules struct {
	PushedWithin            time.Duration // 0: not set
	PulledWithin            time.Duration // 0: not set
	MostRecentlyPushedCount int           // 0: not set
	MostRecentlyPulledCount int           // 0: not set
}

// none reports whether no rule is set.
func (r Rules) none() bool {
	return r.PushedWithin == 0 && r.PulledWithin == 0 && r.MostRecentlyPushedCount == 0 && r.MostRecentlyPulledCount == 0
}

// Image is a tag, or an untagged manifest, of a repository.
type Image struct {
	Tag    string // "" for an untagged manifest
	Digest digest.Digest
	Pushed time.Time // when the tag was written (or the manifest arrived)
	Pulled time.Time // the last pull of its digest; zero: never, as far as pier knows
}

// Verdict is what a policy decided for one image.
type Verdict struct {
	Image
	Keep   bool
	Reason string
}

// UsesPulls reports whether a rule counts pulls (pulledWithin,
// mostRecentlyPulledCount): only then are pull times worth keeping.
func (c *Config) UsesPulls() bool {
	if c == nil {
		return false
	}
	for _, p := range c.Policies {
		rules := []Rules{}
		for _, k := range p.KeepTags {
			rules = append(rules, k.Rules)
		}
		if p.KeepUntagged != nil {
			rules = append(rules, *p.KeepUntagged)
		}
		for _, r := range rules {
			if r.PulledWithin > 0 || r.MostRecentlyPulledCount > 0 {
				return true
			}
		}
	}
	return false
}

// For returns the policy repo follows, nil when none matches.
func (c *Config) For(repo string) *Policy {
	if c == nil {
		return nil
	}
	for i := range c.Policies {
		p := &c.Policies[i]
		if len(p.Repositories) == 0 || slices.ContainsFunc(p.Repositories, func(g string) bool { return oci.MatchGlob(g, repo) }) {
			return p
		}
	}
	return nil
}

// Tags decides, for the tags of one repository, which the policy keeps.
// The verdicts are in the order of tags.
func (p *Policy) Tags(tags []Image, now time.Time) []Verdict {
	out := make([]Verdict, len(tags))
	for i, t := range tags {
		out[i] = Verdict{Image: t}
	}
	if len(p.KeepTags) == 0 {
		for i := range out {
			out[i].Keep, out[i].Reason = true, "the policy has no keepTags"
		}
		return out
	}
	selected := false
	for n, e := range p.KeepTags {
		var idx []int
		for i, t := range tags {
			if matchesAny(e.Patterns, t.Tag) {
				idx = append(idx, i)
			}
		}
		selected = selected || len(idx) > 0
		where := fmt.Sprintf("keepTags[%d]", n)
		if e.Rules.none() {
			for _, i := range idx {
				keep(&out[i], where+" patterns")
			}
			continue
		}
		e.Rules.apply(tags, idx, now, func(i int, why string) { keep(&out[i], where+" "+why) })
	}
	for i := range out {
		if out[i].Keep {
			continue
		}
		out[i].Reason = "no keepTags entry keeps it"
		if !slices.ContainsFunc(p.KeepTags, func(e KeepTags) bool { return matchesAny(e.Patterns, tags[i].Tag) }) {
			out[i].Reason = "no keepTags pattern matches it"
		}
	}
	return out
}

// Untagged decides, for the untagged manifests of one repository, which
// the policy keeps whatever their age. The others are removed once older
// than the delay.
func (p *Policy) Untagged(images []Image, now time.Time) []Verdict {
	out := make([]Verdict, len(images))
	for i, m := range images {
		out[i] = Verdict{Image: m, Reason: "untagged"}
	}
	switch {
	case !p.DeleteUntagged:
		for i := range out {
			keep(&out[i], "deleteUntagged is false")
		}
	case p.KeepUntagged != nil:
		idx := make([]int, len(images))
		for i := range idx {
			idx[i] = i
		}
		p.KeepUntagged.apply(images, idx, now, func(i int, why string) { keep(&out[i], "keepUntagged "+why) })
	}
	return out
}

// keep marks v kept, by the first reason found.
func keep(v *Verdict, reason string) {
	if !v.Keep {
		v.Keep, v.Reason = true, reason
	}
}

// apply calls kept(i, rule) for each image among images[idx] that one of
// the rules keeps (possibly more than once).
func (r Rules) apply(images []Image, idx []int, now time.Time, kept func(i int, why string)) {
	if r.PushedWithin > 0 {
		since := now.Add(-r.PushedWithin)
		for _, i := range idx {
			if !images[i].Pushed.Before(since) {
				kept(i, "pushedWithin "+r.PushedWithin.String())
			}
		}
	}
	if r.PulledWithin > 0 {
		// As zot: an image pushed within the window counts as pulled in
		// it, so one pushed yesterday and not pulled yet is not removed
		// for want of pulls.
		since := now.Add(-r.PulledWithin)
		for _, i := range idx {
			if !images[i].Pulled.Before(since) || !images[i].Pushed.Before(since) {
				kept(i, "pulledWithin "+r.PulledWithin.String())
			}
		}
	}
	if n := r.MostRecentlyPushedCount; n > 0 {
		for _, i := range top(images, idx, n, byPush) {
			kept(i, fmt.Sprintf("mostRecentlyPushedCount %d", n))
		}
	}
	if n := r.MostRecentlyPulledCount; n > 0 {
		for _, i := range top(images, idx, n, byPull) {
			kept(i, fmt.Sprintf("mostRecentlyPulledCount %d", n))
		}
	}
}

// top returns the n first of idx in the order less gives, on a copy:
// the rules never reorder what another rule then reads.
func top(images []Image, idx []int, n int, order func(a, b Image) int) []int {
	sorted := slices.Clone(idx)
	slices.SortFunc(sorted, func(a, b int) int { return order(images[a], images[b]) })
	return sorted[:min(n, len(sorted))]
}

// byPush orders the most recently pushed first; ties by tag, then digest,
// so that a decision never depends on the order of index.json.
func byPush(a, b Image) int {
	return cmp.Or(b.Pushed.Compare(a.Pushed), cmp.Compare(a.Tag, b.Tag), cmp.Compare(a.Digest, b.Digest))
}

// byPull orders the most recently pulled first; images never pulled come
// after, the most recently pushed of them first (as zot, a count larger
// than the pulled images keeps some never pulled).
func byPull(a, b Image) int {
	return cmp.Or(b.Pulled.Compare(a.Pulled), byPush(a, b))
}

func matchesAny(patterns []*regexp.Regexp, tag string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, re := range patterns {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}
