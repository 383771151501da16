package auth

import (
	"slices"
	"strings"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store/oci"
)

// policies is http.accessControl, evaluated as zot does: a repository is
// governed by the longest pattern that matches it; there a user's own
// policies, then its groups', then defaultPolicy (any authenticated
// client) or anonymousPolicy (a client without credentials) may allow the
// action; failing that, adminPolicy may.
type policies struct {
	cfg      *configs.AccessControlConfig
	patterns []string // longest first
	groupsOf map[string][]string
}

func newPolicies(cfg *configs.AccessControlConfig) *policies {
	p := &policies{cfg: cfg, groupsOf: map[string][]string{}}
	for pat := range cfg.Repositories {
		p.patterns = append(p.patterns, pat)
	}
	slices.SortFunc(p.patterns, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	for group, users := range cfg.Groups {
		for _, u := range users {
			p.groupsOf[u] = append(p.groupsOf[u], group)
		}
	}
	return p
}

// allows reports whether user ("" when anonymous) may do action to repo.
func (p *policies) allows(user, repo, action string) bool {
	groups := p.groupsOf[user]
	if user == "" {
		groups = nil
	}
	for _, pat := range p.patterns {
		if !globMatch(pat, repo) {
			continue
		}
		pg := p.cfg.Repositories[pat]
		if user != "" && slices.ContainsFunc(pg.Policies, func(pol configs.Policy) bool { return grants(pol, user, groups, action) }) {
			return true
		}
		if user != "" && slices.Contains(pg.DefaultPolicy, action) {
			return true
		}
		if user == "" && slices.Contains(pg.AnonymousPolicy, action) {
			return true
		}
		break // only the longest match governs
	}
	return user != "" && grants(p.cfg.AdminPolicy, user, groups, action)
}

// anonymousReads reports whether a client without credentials may read
// some repository: then it may ask for the catalog.
func (p *policies) anonymousReads() bool {
	for _, pg := range p.cfg.Repositories {
		if slices.Contains(pg.AnonymousPolicy, configs.ActionRead) {
			return true
		}
	}
	return false
}

// readsMetrics reports whether user may read the metrics: a user
// accessControl.metrics names ("" there lets anonymous clients in, as
// zot's users list does), or one of adminPolicy's.
func (p *policies) readsMetrics(user string) bool {
	if slices.Contains(p.cfg.MetricsUsers, user) {
		return true
	}
	if user == "" {
		return false
	}
	admin := p.cfg.AdminPolicy
	return slices.Contains(admin.Users, user) || slices.ContainsFunc(p.groupsOf[user], func(g string) bool { return slices.Contains(admin.Groups, g) })
}

func grants(pol configs.Policy, user string, groups []string, action string) bool {
	if !slices.Contains(pol.Actions, action) {
		return false
	}
	if slices.Contains(pol.Users, user) {
		return true
	}
	for _, g := range groups {
		if slices.Contains(pol.Groups, g) {
			return true
		}
	}
	return false
}

// globMatch is zot's repository glob (oci.MatchGlob).
func globMatch(pattern, name string) bool { return oci.MatchGlob(pattern, name) }
