package configs

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Actions are what an access-control policy may allow on a repository, as
// zot names them: read (pull, list tags and referrers, see it in the
// catalog), create (push new content and tags), update (move an existing
// tag to other content), delete.
const (
	ActionRead   = "read"
	ActionCreate = "create"
	ActionUpdate = "update"
	ActionDelete = "delete"
)

// actionNames are the actions a file may name; zot's
// detectManifestCollision is accepted and means nothing to pier.
var actionNames = []string{ActionRead, ActionCreate, ActionUpdate, ActionDelete, "detectManifestCollision"}

// AccessControlConfig is http.accessControl: which user may do what to
// which repository. Nil in HTTPConfig when the file has none.
type AccessControlConfig struct {
	// Repositories maps a glob over repository names ("**", "team/*",
	// "infra/**") to its policies. A repository is governed by the
	// longest pattern that matches it, as in zot. Patterns are lower case.
	Repositories map[string]PolicyGroup

	// AdminPolicy allows its actions on every repository to its users
	// and groups, whatever the repository's own policies say.
	AdminPolicy Policy

	// Groups maps a group name (lower case) to its users.
	Groups map[string][]string

	// MetricsUsers may read the metrics (extensions.metrics), as may
	// adminPolicy's users; nil when accessControl.metrics is absent.
	MetricsUsers []string
}

// PolicyGroup is the policies of one repository pattern.
type PolicyGroup struct {
	// Policies allow actions to named users and groups.
	Policies []Policy
	// DefaultPolicy is what any authenticated client may do.
	DefaultPolicy []string
	// AnonymousPolicy is what a client without credentials may do.
	AnonymousPolicy []string
}

// Policy allows Actions to Users and to members of Groups.
type Policy struct {
	Users   []string
	Groups  []string // lower case
	Actions []string
}

// accessControl decodes http.accessControl in either of zot's forms: the
// current one ({"repositories": {PATTERN: {...}}, "adminPolicy", "groups",
// "metrics"}) and the one before zot 2 (patterns and "adminPolicy" side by
// side). Keys match case-insensitively, as everywhere in the file.
type accessControl struct {
	cfg *AccessControlConfig
}

// UnmarshalJSON implements json.Unmarshaler. Its errors name the key
// below http.accessControl.
func (a *accessControl) UnmarshalJSON(b []byte) error {
	top, err := members(b, "")
	if err != nil {
		return err
	}
	cfg := &AccessControlConfig{Repositories: map[string]PolicyGroup{}}
	current := false
	for _, m := range top {
		current = current || strings.EqualFold(m.key, "repositories")
	}
	for _, m := range top {
		switch lower := strings.ToLower(m.key); {
		case lower == "adminpolicy":
			if cfg.AdminPolicy, err = policy(m.value, m.key); err != nil {
				return err
			}
		case lower == "groups":
			if cfg.Groups, err = groups(m.value); err != nil {
				return err
			}
		case lower == "metrics" && current:
			if cfg.MetricsUsers, err = metricsAccess(m.value, m.key); err != nil {
				return err
			}
		case lower == "repositories" && current:
			repos, err := members(m.value, m.key)
			if err != nil {
				return err
			}
			for _, r := range repos {
				if err := addPattern(cfg, r, m.key+"."); err != nil {
					return err
				}
			}
		case current:
			return fmt.Errorf("%s: unknown key (with \"repositories\", the keys are repositories, adminPolicy, groups and metrics)", m.key)
		default:
			if err := addPattern(cfg, m, ""); err != nil {
				return err
			}
		}
	}
	a.cfg = cfg
	return nil
}

func addPattern(cfg *AccessControlConfig, m member, prefix string) error {
	key := prefix + m.key
	pattern := strings.ToLower(m.key)
	if err := checkPattern(pattern); err != nil {
		return fmt.Errorf("%s: %v", key, err)
	}
	if _, dup := cfg.Repositories[pattern]; dup {
		return fmt.Errorf("%s: the same pattern as another key once lower-cased", key)
	}
	fields, err := members(m.value, key)
	if err != nil {
		return err
	}
	var pg PolicyGroup
	for _, f := range fields {
		fkey := key + "." + f.key
		switch strings.ToLower(f.key) {
		case "policies":
			var raw []json.RawMessage
			if err := json.Unmarshal(f.value, &raw); err != nil {
				return fmt.Errorf("%s: expected a list of policies", fkey)
			}
			for i, p := range raw {
				pol, err := policy(p, fmt.Sprintf("%s[%d]", fkey, i))
				if err != nil {
					return err
				}
				pg.Policies = append(pg.Policies, pol)
			}
		case "defaultpolicy":
			if pg.DefaultPolicy, err = actions(f.value, fkey); err != nil {
				return err
			}
		case "anonymouspolicy":
			if pg.AnonymousPolicy, err = actions(f.value, fkey); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unknown key (a pattern has policies, defaultPolicy and anonymousPolicy)", fkey)
		}
	}
	cfg.Repositories[pattern] = pg
	return nil
}

// checkPattern accepts zot's globs over repository names: "*", "?" and
// "[...]" within a name component, "**" as a whole component for any number
// of components. doublestar's {a,b} alternatives are refused rather than
// matched literally.
func checkPattern(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("an empty pattern matches nothing")
	}
	if strings.ContainsAny(pattern, "{}") {
		return fmt.Errorf("alternatives like {a,b} are not supported: write one pattern for each")
	}
	for _, seg := range strings.Split(pattern, "/") {
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("%q is not a valid glob (use *, ?, [...] and ** components)", pattern)
		}
	}
	return nil
}

func policy(raw json.RawMessage, key string) (Policy, error) {
	fields, err := members(raw, key)
	if err != nil {
		return Policy{}, err
	}
	var p Policy
	for _, f := range fields {
		fkey := key + "." + f.key
		switch strings.ToLower(f.key) {
		case "users":
			err = json.Unmarshal(f.value, &p.Users)
		case "groups":
			err = json.Unmarshal(f.value, &p.Groups)
			for i := range p.Groups {
				p.Groups[i] = strings.ToLower(p.Groups[i])
			}
		case "actions":
			p.Actions, err = actions(f.value, fkey)
			if err != nil {
				return Policy{}, err
			}
		default:
			return Policy{}, fmt.Errorf("%s: unknown key (a policy has users, groups and actions)", fkey)
		}
		if err != nil {
			return Policy{}, fmt.Errorf("%s: expected a list of names", fkey)
		}
	}
	return p, nil
}

func actions(raw json.RawMessage, key string) ([]string, error) {
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s: expected a list of actions (read, create, update, delete)", key)
	}
	for i, a := range list {
		j := slices.IndexFunc(actionNames, func(n string) bool { return strings.EqualFold(n, a) })
		if j < 0 {
			return nil, fmt.Errorf("%s: %q is not an action (read, create, update, delete)", key, a)
		}
		list[i] = actionNames[j]
	}
	return list, nil
}

func groups(raw json.RawMessage) (map[string][]string, error) {
	entries, err := members(raw, "groups")
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, e := range entries {
		key := "groups." + e.key
		fields, err := members(e.value, key)
		if err != nil {
			return nil, err
		}
		var users []string
		for _, f := range fields {
			if !strings.EqualFold(f.key, "users") {
				return nil, fmt.Errorf("%s.%s: unknown key (a group has users)", key, f.key)
			}
			if err := json.Unmarshal(f.value, &users); err != nil {
				return nil, fmt.Errorf("%s.%s: expected a list of names", key, f.key)
			}
		}
		out[strings.ToLower(e.key)] = append(out[strings.ToLower(e.key)], users...)
	}
	return out, nil
}

// members lists an object's members, or says the value at key is not one.
func members(raw json.RawMessage, key string) ([]member, error) {
	m, ok := objectMembers(raw)
	if !ok {
		if key == "" {
			return nil, fmt.Errorf("expected an object, got %s", jsonKind(raw))
		}
		return nil, fmt.Errorf("%s: expected an object, got %s", key, jsonKind(raw))
	}
	return m, nil
}
