package configs

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pier-oci/pier/store/retention"
)

// fileRetention is zot's storage.retention (and each subpath's).
type fileRetention struct {
	DryRun   *bool                  `json:"dryRun"`
	Delay    *duration              `json:"delay"`
	Policies []*fileRetentionPolicy `json:"policies"`
}

type fileRetentionPolicy struct {
	Repositories    []string            `json:"repositories"`
	DeleteReferrers *bool               `json:"deleteReferrers"`
	DeleteUntagged  *bool               `json:"deleteUntagged"`
	KeepTags        []*fileKeepTags     `json:"keepTags"`
	KeepUntagged    *fileRetentionRules `json:"keepUntagged"`
}

type fileRetentionRules struct {
	PulledWithin            *duration `json:"pulledWithin"`
	PushedWithin            *duration `json:"pushedWithin"`
	MostRecentlyPushedCount *int      `json:"mostRecentlyPushedCount"`
	MostRecentlyPulledCount *int      `json:"mostRecentlyPulledCount"`
}

type fileKeepTags struct {
	Patterns []string `json:"patterns"`
	fileRetentionRules
}

// resolveRetention checks and builds one root's retention policies; nil
// when the file has none. key is the root's key path.
func resolveRetention(key string, f *fileRetention) (*retention.Config, error) {
	if f == nil {
		return nil, nil
	}
	key += ".retention"
	cfg := &retention.Config{DryRun: value(f.DryRun, false), Delay: time.Duration(value(f.Delay, 0))}
	for i, fp := range f.Policies {
		pkey := fmt.Sprintf("%s.policies[%d]", key, i)
		if fp == nil {
			return nil, &KeyError{Key: pkey, Message: "expected a policy, got null"}
		}
		p := retention.Policy{
			DeleteReferrers: value(fp.DeleteReferrers, false), // zot's defaults
			DeleteUntagged:  value(fp.DeleteUntagged, true),
		}
		for j, g := range fp.Repositories {
			if err := checkPattern(g); err != nil {
				return nil, &KeyError{Key: fmt.Sprintf("%s.repositories[%d]", pkey, j), Message: err.Error()}
			}
			p.Repositories = append(p.Repositories, g)
		}
		if len(fp.Repositories) == 0 && fp.Repositories != nil {
			return nil, &KeyError{Key: pkey + ".repositories", Message: `an empty list matches no repository; leave the key out (or write ["**"]) for every repository`}
		}
		for j, fk := range fp.KeepTags {
			kkey := fmt.Sprintf("%s.keepTags[%d]", pkey, j)
			if fk == nil {
				return nil, &KeyError{Key: kkey, Message: "expected an object, got null"}
			}
			k := retention.KeepTags{}
			for n, pat := range fk.Patterns {
				re, err := regexp.Compile(pat)
				if err != nil {
					return nil, &KeyError{Key: fmt.Sprintf("%s.patterns[%d]", kkey, n), Message: fmt.Sprintf("%q is not a regular expression: %v", pat, err)}
				}
				k.Patterns = append(k.Patterns, re)
			}
			if fk.Patterns != nil && len(fk.Patterns) == 0 {
				return nil, &KeyError{Key: kkey + ".patterns", Message: "an empty list matches no tag; leave the key out to match every tag"}
			}
			var err error
			if k.Rules, err = resolveRules(kkey, &fk.fileRetentionRules); err != nil {
				return nil, err
			}
			p.KeepTags = append(p.KeepTags, k)
		}
		if fp.KeepUntagged != nil {
			rules, err := resolveRules(pkey+".keepUntagged", fp.KeepUntagged)
			if err != nil {
				return nil, err
			}
			p.KeepUntagged = &rules
		}
		cfg.Policies = append(cfg.Policies, p)
	}
	return cfg, nil
}

func resolveRules(key string, f *fileRetentionRules) (retention.Rules, error) {
	r := retention.Rules{
		PulledWithin:            time.Duration(value(f.PulledWithin, 0)),
		PushedWithin:            time.Duration(value(f.PushedWithin, 0)),
		MostRecentlyPushedCount: value(f.MostRecentlyPushedCount, 0),
		MostRecentlyPulledCount: value(f.MostRecentlyPulledCount, 0),
	}
	for name, n := range map[string]int{"mostRecentlyPushedCount": r.MostRecentlyPushedCount, "mostRecentlyPulledCount": r.MostRecentlyPulledCount} {
		if n < 0 {
			return r, &KeyError{Key: key + "." + name, Message: "must be 0 or more"}
		}
	}
	return r, nil
}

// TimeWindow is a daily window of local time, as zot's gcTimeWindow
// "01:00-05:00"; one whose end is before its start spans midnight
// ("22:00-04:00").
type TimeWindow struct {
	Start, End time.Duration // since midnight
}

// Contains reports whether t (in its own location) falls in the window.
func (w TimeWindow) Contains(t time.Time) bool {
	at := sinceMidnight(t)
	if w.Start < w.End {
		return at >= w.Start && at < w.End
	}
	return at >= w.Start || at < w.End
}

// Next is the start of the window at or after t (t itself when t is in
// it).
func (w TimeWindow) Next(t time.Time) time.Time {
	if w.Contains(t) {
		return t
	}
	y, m, d := t.Date()
	start := time.Date(y, m, d, 0, 0, 0, 0, t.Location()).Add(w.Start)
	if start.Before(t) {
		start = time.Date(y, m, d+1, 0, 0, 0, 0, t.Location()).Add(w.Start)
	}
	return start
}

// String is the window as the file writes it.
func (w TimeWindow) String() string { return clock(w.Start) + "-" + clock(w.End) }

func sinceMidnight(t time.Time) time.Duration {
	h, m, s := t.Clock()
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second + time.Duration(t.Nanosecond())
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// parseTimeWindow reads "HH:MM-HH:MM".
func parseTimeWindow(key, s string) (*TimeWindow, error) {
	fail := &KeyError{Key: key, Message: fmt.Sprintf("%q is not a daily window like \"01:00-05:00\" (local time, 24-hour clock; \"22:00-04:00\" spans midnight)", s)}
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		return nil, fail
	}
	start, ok1 := parseClock(from)
	end, ok2 := parseClock(to)
	if !ok1 || !ok2 {
		return nil, fail
	}
	if start == end {
		return nil, &KeyError{Key: key, Message: fmt.Sprintf("%q is an empty window; leave the key out to collect at any time", s)}
	}
	return &TimeWindow{Start: start, End: end}, nil
}

func parseClock(s string) (time.Duration, bool) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(m) != 2 || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && mm != 0 {
		return 0, false
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, true
}
