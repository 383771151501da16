package configs

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestUnknownKeys(t *testing.T) {
	const root = `"storage": {"rootDirectory": "/r"}`

	tests := []struct {
		name string
		data string
		want string // the whole error
	}{
		{"top level", `{` + root + `, "storag": {}}`, `storag: unknown key (did you mean "storage"?)`},
		{"top level, nothing close", `{` + root + `, "registry": {}}`, `registry: unknown key`},
		{"storage", `{"storage": {"rootDirectory": "/r", "gcDelai": "1h"}}`, `storage.gcDelai: unknown key (did you mean "gcDelay"?)`},
		{"http", `{` + root + `, "http": {"adress": "::1"}}`, `http.adress: unknown key (did you mean "address"?)`},
		{"http.tls", `{` + root + `, "http": {"tls": {"certt": "c"}}}`, `http.tls.certt: unknown key (did you mean "cert"?)`},
		{"subPaths entry", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectry": "/a"}}}}`, `storage.subPaths./a.rootDirectry: unknown key (did you mean "rootDirectory"?)`},
		{"log", `{` + root + `, "log": {"levle": "info"}}`, `log.levle: unknown key (did you mean "level"?)`},
		{"extensions", `{` + root + `, "extensions": {"scrubber": {}}}`, `extensions.scrubber: unknown key`},
		{"extensions.scrub", `{` + root + `, "extensions": {"scrub": {"intervall": "1h"}}}`, `extensions.scrub.intervall: unknown key (did you mean "interval"?)`},
		{"keeps the file's spelling", `{` + root + `, "HTTP": {"TLS": {"Certificate": "c"}}}`, `http.tls.Certificate: unknown key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseError(t, tt.data); got != tt.want {
				t.Errorf("error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEveryUnknownKeyReported(t *testing.T) {
	got := parseError(t, `{"storage": {"rootDirectory": "/r", "x": 1, "subPaths": {"/a": {"rootDirectory": "/a", "y": 2}}}, "z": 3}`)

	for _, key := range []string{"storage.x: ", "storage.subPaths./a.y: ", "z: "} {
		if !strings.Contains(got, key+"unknown key") {
			t.Errorf("error %q does not report %s", got, key)
		}
	}
}

// Below a feature pier does not implement, any key is accepted, so a zot
// config never fails on a key pier's copy of zot's schema lacks.
func TestFreeFormSubtrees(t *testing.T) {
	cfg, _ := mustParse(t, `{
		"storage": {"rootDirectory": "/r",
			"storageDriver": {"name": "s3", "bucket": "bkt", "region": "us-east-1"},
			"cacheDriver": {"name": "redis", "whatever": true},
			"remoteCache": false},
		"http": {"auth": {"ldap": {"someFutureKey": {}}}, "externalURL": {"x": 1}},
		"extensions": {"sync": {"futureKey": 1}, "search": {"cve": {"trivy": {"x": 1}}}},
		"scheduler": {"numWorkers": 3, "other": 1},
		"cluster": {"members": [], "future": true}
	}`)

	if cfg.Storage.StorageDriver["bucket"] != "bkt" || cfg.Storage.CacheDriver["whatever"] != true {
		t.Errorf("StorageDriver = %v, CacheDriver = %v; want the file's maps", cfg.Storage.StorageDriver, cfg.Storage.CacheDriver)
	}

	if cfg.HTTP.Auth != nil {
		t.Errorf("Auth = %+v; LDAP alone is no login pier has", cfg.HTTP.Auth)
	}
}

func TestKeysMatchCaseInsensitively(t *testing.T) {
	cfg, warnings := mustParse(t, `{
		"DISTSPECVERSION": "1.0.1-dev",
		"Storage": {"ROOTDIRECTORY": "/r", "GCDELAY": "2h", "Commit": true, "DEDUPE": false, "RETENTION": {},
			"SUBPATHS": {"/a": {"rootdirectory": "/a", "GC": true}}},
		"HTTP": {"Address": "0.0.0.0", "PORT": "5000", "TLS": {"Cert": "c", "KEY": "k", "CACert": "ca"}},
		"Log": {"LEVEL": "WARN"},
		"Extensions": {"SCRUB": {"Interval": "2h", "MAXBYTESPERSECOND": 1}, "SEARCH": {}}
	}`)

	checks := []struct {
		name      string
		got, want any
	}{
		{"DistSpecVersion", cfg.DistSpecVersion, "1.0.1-dev"},
		{"RootDirectory", cfg.Storage.RootDirectory, "/r"},
		{"GCDelay", cfg.Storage.GCDelay, 2 * time.Hour},
		{"Commit", cfg.Storage.Commit, true},
		{"Dedupe", cfg.Storage.Dedupe, false},
		{"SubPaths[/a].GC", cfg.Storage.SubPaths["/a"].GC, true},
		{"Address", cfg.HTTP.Address, "0.0.0.0"},
		{"Port", cfg.HTTP.Port, "5000"},
		{"TLS.CACert", cfg.HTTP.TLS.CACert, "ca"},
		{"Level", cfg.Log.Level, "warn"},
		{"Scrub.Interval", cfg.Extensions.Scrub.Interval, 2 * time.Hour},
		{"Scrub.MaxBytesPerSecond", cfg.Extensions.Scrub.MaxBytesPerSecond, int64(1)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// Warnings name keys as pier documents them, not as the file spells
	// them; the implemented keys, however spelt, give none.
	if got := keyList(warnings); !slices.Equal(got, []string{"extensions.search"}) {
		t.Errorf("warning keys = %v, want [extensions.search]", got)
	}
}

func TestDuplicateKeys(t *testing.T) {
	tests := []struct {
		data string
		want string
	}{
		{`{"storage": {"rootDirectory": "/r", "gc": true, "GC": false}}`, `storage.GC: given twice (as "gc" and "GC"; keys match case-insensitively)`},
		{`{"storage": {"rootDirectory": "/r"}, "storage": {"rootDirectory": "/s"}}`, `storage: given twice (as "storage" and "storage"; keys match case-insensitively)`},
		{`{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a"}, "/a": {"rootDirectory": "/b"}}}}`, `storage.subPaths./a: given twice`},
	}
	for _, tt := range tests {
		if got := parseError(t, tt.data); got != tt.want {
			t.Errorf("error %q, want %q", got, tt.want)
		}
	}
}

func TestNullIsAbsent(t *testing.T) {
	cfg, warnings := mustParse(t, `{"storage": {"rootDirectory": "/r", "gc": null, "gcInterval": null, "dedupe": null}, "http": {"port": null, "auth": null}}`)

	if !cfg.Storage.GC || cfg.Storage.GCInterval != time.Hour || cfg.HTTP.Port != "8080" || cfg.HTTP.Auth != nil {
		t.Errorf("null values did not leave defaults: %+v", cfg)
	}

	if len(warnings) != 0 || len(cfg.Refusals()) != 0 {
		t.Errorf("null keys gave warnings %v, refusals %v", warnings, cfg.Refusals())
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "ab", 2}, {"gcdelay", "gcdelai", 1},
		{"rootdirectry", "rootdirectory", 1}, {"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
