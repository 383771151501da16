package configs

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// zot wrote accessControl two ways; both mean the same policies.
func TestAccessControlBothForms(t *testing.T) {
	current, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"accessControl": {
		"repositories": {"**": {"policies": [{"users": ["ci"], "groups": ["Ops"], "actions": ["read", "Create"]}], "defaultPolicy": ["read"], "anonymousPolicy": ["read"]},
			"Infra/**": {"defaultPolicy": []}},
		"adminPolicy": {"users": ["admin"], "actions": ["delete"]},
		"groups": {"OPS": {"users": ["alice"]}},
		"metrics": {"users": ["prom"]}}}}`)
	old, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"AccessControl": {
		"**": {"Policies": [{"users": ["ci"], "groups": ["ops"], "actions": ["read", "create"]}], "defaultpolicy": ["read"], "anonymousPolicy": ["read"]},
		"infra/**": {"defaultPolicy": []},
		"adminPolicy": {"users": ["admin"], "actions": ["delete"]},
		"groups": {"ops": {"users": ["alice"]}}}}}`)

	want := &AccessControlConfig{
		Repositories: map[string]PolicyGroup{
			"**": {
				Policies:        []Policy{{Users: []string{"ci"}, Groups: []string{"ops"}, Actions: []string{"read", "create"}}},
				DefaultPolicy:   []string{"read"},
				AnonymousPolicy: []string{"read"},
			},
			"infra/**": {DefaultPolicy: []string{}},
		},
		AdminPolicy: Policy{Users: []string{"admin"}, Actions: []string{"delete"}},
		Groups:      map[string][]string{"ops": {"alice"}},
	}
	current.HTTP.AccessControl.MetricsUsers = nil // the older form has no metrics key
	for name, cfg := range map[string]*Config{"current form": current, "form before zot 2": old} {
		if !reflect.DeepEqual(cfg.HTTP.AccessControl, want) {
			t.Errorf("%s: got %+v\nwant %+v", name, cfg.HTTP.AccessControl, want)
		}
	}
}

func TestAuthKeys(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"htpasswd": {"path": "/etc/pier/htpasswd"}, "failDelay": 2,
		"bearer": {"realm": "https://t/token", "service": "pier", "cert": "/etc/pier/t.crt"}}}}`)
	want := &AuthConfig{HTPasswd: "/etc/pier/htpasswd", FailDelay: 2 * time.Second,
		Bearer: &BearerConfig{Realm: "https://t/token", Service: "pier", Cert: "/etc/pier/t.crt"}}
	if !reflect.DeepEqual(cfg.HTTP.Auth, want) {
		t.Errorf("Auth = %+v, want %+v", cfg.HTTP.Auth, want)
	}

	// failDelay alone, or an empty auth section, is no login at all.
	for _, data := range []string{`{"failDelay": 5}`, `{}`} {
		cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"auth": `+data+`}}`)
		if cfg.HTTP.Auth != nil {
			t.Errorf("auth %s: Auth = %+v, want nil", data, cfg.HTTP.Auth)
		}
	}

	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"htpasswd": {"path": "/p"}, "failDelay": "1500ms"}}}`)
	if cfg.HTTP.Auth.FailDelay != 1500*time.Millisecond {
		t.Errorf("failDelay \"1500ms\" = %v", cfg.HTTP.Auth.FailDelay)
	}
}

func TestAuthAndLimitErrors(t *testing.T) {
	for _, tc := range []struct{ http, want string }{
		{`{"auth": {"htpasswd": {}}}`, "http.auth.htpasswd.path: required"},
		{`{"auth": {"bearer": {"realm": "r", "service": "s"}}}`, "http.auth.bearer.cert: required"},
		{`{"auth": {"failDelay": -1}}`, "http.auth.failDelay: -1 is not a number of seconds"},
		{`{"auth": {"mtls": {"identityAttributes": ["DNSName"]}}}`, `"DNSName" is not supported`},
		{`{"accessControl": {"**": {"defaultPolicy": ["push"]}}}`, `http.accessControl: **.defaultPolicy: "push" is not an action`},
		{`{"accessControl": {"repositories": {"a/[b": {}}}}`, `repositories.a/[b: "a/[b" is not a valid glob`},
		{`{"accessControl": {"repositories": {"{a,b}": {}}}}`, "alternatives like {a,b} are not supported"},
		{`{"accessControl": {"repositories": {}, "other": {}}}`, "other: unknown key"},
		{`{"accessControl": {"**": {"policies": [{"user": ["x"]}]}}}`, "**.policies[0].user: unknown key"},
		{`{"accessControl": {"A": {}, "a": {}}}`, "the same pattern as another key"},
		{`{"accessControl": []}`, "http.accessControl: expected an object"},
		{`{"ratelimit": {"rate": 0}}`, "http.ratelimit.rate: must be"},
		{`{"ratelimit": {"methods": [{"method": "TRACE", "rate": 1}]}}`, `"TRACE" is not a method`},
		{`{"maxManifestSize": 8388608}`, "http.maxManifestSize: must be from 1024 to 4194304"},
		{`{"readHeaderTimeout": "0s"}`, "http.readHeaderTimeout: must be more than 0"},
		{`{"maxUploadSessions": 2}`, "http.maxUploadSessions: must be 8 or more"},
	} {
		_, _, err := Parse([]byte(`{"storage": {"rootDirectory": "/r"}, "http": ` + tc.http + `}`))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("http %s: error %v, want it to contain %q", tc.http, err, tc.want)
		}
	}
}

func TestRatelimit(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"Ratelimit": {"Rate": 10, "Methods": [{"Method": "get", "Rate": 5}]}}}`)
	want := &RatelimitConfig{Rate: 10, Methods: map[string]int{"GET": 5}}
	if !reflect.DeepEqual(cfg.HTTP.Ratelimit, want) {
		t.Errorf("Ratelimit = %+v, want %+v", cfg.HTTP.Ratelimit, want)
	}
}
