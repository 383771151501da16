package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestZotExamples loads copies of zot's own example configurations
// (testdata/zot, named after their path under zot's examples/). Every one
// must load; the refusals say which would stop pier serving, and why.
func TestZotExamples(t *testing.T) {
	const cluster = "cluster"

	wantRefusals := map[string][]string{
		"config-allextensions.json":        nil,
		"config-anonymous-authz.json":      nil,
		"config-autoport.json":             nil,
		"config-bearer-auth.json":          nil,
		"config-bearer-oidc-workload.json": {"http.auth.bearer.oidc"},
		"config-bolt-repodb.json":          nil,
		"config-commit.json":               nil,
		"config-cve.json":                  nil,
		"config-docker-compat.json":        nil,
		"config-dynamodb.json":             nil,
		"config-events.json":               nil,
		"config-example.json":              {"http.auth.ldap"},
		"config-gc-periodic.json":          nil,
		"config-gc.json":                   nil,
		"config-lint.json":                 nil,
		"config-log.json":                  nil,
		"config-metrics.json":              nil,
		"config-minimal.json":              nil,
		"config-mtls.json":                 nil,
		"config-multiple.json":             nil,
		"config-openid.json":               {"http.auth.openid"},
		"config-policy.json":               nil,
		"config-ratelimit.json":            nil,
		"config-redis-all-options.json":    nil,
		"config-redis.json":                nil,
		"config-retention.json":            nil,
		"config-s3.json":                   nil,
		"config-scheduler.json":            nil,
		"config-scrub.json":                nil,
		"config-sync-localhost.json":       nil,
		"config-sync.json":                 nil,
		"config-tls.json":                  nil,
		"config-ui.json":                   nil,
		"scale-out-cluster-cloud-tls-config-cluster-member0.json": {cluster},
		"scale-out-cluster-local-config-cluster-member0.json":     {cluster},
	}

	files, err := filepath.Glob(filepath.Join("testdata", "zot", "*.json"))
	if err != nil {
		t.Fatal(err)
	}

	if len(files) != len(wantRefusals) {
		t.Errorf("testdata/zot has %d files, the table %d: keep them in step", len(files), len(wantRefusals))
	}

	for _, file := range files {
		name := filepath.Base(file)

		t.Run(name, func(t *testing.T) {
			want, ok := wantRefusals[name]
			if !ok {
				t.Fatalf("no expected refusals for %s in the table", name)
			}

			cfg, _, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}

			if got := keyList(cfg.Refusals()); !slices.Equal(got, append([]string{}, want...)) {
				t.Errorf("refusals = %v, want %v", got, want)
			}
		})
	}
}

// example.json documents, with README.md, every key pier implements: it must
// use all of them and nothing pier would warn about.
func TestExampleUsesEveryImplementedKey(t *testing.T) {
	data, err := os.ReadFile("example.json")
	if err != nil {
		t.Fatal(err)
	}

	cfg, warnings, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}

	if len(warnings) != 0 || len(cfg.Refusals()) != 0 {
		t.Errorf("example.json: warnings %v, refusals %v; want none", warnings, cfg.Refusals())
	}

	var f fileConfig

	present, err := decode(data, &f)
	if err != nil {
		t.Fatal(err)
	}

	// The example's default root stays on the local disk, as most are; a
	// subpath shows a bucket.
	subPathOnly := map[string]bool{"storage.storageDriver": true}
	for _, key := range implementedKeys() {
		if !present[key] && !subPathOnly[key] {
			t.Errorf("example.json does not show %s", key)
		}

		// A subpath has every store key, so some subpath must show each
		// one the storage section does.
		rest, ok := strings.CutPrefix(key, "storage.")
		if !ok || !isStoreKey(rest) {
			continue
		}

		shown := false
		for name := range f.Storage.SubPaths {
			shown = shown || present["storage.subPaths."+name+"."+rest]
		}

		if !shown {
			t.Errorf("example.json shows %s in no subpath", rest)
		}
	}
}

func TestExampleZot(t *testing.T) {
	cfg, warnings, err := Load("example-zot.json")
	if err != nil {
		t.Fatal(err)
	}

	if len(cfg.Refusals()) != 0 {
		t.Errorf("refusals = %v; pier must serve a typical zot config", cfg.Refusals())
	}

	// dedupe, gc, scrub and the audit log are implemented; search and the
	// UI are not.
	want := []string{"extensions.search", "extensions.ui"}
	if got := keyList(warnings); !slices.Equal(got, want) {
		t.Errorf("warnings = %v, want %v", got, want)
	}

	s := cfg.Storage
	if !s.Dedupe || !s.GC || s.GCDelay != time.Hour || s.GCInterval != 24*time.Hour ||
		cfg.Extensions.Scrub == nil || !cfg.Extensions.Scrub.Enable || cfg.Extensions.Scrub.Interval != 24*time.Hour {
		t.Errorf("storage %+v, scrub %+v; want the file's dedupe, gc and scrub settings", s, cfg.Extensions.Scrub)
	}
}

// example-pi.json is a configuration sized for a Raspberry Pi with an SD
// card: it must load with nothing ignored and nothing refused, and mean what
// README.md says it does.
func TestExamplePi(t *testing.T) {
	cfg, warnings, err := Load("example-pi.json")
	if err != nil {
		t.Fatal(err)
	}

	if len(warnings) != 0 || len(cfg.Refusals()) != 0 {
		t.Fatalf("example-pi.json: warnings %v, refusals %v; want none", warnings, cfg.Refusals())
	}

	want := Config{
		DistSpecVersion: "1.1.1",
		Storage: StorageConfig{StoreConfig: StoreConfig{
			RootDirectory: "/var/lib/pier",
			Commit:        true,
			Dedupe:        true,
			GC:            true,
			GCDelay:       time.Hour,
			GCInterval:    6 * time.Hour,
		}},
		HTTP: HTTPConfig{Address: "0.0.0.0", Port: "5000", BodyIdleTimeout: time.Minute, MaxConcurrentUploads: 16, Limits: LimitsConfig{
			ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			MaxManifestSize: 4 << 20, MaxUploadSessions: 512, UploadIdleTimeout: 15 * time.Minute,
		}},
		Log: LogConfig{Level: "info"},
		Extensions: ExtensionsConfig{Scrub: &ScrubConfig{
			Enable: true, Interval: 7 * 24 * time.Hour, MaxBytesPerSecond: 4 << 20,
		}},
	}

	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("example-pi.json =\n%+v\nwant\n%+v", *cfg, want)
	}
}

// example-auth.json is example-pi.json with "anonymous pull, authenticated
// push": it must load as it is (pier verify), and mean what README.md says.
func TestExampleAuth(t *testing.T) {
	cfg, warnings, err := Load("example-auth.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 || len(cfg.Refusals()) != 0 {
		t.Fatalf("example-auth.json: warnings %v, refusals %v; want none", warnings, cfg.Refusals())
	}
	pi, _, err := Load("example-pi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Storage, pi.Storage) || !reflect.DeepEqual(cfg.Extensions, pi.Extensions) || cfg.HTTP.Address != pi.HTTP.Address || cfg.HTTP.Port != pi.HTTP.Port {
		t.Error("example-auth.json differs from example-pi.json beyond authentication")
	}
	all := []string{ActionRead, ActionCreate, ActionUpdate, ActionDelete}
	want := &AccessControlConfig{Repositories: map[string]PolicyGroup{"**": {AnonymousPolicy: []string{ActionRead}, DefaultPolicy: all}}}
	if cfg.HTTP.Auth == nil || cfg.HTTP.Auth.HTPasswd != "/etc/pier/htpasswd" || !reflect.DeepEqual(cfg.HTTP.AccessControl, want) || cfg.Log.Audit == "" {
		t.Errorf("auth %+v, access control %+v, audit %q", cfg.HTTP.Auth, cfg.HTTP.AccessControl, cfg.Log.Audit)
	}
}
