package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mustParse parses a config the test expects to be valid.
func mustParse(t *testing.T, data string) (*Config, []Warning) {
	t.Helper()

	cfg, warnings, err := Parse([]byte(data))
	if err != nil {
		t.Fatalf("Parse(%s): %v", data, err)
	}

	return cfg, warnings
}

// parseError parses a config the test expects to be invalid and returns the
// error text.
func parseError(t *testing.T, data string) string {
	t.Helper()

	cfg, warnings, err := Parse([]byte(data))
	if err == nil {
		t.Fatalf("Parse(%s) = %+v, %v; want an error", data, cfg, warnings)
	}

	if cfg != nil || warnings != nil {
		t.Errorf("Parse(%s) returned a config or warnings along with error %v", data, err)
	}

	return err.Error()
}

func TestDefault(t *testing.T) {
	cfg := Default()

	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}

	checks := []struct {
		name      string
		got, want any
	}{
		{"DistSpecVersion", cfg.DistSpecVersion, "1.1.1"},
		{"RootDirectory", cfg.Storage.RootDirectory, filepath.Join(wd, "data")},
		{"Address", cfg.HTTP.Address, "127.0.0.1"},
		{"Port", cfg.HTTP.Port, "5000"},
		{"Level", cfg.Log.Level, "info"},
		{"Commit", cfg.Storage.Commit, false},
		{"Dedupe", cfg.Storage.Dedupe, true},
		{"GC", cfg.Storage.GC, true},
		{"GCDelay", cfg.Storage.GCDelay, time.Hour},
		{"GCInterval", cfg.Storage.GCInterval, time.Hour},
		{"GCOnce", cfg.Storage.GCOnce, false},
		{"ReadOnly", cfg.Storage.ReadOnly, false},
		{"TLS is nil", cfg.HTTP.TLS == nil, true},
		{"Scrub is nil", cfg.Extensions.Scrub == nil, true},
		{"no refusals", len(cfg.Refusals()), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("Default().%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	_, warnings, err := Parse(DefaultJSON())
	if err != nil || len(warnings) != 0 {
		t.Errorf("Parse(DefaultJSON()) = warnings %v, error %v; want neither", warnings, err)
	}

	onDisk, err := os.ReadFile("default.json")
	if err != nil {
		t.Fatal(err)
	}

	if string(DefaultJSON()) != string(onDisk) {
		t.Error("DefaultJSON() differs from default.json")
	}

	// Each call hands out its own copy.
	DefaultJSON()[0] = 'x'
	if DefaultJSON()[0] != '{' {
		t.Error("modifying DefaultJSON()'s result changed the embedded default")
	}
}

func TestDefaultsForAbsentKeys(t *testing.T) {
	cfg, warnings := mustParse(t, `{"storage": {"rootDirectory": "/srv/images"}}`)

	checks := []struct {
		name      string
		got, want any
	}{
		{"DistSpecVersion", cfg.DistSpecVersion, "1.1.1"},
		{"Address (zot's default)", cfg.HTTP.Address, "127.0.0.1"},
		{"Port (zot's default)", cfg.HTTP.Port, "8080"},
		{"Level", cfg.Log.Level, "info"},
		{"Output", cfg.Log.Output, ""},
		{"Dedupe", cfg.Storage.Dedupe, true},
		{"GC", cfg.Storage.GC, true},
		{"GCDelay", cfg.Storage.GCDelay, time.Hour},
		{"GCInterval", cfg.Storage.GCInterval, time.Hour},
		{"Commit", cfg.Storage.Commit, false},
		{"RemoteCache", cfg.Storage.RemoteCache, false},
		{"StorageDriver is nil", cfg.Storage.StorageDriver == nil, true},
		{"CacheDriver is nil", cfg.Storage.CacheDriver == nil, true},
		{"SubPaths is nil", cfg.Storage.SubPaths == nil, true},
		{"Auth is nil", cfg.HTTP.Auth == nil, true},
		{"AccessControl is nil", cfg.HTTP.AccessControl == nil, true},
		{"Other extensions is nil", cfg.Extensions.Other == nil, true},
		{"BodyIdleTimeout", cfg.HTTP.BodyIdleTimeout, time.Minute},
		{"MaxConcurrentUploads", cfg.HTTP.MaxConcurrentUploads, 16},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	if len(warnings) != 0 {
		t.Errorf("warnings = %v, want none", warnings)
	}
}

func TestGCDefaults(t *testing.T) {
	tests := []struct {
		name     string
		storage  string // members of storage besides rootDirectory
		gc       bool
		delay    time.Duration
		interval time.Duration
		once     bool
	}{
		{"gc omitted", ``, true, time.Hour, time.Hour, false},
		{"gc on, interval omitted", `"gc": true`, true, time.Hour, time.Hour, false},
		{"gc on, interval 0 runs once", `"gc": true, "gcInterval": "0s"`, true, time.Hour, 0, true},
		{"interval 0 as a number", `"gcInterval": 0`, true, time.Hour, 0, true},
		{"gc on, interval set", `"gc": true, "gcInterval": "24h", "gcDelay": "30m"`, true, 30 * time.Minute, 24 * time.Hour, false},
		{"gc off, timings omitted", `"gc": false`, false, 0, 0, false},
		{"gc off, interval 0 is not once", `"gc": false, "gcInterval": 0`, false, 0, 0, false},
		{"gc off, timings kept", `"gc": false, "gcDelay": "2h", "gcInterval": "3h"`, false, 2 * time.Hour, 3 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storage := `"rootDirectory": "/r"`
			if tt.storage != "" {
				storage += ", " + tt.storage
			}

			cfg, _ := mustParse(t, `{"storage": {`+storage+`}}`)
			s := cfg.Storage

			if s.GC != tt.gc || s.GCDelay != tt.delay || s.GCInterval != tt.interval || s.GCOnce != tt.once {
				t.Errorf("GC, GCDelay, GCInterval, GCOnce = %v, %v, %v, %v; want %v, %v, %v, %v",
					s.GC, s.GCDelay, s.GCInterval, s.GCOnce, tt.gc, tt.delay, tt.interval, tt.once)
			}
		})
	}
}

// zot decodes each subpath into a zero value and only then applies GC
// timing defaults, so a subpath's gc and dedupe default to off.
func TestSubPathDefaults(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r", "subPaths": {
		"/plain": {"rootDirectory": "/p"},
		"/gc": {"rootDirectory": "/g", "gc": true},
		"/gc-once": {"rootDirectory": "/o", "gc": true, "gcInterval": 0},
		"/full": {"rootDirectory": "rel", "dedupe": true, "commit": true, "gcDelay": "5m"}
	}}}`)

	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}

	want := map[string]SubPathConfig{
		"/plain":   {RootDirectory: "/p"},
		"/gc":      {RootDirectory: "/g", GC: true, GCDelay: time.Hour, GCInterval: time.Hour},
		"/gc-once": {RootDirectory: "/o", GC: true, GCDelay: time.Hour, GCOnce: true},
		"/full":    {RootDirectory: filepath.Join(wd, "rel"), Dedupe: true, Commit: true, GCDelay: 5 * time.Minute},
	}

	if len(cfg.Storage.SubPaths) != len(want) {
		t.Fatalf("SubPaths has %d entries, want %d", len(cfg.Storage.SubPaths), len(want))
	}

	for name, w := range want {
		got := cfg.Storage.SubPaths[name]
		if got.RootDirectory != w.RootDirectory || got.Dedupe != w.Dedupe || got.Commit != w.Commit ||
			got.GC != w.GC || got.GCDelay != w.GCDelay || got.GCInterval != w.GCInterval || got.GCOnce != w.GCOnce {
			t.Errorf("SubPaths[%q] = %+v, want %+v", name, got, w)
		}
	}
}

func TestRemoteCacheDefault(t *testing.T) {
	tests := []struct {
		storage string
		want    bool
	}{
		{`"storageDriver": {"name": "s3", "bucket": "bkt", "region": "us-east-1"}`, true},
		{`"storageDriver": {"name": "s3", "bucket": "bkt", "region": "us-east-1"}, "dedupe": false`, false},
		{`"storageDriver": {"name": "s3", "bucket": "bkt", "region": "us-east-1"}, "remoteCache": false`, false},
		{`"remoteCache": true`, true},
		{``, false},
	}
	for _, tt := range tests {
		storage := `"rootDirectory": "/r"`
		if tt.storage != "" {
			storage += ", " + tt.storage
		}

		cfg, _ := mustParse(t, `{"storage": {`+storage+`}}`)
		if cfg.Storage.RemoteCache != tt.want {
			t.Errorf("storage {%s}: RemoteCache = %v, want %v", tt.storage, cfg.Storage.RemoteCache, tt.want)
		}
	}
}

func TestRootDirectoryIsAbsolute(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}

	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "images/../store"}}`)
	if want := filepath.Join(wd, "store"); cfg.Storage.RootDirectory != want {
		t.Errorf("RootDirectory = %q, want %q", cfg.Storage.RootDirectory, want)
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		value   string
		want    time.Duration
		wantErr string // the whole error; empty when valid
	}{
		{`"90s"`, 90 * time.Second, ""},
		{`"1h30m"`, 90 * time.Minute, ""},
		{`"0s"`, 0, ""},
		{`3000000000`, 3 * time.Second, ""},
		{`0`, 0, ""},
		{`"1x"`, 0, `storage.gcDelay: "1x" is not a duration (use Go durations like "1h", "90s")`},
		{`""`, 0, `storage.gcDelay: "" is not a duration (use Go durations like "1h", "90s")`},
		{`"-1h"`, 0, `storage.gcDelay: "-1h" is negative; durations must be 0 or more`},
		{`-5`, 0, `storage.gcDelay: -5 is negative; durations must be 0 or more`},
		{`1.5`, 0, `storage.gcDelay: 1.5 is not a duration (use Go durations like "1h", "90s")`},
		{`true`, 0, `storage.gcDelay: true is not a duration (use Go durations like "1h", "90s")`},
		{`{}`, 0, `storage.gcDelay: {} is not a duration (use Go durations like "1h", "90s")`},
	}
	for _, tt := range tests {
		data := `{"storage": {"rootDirectory": "/r", "gcDelay": ` + tt.value + `}}`
		if tt.wantErr != "" {
			if got := parseError(t, data); got != tt.wantErr {
				t.Errorf("gcDelay %s: error %q, want %q", tt.value, got, tt.wantErr)
			}

			continue
		}

		cfg, _ := mustParse(t, data)
		if cfg.Storage.GCDelay != tt.want {
			t.Errorf("gcDelay %s = %v, want %v", tt.value, cfg.Storage.GCDelay, tt.want)
		}
	}
}

func TestPort(t *testing.T) {
	tests := []struct {
		value   string
		want    string
		wantErr string
	}{
		{`"5000"`, "5000", ""},
		{`5000`, "5000", ""},
		{`"0"`, "0", ""},
		{`65535`, "65535", ""},
		{`"08080"`, "8080", ""},
		{`"65536"`, "", `http.port: "65536" is not a port number (0 to 65535)`},
		{`-1`, "", `http.port: "-1" is not a port number (0 to 65535)`},
		{`"http"`, "", `http.port: "http" is not a port number (0 to 65535)`},
		{`""`, "", `http.port: "" is not a port number (0 to 65535)`},
		{`50.5`, "", `http.port: "50.5" is not a port number (0 to 65535)`},
		{`true`, "", `http.port: expected a port number like "5000", got true`},
	}
	for _, tt := range tests {
		data := `{"storage": {"rootDirectory": "/r"}, "http": {"port": ` + tt.value + `}}`
		if tt.wantErr != "" {
			if got := parseError(t, data); got != tt.wantErr {
				t.Errorf("port %s: error %q, want %q", tt.value, got, tt.wantErr)
			}

			continue
		}

		cfg, _ := mustParse(t, data)
		if cfg.HTTP.Port != tt.want {
			t.Errorf("port %s = %q, want %q", tt.value, cfg.HTTP.Port, tt.want)
		}
	}
}

func TestLogLevels(t *testing.T) {
	tests := map[string]string{
		"trace": "debug", "debug": "debug", "info": "info", "warn": "warn", "WARN": "warn",
		"error": "error", "fatal": "error", "panic": "error", "Info": "info",
	}
	for in, want := range tests {
		cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "log": {"level": "`+in+`"}}`)
		if cfg.Log.Level != want {
			t.Errorf("level %q = %q, want %q", in, cfg.Log.Level, want)
		}
	}
}

func TestTLS(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"tls": {}}}`)
	if cfg.HTTP.TLS != nil {
		t.Errorf("empty tls section: TLS = %+v, want nil (zot serves plain HTTP)", cfg.HTTP.TLS)
	}

	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"tls": {"cert": "c", "key": "k", "cacert": "ca"}}}`)
	if want := (TLSConfig{Cert: "c", Key: "k", CACert: "ca"}); cfg.HTTP.TLS == nil || *cfg.HTTP.TLS != want {
		t.Errorf("TLS = %+v, want %+v", cfg.HTTP.TLS, want)
	}
}

func TestScrub(t *testing.T) {
	cfg, warnings := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "extensions": {"scrub": {}}}`)

	want := ScrubConfig{Enable: true, Interval: 24 * time.Hour, MaxBytesPerSecond: 8 << 20}
	if cfg.Extensions.Scrub == nil || *cfg.Extensions.Scrub != want {
		t.Errorf("Scrub = %+v, want %+v", cfg.Extensions.Scrub, want)
	}

	if len(warnings) != 0 {
		t.Errorf("warnings = %v, want none: pier implements scrub", warnings)
	}

	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r"}, "extensions": {"scrub": {"enable": false, "interval": "1h", "maxBytesPerSecond": 0}}}`)

	want = ScrubConfig{Interval: time.Hour}
	if cfg.Extensions.Scrub == nil || *cfg.Extensions.Scrub != want {
		t.Errorf("Scrub = %+v, want %+v", cfg.Extensions.Scrub, want)
	}

	// zot reads an interval of 0 as its default.
	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r"}, "extensions": {"scrub": {"enable": true, "interval": 0}}}`)
	if cfg.Extensions.Scrub == nil || cfg.Extensions.Scrub.Interval != 24*time.Hour {
		t.Errorf("Scrub with interval 0 = %+v, want the 24h default", cfg.Extensions.Scrub)
	}
}

// zot's config loader lower-cases every key, subpath names too.
func TestSubPathNamesAreLowerCased(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r", "subPaths": {"/Team/App": {"rootDirectory": "/t"}}}}`)
	if _, ok := cfg.Storage.SubPaths["/team/app"]; !ok || len(cfg.Storage.SubPaths) != 1 {
		t.Errorf("SubPaths = %v, want /team/app", cfg.Storage.SubPaths)
	}
	// What is refused or warned about in a subpath still is, by its new name.
	cfg, warnings := mustParse(t, `{"storage": {"rootDirectory": "/r", "subPaths": {"/Team": {"rootDirectory": "/t",
		"storageDriver": {"name": "s3", "bucket": "bkt", "region": "us-east-1"}, "hydrateBlobOnRead": true}}}}`)
	if cfg.Storage.SubPaths["/team"].S3 == nil {
		t.Errorf("the s3 driver of /team is lost under its new name")
	}
	if len(warnings) != 1 || warnings[0].Key != "storage.subPaths./team.hydrateBlobOnRead" {
		t.Errorf("warnings = %v, want storage.subPaths./team.hydrateBlobOnRead", warnings)
	}
}

func TestOtherExtensionsKeptRaw(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "extensions": {"search": {"enable": true}, "ui": null}}`)

	if got := string(cfg.Extensions.Other["search"]); got != `{"enable": true}` {
		t.Errorf("Other[search] = %s", got)
	}

	if _, ok := cfg.Extensions.Other["ui"]; ok || len(cfg.Extensions.Other) != 1 {
		t.Errorf("Other = %v, want only search (null is absent)", cfg.Extensions.Other)
	}
}

func TestValidationErrorsNameTheKey(t *testing.T) {
	const root = `"storage": {"rootDirectory": "/r"}`

	tests := []struct {
		name string
		data string
		want string // the error must start with this
	}{
		{"no storage", `{}`, "storage.rootDirectory: required"},
		{"empty rootDirectory", `{"storage": {"rootDirectory": ""}}`, "storage.rootDirectory: required"},
		{"bad distSpecVersion", `{"distSpecVersion": "v1", ` + root + `}`, `distSpecVersion: "v1" is not a version`},
		{"distSpecVersion suffix needs a dash", `{"distSpecVersion": "1.0.1dev", ` + root + `}`, `distSpecVersion: "1.0.1dev"`},
		{"empty address", `{` + root + `, "http": {"address": ""}}`, "http.address: must not be empty"},
		{"address with port", `{` + root + `, "http": {"address": "0.0.0.0:5000"}}`, `http.address: "0.0.0.0:5000" is not an address; put the port in http.port`},
		{"port out of range", `{` + root + `, "http": {"port": 70000}}`, `http.port: "70000" is not a port number`},
		{"cert without key", `{` + root + `, "http": {"tls": {"cert": "c"}}}`, "http.tls.key: required when http.tls.cert is set"},
		{"key without cert", `{` + root + `, "http": {"tls": {"key": "k"}}}`, "http.tls.cert: required when http.tls.key is set"},
		{"cacert without cert", `{` + root + `, "http": {"tls": {"cacert": "ca"}}}`, "http.tls.cacert: needs http.tls.cert and http.tls.key"},
		{"unknown compat", `{` + root + `, "http": {"compat": ["docker2s1"]}}`, `http.compat: "docker2s1" is not a compatibility mode`},
		{"compat not a list", `{` + root + `, "http": {"compat": "docker2s2"}}`, "http.compat: expected a list of strings, got string"},
		{"unknown log level", `{` + root + `, "log": {"level": "verbose"}}`, `log.level: "verbose" is not a log level`},
		{"disabled log level", `{` + root + `, "log": {"level": "disabled"}}`, `log.level: "disabled" is not a log level`},
		{"negative scrub interval", `{` + root + `, "extensions": {"scrub": {"interval": "-1s"}}}`, `extensions.scrub.interval: "-1s" is negative`},
		{"negative scrub rate", `{` + root + `, "extensions": {"scrub": {"maxBytesPerSecond": -1}}}`, "extensions.scrub.maxBytesPerSecond: must be 0 (unthrottled) or more"},
		{"body idle timeout too short", `{` + root + `, "http": {"bodyIdleTimeout": "500ms"}}`, "http.bodyIdleTimeout: must be 0 (never cut) or at least 1s"},
		{"negative body idle timeout", `{` + root + `, "http": {"bodyIdleTimeout": "-1m"}}`, `http.bodyIdleTimeout: "-1m" is negative`},
		{"negative upload cap", `{` + root + `, "http": {"maxConcurrentUploads": -1}}`, "http.maxConcurrentUploads: must be 0 (no cap) or more"},
		{"upload cap not a number", `{` + root + `, "http": {"maxConcurrentUploads": "8"}}`, "http.maxConcurrentUploads: expected a whole number, got string"},
		{"negative gcInterval", `{"storage": {"rootDirectory": "/r", "gcInterval": "-1m"}}`, `storage.gcInterval: "-1m" is negative`},
		{"subpath without slash", `{"storage": {"rootDirectory": "/r", "subPaths": {"a": {"rootDirectory": "/a"}}}}`, `storage.subPaths.a: a subpath must be "/" and a repository name prefix`},
		{"subpath empty", `{"storage": {"rootDirectory": "/r", "subPaths": {"": {"rootDirectory": "/a"}}}}`, `storage.subPaths.: a subpath must be "/" and a repository name prefix`},
		{"subpath root only", `{"storage": {"rootDirectory": "/r", "subPaths": {"/": {"rootDirectory": "/a"}}}}`, `storage.subPaths./: a subpath must be "/" and a repository name prefix`},
		{"subpaths equal but for case", `{"storage": {"rootDirectory": "/r", "subPaths": {"/A": {"rootDirectory": "/a"}, "/a": {"rootDirectory": "/b"}}}}`, `storage.subPaths./a: the same subpath as another key once lower-cased`},
		{"subpath trailing slash", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a/": {"rootDirectory": "/a"}}}}`, `storage.subPaths./a/: a subpath must be "/" and a repository name prefix`},
		{"subpath root inside the default root", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/r/a"}}}}`, "storage.subPaths./a.rootDirectory: /r/a is inside storage.rootDirectory (/r)"},
		{"subpath roots nested", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/s"}, "/b": {"rootDirectory": "/s/b"}}}}`, "storage.subPaths./b.rootDirectory: /s/b is inside storage.subPaths./a.rootDirectory (/s)"},
		{"subpath roots identical", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/s"}, "/b": {"rootDirectory": "/s/"}}}}`, "storage.subPaths./b.rootDirectory: is the same directory as storage.subPaths./a.rootDirectory (/s)"},
		{"subpath without rootDirectory", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"gc": true}}}}`, "storage.subPaths./a.rootDirectory: required"},
		{"subpath in the default store", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/r/"}}}}`, "storage.subPaths./a.rootDirectory: is the same directory as storage.rootDirectory (/r)"},
		{"subpath negative gcDelay", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a", "gcDelay": -1}}}}`, "storage.subPaths./a.gcDelay: -1 is negative"},
		{"wrong type", `{"storage": {"rootDirectory": 5}}`, "storage.rootDirectory: expected a string, got number"},
		{"wrong bool", `{"storage": {"rootDirectory": "/r", "commit": "yes"}}`, "storage.commit: expected true or false, got string"},
		{"section not an object", `{"storage": []}`, "storage: expected an object, got a list"},
		{"storageDriver not an object", `{"storage": {"rootDirectory": "/r", "storageDriver": "s3"}}`, "storage.storageDriver: expected an object, got string"},
		{"subPaths not an object", `{"storage": {"rootDirectory": "/r", "subPaths": ["/a"]}}`, "storage.subPaths: expected an object, got a list"},
		{"config not an object", `[]`, "expected an object, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseError(t, tt.data); !strings.HasPrefix(got, tt.want) {
				t.Errorf("error %q, want it to start with %q", got, tt.want)
			}
		})
	}
}

func TestAllErrorsReported(t *testing.T) {
	_, _, err := Parse([]byte(`{"storage": {"rootDirectory": ""}, "http": {"port": "x", "address": ""}}`))

	for _, key := range []string{"storage.rootDirectory", "http.port", "http.address"} {
		if err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("error %v does not mention %s", err, key)
		}
	}

	var keyErr *KeyError
	if !errors.As(err, &keyErr) || keyErr.Key == "" {
		t.Errorf("errors.As(%v, *KeyError) found none with a key", err)
	}
}

func TestSyntaxErrorGivesPosition(t *testing.T) {
	got := parseError(t, "{\n  \"storage\": {\n    \"rootDirectory\": \"/r\",\n  }\n}")
	if !strings.HasPrefix(got, "line 4, column 3: ") {
		t.Errorf("error %q, want it to start with the line and column", got)
	}

	if got := parseError(t, "  \n"); got != "the configuration is empty" {
		t.Errorf("empty file: error %q", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.json")
	if _, _, err := Load(missing); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing file) error = %v, want one naming %s and matching os.ErrNotExist", err, missing)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"storage": {"rootDirectory": "/r", "gcDelay": "1x"}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), "config "+bad+": storage.gcDelay: ") {
		t.Errorf("Load(bad) error = %v, want one naming the file, then the key", err)
	}

	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(`{"storage": {"rootDirectory": "/r", "dedupe": true}, "extensions": {"search": {}}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	// Load passes Parse's warnings on: one for search, none for dedupe.
	cfg, warnings, err := Load(good)
	if err != nil || cfg.Storage.RootDirectory != "/r" || len(warnings) != 1 || warnings[0].Key != "extensions.search" {
		t.Errorf("Load(good) = %+v, %v, %v", cfg, warnings, err)
	}
}

func TestHTTPLimits(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"bodyIdleTimeout": "5m", "maxConcurrentUploads": 4}}`)
	if cfg.HTTP.BodyIdleTimeout != 5*time.Minute || cfg.HTTP.MaxConcurrentUploads != 4 {
		t.Errorf("limits = %v, %d", cfg.HTTP.BodyIdleTimeout, cfg.HTTP.MaxConcurrentUploads)
	}
	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"bodyIdleTimeout": 0, "maxConcurrentUploads": 0}}`)
	if cfg.HTTP.BodyIdleTimeout != 0 || cfg.HTTP.MaxConcurrentUploads != 0 {
		t.Errorf("0 turns the limits off; got %v, %d", cfg.HTTP.BodyIdleTimeout, cfg.HTTP.MaxConcurrentUploads)
	}
}

func TestSlogLevel(t *testing.T) {
	for _, level := range []string{"debug", "info", "warn", "error"} {
		got := LogConfig{Level: level}.SlogLevel().String()
		if !strings.EqualFold(got, level) {
			t.Errorf("SlogLevel(%q) = %s", level, got)
		}
	}
}
