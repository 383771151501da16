package configs

import (
	"strings"
	"testing"
	"time"
)

func TestRetentionKeys(t *testing.T) {
	cfg, warnings := mustParse(t, `{"storage": {"rootDirectory": "/r", "gcDelay": "2h", "retention": {"DRYRUN": true, "delay": "24h", "policies": [
		{"repositories": ["infra/*", "tmp/**"], "deleteReferrers": true, "keepTags": [{"patterns": ["v2.*", ".*-prod"], "mostRecentlyPushedCount": 10, "pulledWithin": "720h"}],
		 "keepUntagged": {"mostRecentlyPulledCount": 3}},
		{"deleteUntagged": false, "keepTags": [{"patterns": [".*"]}]}
	]}}}`)
	if len(warnings) != 0 {
		t.Fatalf("warnings %v", warnings)
	}
	r := cfg.Storage.Retention
	if r == nil || !r.DryRun || r.Delay != 24*time.Hour || len(r.Policies) != 2 {
		t.Fatalf("retention = %+v", r)
	}
	p := r.Policies[0]
	if !p.DeleteReferrers || !p.DeleteUntagged || len(p.Repositories) != 2 || len(p.KeepTags) != 1 ||
		p.KeepTags[0].MostRecentlyPushedCount != 10 || p.KeepTags[0].PulledWithin != 720*time.Hour ||
		len(p.KeepTags[0].Patterns) != 2 || p.KeepUntagged == nil || p.KeepUntagged.MostRecentlyPulledCount != 3 {
		t.Fatalf("first policy = %+v", p)
	}
	if q := r.Policies[1]; q.DeleteReferrers || q.DeleteUntagged || q.KeepUntagged != nil {
		t.Fatalf("second policy (zot's defaults: deleteReferrers false; deleteUntagged as given) = %+v", q)
	}
	if r.For("infra/db") != &r.Policies[0] || r.For("app") != &r.Policies[1] {
		t.Fatal("policies do not match repositories as configured")
	}
	if cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}}`); cfg.Storage.Retention != nil {
		t.Fatal("retention without the key")
	}
}

func TestRetentionErrors(t *testing.T) {
	for _, tc := range []struct{ retention, want string }{
		{`{"policies": [{"keepTags": [{"patterns": ["("]}]}]}`, "storage.retention.policies[0].keepTags[0].patterns[0]: \"(\" is not a regular expression"},
		{`{"policies": [{"repositories": ["{a,b}"]}]}`, "storage.retention.policies[0].repositories[0]: alternatives"},
		{`{"policies": [{"repositories": []}]}`, "storage.retention.policies[0].repositories: an empty list"},
		{`{"policies": [{"keepTags": [{"mostRecentlyPushedCount": -1}]}]}`, "mostRecentlyPushedCount: must be 0 or more"},
		{`{"policies": [{"keepTags": [{"pulledWithin": "3days"}]}]}`, "storage.retention.policies[0].keepTags[0].pulledWithin: \"3days\" is not a duration"},
		{`{"policies": [{"keepTagz": []}]}`, "storage.retention.policies[0].keepTagz: unknown key (did you mean \"keepTags\"?)"},
		{`{"policies": {"a": 1}}`, "storage.retention.policies: expected a list of objects"},
	} {
		_, _, err := Parse([]byte(`{"storage": {"rootDirectory": "/r", "retention": ` + tc.retention + `}}`))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.retention, err, tc.want)
		}
	}
}

func TestQuotaKeys(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r", "maxRepos": 7, "quota": {"maxBytes": "1.5GiB", "minFreeSpace": 1048576,
		"perRepository": [{"repositories": ["ci/**"], "maxBytes": "100MB"}]},
		"subPaths": {"/a": {"rootDirectory": "/a", "quota": {"minFreeSpace": "64 MiB"}}}}}`)
	q := cfg.Storage.Quota
	if q.MaxBytes != 3<<29 || q.MinFreeSpace != 1<<20 || q.MaxRepos != 7 || len(q.PerRepository) != 1 ||
		q.PerRepository[0].MaxBytes != 100e6 || q.PerRepository[0].Key != "storage.quota.perRepository[0].maxBytes" || !q.On() {
		t.Fatalf("quota = %+v", q)
	}
	if a := cfg.Storage.SubPaths["/a"].Quota; a.MinFreeSpace != 64<<20 || a.MaxBytes != 0 {
		t.Fatalf("subpath quota = %+v", a)
	}
	for _, bad := range []string{`{"maxBytes": "1XB"}`, `{"maxBytes": -1}`, `{"perRepository": [{"maxBytes": 1}]}`} {
		if _, _, err := Parse([]byte(`{"storage": {"rootDirectory": "/r", "quota": ` + bad + `}}`)); err == nil || !strings.Contains(err.Error(), "storage.quota") {
			t.Errorf("quota %s: error %v, want one naming storage.quota", bad, err)
		}
	}
}

func TestTimeWindow(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r", "gcTimeWindow": "22:30-04:00"}}`)
	w := cfg.Storage.GCTimeWindow
	if w == nil || w.String() != "22:30-04:00" {
		t.Fatalf("window = %v", w)
	}
	at := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, time.Local) }
	for _, tc := range []struct {
		t    time.Time
		in   bool
		next time.Time
	}{
		{at(23, 0), true, at(23, 0)},
		{at(2, 0), true, at(2, 0)},
		{at(4, 0), false, at(22, 30)},
		{at(12, 0), false, at(22, 30)},
		{at(22, 29), false, at(22, 30)},
	} {
		if w.Contains(tc.t) != tc.in || !w.Next(tc.t).Equal(tc.next) {
			t.Errorf("%v: in %v next %v, want %v %v", tc.t, w.Contains(tc.t), w.Next(tc.t), tc.in, tc.next)
		}
	}
	day := TimeWindow{Start: time.Hour, End: 5 * time.Hour}
	if !day.Contains(at(1, 0)) || day.Contains(at(5, 0)) || !day.Next(at(6, 0)).Equal(at(1, 0).AddDate(0, 0, 1)) {
		t.Error("01:00-05:00 misplaced")
	}
	for _, bad := range []string{"1-5", "01:00", "25:00-01:00", "01:00-01:00", "01:60-02:00"} {
		if _, _, err := Parse([]byte(`{"storage": {"rootDirectory": "/r", "gcTimeWindow": "` + bad + `"}}`)); err == nil || !strings.Contains(err.Error(), "storage.gcTimeWindow") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}

func TestMetricsKeys(t *testing.T) {
	cfg, warnings := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "extensions": {"metrics": {}}}`)
	if m := cfg.Extensions.Metrics; len(warnings) != 0 || m == nil || !m.Enable || m.Path != "/metrics" {
		t.Fatalf("metrics = %+v, warnings %v; want on at /metrics, as zot", m, warnings)
	}
	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r"}, "extensions": {"metrics": {"enable": false, "prometheus": {"path": "/m"}}}}`)
	if m := cfg.Extensions.Metrics; m.Enable || m.Path != "/m" {
		t.Fatalf("metrics = %+v", m)
	}
	if _, _, err := Parse([]byte(`{"storage": {"rootDirectory": "/r"}, "extensions": {"metrics": {"prometheus": {"path": "/v2/metrics"}}}}`)); err == nil {
		t.Fatal("metrics below /v2/ accepted")
	}
	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"accessControl": {"repositories": {}, "metrics": {"users": ["prom"]}}}}`)
	if u := cfg.HTTP.AccessControl.MetricsUsers; len(u) != 1 || u[0] != "prom" {
		t.Fatalf("metrics users = %v", u)
	}
}
