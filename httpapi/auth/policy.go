package auth

import (
	"path"
	"slices"
	"strings"

	"github.com/pier-oci/pier/configs"
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

// globMatch matches a repository name against a pattern as zot's
// doublestar does: "*", "?" and "[...]" within one name component, "**"
// as a whole component for zero or more components ("a/**" matches "a").
// Patterns are checked when the config is read (configs.checkPattern).
func globMatch(pattern, name string) bool {
	return matchParts(strings.Split(pattern, "/"), strings.Split(name, "/"))
}

func matchParts(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(name); i++ {
				if matchParts(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, err := path.Match(pat[0], name[0]); err != nil || !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
