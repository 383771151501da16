package configs

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func warningKeys(ws []Warning) map[string]bool {
	keys := map[string]bool{}
	for _, w := range ws {
		keys[w.Key] = true
	}

	return keys
}

func keyList(ws []Warning) []string {
	keys := []string{}
	for _, w := range ws {
		keys = append(keys, w.Key)
	}

	return keys
}

func TestWarningsOnlyForPresentKeysOncePerKey(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string // warning keys, in table order
	}{
		{"nothing unsupported", `{"storage": {"rootDirectory": "/r", "commit": true}, "http": {"compat": ["docker2s2"]}}`, nil},
		{"implemented storage keys", `{"storage": {"rootDirectory": "/r", "commit": true, "dedupe": true, "gc": true, "gcDelay": "1h", "gcInterval": "2h"}}`, nil},
		{"gc keys and retention silent, hydrateBlobOnRead beside them warned", `{"storage": {"rootDirectory": "/r", "gc": true, "gcDelay": "1h", "gcInterval": "2h", "retention": {"dryRun": true}, "hydrateBlobOnRead": false}}`,
			[]string{"storage.hydrateBlobOnRead"}},
		{"dedupe and remoteCache false silent", `{"storage": {"rootDirectory": "/r", "dedupe": false, "remoteCache": false}}`, nil},
		{"scrub is implemented", `{"storage": {"rootDirectory": "/r"}, "extensions": {"scrub": {"enable": true, "interval": "24h", "maxBytesPerSecond": 1}}}`, nil},
		{"extensions", `{"storage": {"rootDirectory": "/r"}, "extensions": {"ui": {}, "search": {"enable": true}, "scrub": {}}}`,
			[]string{"extensions.search", "extensions.ui"}},
		{"empty extensions section", `{"storage": {"rootDirectory": "/r"}, "extensions": {}}`, nil},
		{"http and log", `{"storage": {"rootDirectory": "/r"}, "http": {"ratelimit": {"rate": 1}, "externalURL": "x", "allowOrigin": "*"}, "log": {"audit": "/a.log"}}`,
			[]string{"http.externalURL", "http.allowOrigin"}},
		{"zot's web sessions and API keys", `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"htpasswd": {"path": "/p"}, "apikey": true, "sessionKeysFile": "k", "secureSession": true}}}`,
			[]string{"http.auth.apikey", "http.auth.sessionKeysFile", "http.auth.secureSession"}},
		{"zot build information", `{"storage": {"rootDirectory": "/r"}, "goVersion": "go1.22", "commit": "abc", "version": "0.1.0"}`,
			[]string{"version", "goVersion", "commit"}},
		{"scheduler", `{"storage": {"rootDirectory": "/r"}, "scheduler": {"numWorkers": 2}}`, []string{"scheduler"}},
		{"zot's hydrateBlobOnRead (examples/config-hydrate-blob-on-read.json)", `{"storage": {"rootDirectory": "/r", "hydrateBlobOnRead": true}}`,
			[]string{"storage.hydrateBlobOnRead"}},
		{"a remote cache is implemented", `{"storage": {"rootDirectory": "/r", "remoteCache": true, "cacheDriver": {"name": "redis"}}}`, nil},
		{"implemented subpath keys", `{"storage": {"rootDirectory": "/r", "readOnly": false, "subPaths": {"/a": {"rootDirectory": "/a", "commit": true, "dedupe": true, "gc": true, "gcDelay": "1h", "gcInterval": "2h", "readOnly": true}}}}`, nil},
		{"a subpath's unimplemented keys are warned as the storage section's", `{"storage": {"rootDirectory": "/r", "hydrateBlobOnRead": true, "subPaths": {
			"/b": {"rootDirectory": "/b", "remoteCache": false, "cacheDriver": {"name": "redis"}}, "/a": {"rootDirectory": "/a", "retention": {"dryRun": true}, "maxRepos": 5, "hydrateBlobOnRead": true}}}}`,
			[]string{"storage.hydrateBlobOnRead", "storage.subPaths./a.hydrateBlobOnRead", "storage.subPaths./b.cacheDriver"}},
		{"zot's old read-only, honoured", `{"storage": {"rootDirectory": "/r"}, "http": {"ReadOnly": true}}`, []string{"http.readOnly"}},
		{"zot's old read-only, false", `{"storage": {"rootDirectory": "/r"}, "http": {"readOnly": false}}`, []string{"http.readOnly"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warnings := mustParse(t, tt.data)

			if got := keyList(warnings); !slices.Equal(got, append([]string{}, tt.want...)) {
				t.Errorf("warning keys = %v, want %v", got, tt.want)
			}

			for _, w := range warnings {
				if w.Message == "" {
					t.Errorf("warning for %s has no message", w.Key)
				}
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"none", `{"storage": {"rootDirectory": "/r", "dedupe": true}}`, nil},
		{"htpasswd is served", `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"htpasswd": {"path": "p"}, "failDelay": 1}}}`, nil},
		{"bearer tokens are served", `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"bearer": {"realm": "https://t/token", "service": "s", "cert": "c"}}}}`, nil},
		{"access control is served", `{"storage": {"rootDirectory": "/r"}, "http": {"accessControl": {}}}`, nil},
		{"LDAP", `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"htpasswd": {"path": "p"}, "ldap": {"address": "l"}}}}`, []string{"http.auth.ldap"}},
		{"OpenID", `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"openid": {"providers": {}}}}}`, []string{"http.auth.openid"}},
		{"OIDC bearer tokens", `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"bearer": {"realm": "r", "service": "s", "oidc": {}}}}}`, []string{"http.auth.bearer.oidc"}},
		{"remote storage is implemented", `{"storage": {"rootDirectory": "/r", "storageDriver": {"name": "s3", "bucket": "bkt", "region": "us-east-1"}}}`, nil},
		{"subpaths are served", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a"}}}}`, nil},
		{"refusals in several subpaths, in order", `{"storage": {"rootDirectory": "/r", "subPaths": {"/b": {"rootDirectory": "/b", "storageDriver": {"name": "s3", "bucket": "bkt", "region": "r", "rootdirectory": "/b"}}, "/a": {"rootDirectory": "/a", "storageDriver": {"name": "s3", "bucket": "bkt", "region": "r", "rootdirectory": "/a"}}, "/c": {"rootDirectory": "/c"}}}, "http": {"auth": {"ldap": {}}}}`,
			[]string{"http.auth.ldap"}},
		{"remote storage in a subpath is implemented", `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a", "storageDriver": {"name": "s3", "bucket": "bkt", "region": "us-east-1"}}}}}`, nil},
		{"read-only is served", `{"storage": {"rootDirectory": "/r", "readOnly": true}}`, nil},
		{"zot's old read-only is served", `{"storage": {"rootDirectory": "/r"}, "http": {"ReadOnly": true}}`, nil},
		{"cluster", `{"storage": {"rootDirectory": "/r"}, "cluster": {"members": ["a:1", "b:1"]}}`, []string{"cluster"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warnings := mustParse(t, tt.data)
			refusals := cfg.Refusals()

			if got := keyList(refusals); !slices.Equal(got, append([]string{}, tt.want...)) {
				t.Errorf("refusal keys = %v, want %v", got, tt.want)
			}

			// A key is either a warning or a refusal, never both.
			warned := warningKeys(warnings)
			for _, r := range refusals {
				if warned[r.Key] {
					t.Errorf("%s is both a warning and a refusal", r.Key)
				}
			}
		})
	}
}

// pier has only its local BoltDB dedupe cache; the warning for zot's other
// caches must say which one pier uses.
func TestCacheWarningsNameTheLocalCache(t *testing.T) {
	for _, data := range []string{
		`{"storage": {"rootDirectory": "/r", "dedupe": true, "remoteCache": false, "cacheDriver": {"name": "redis"}}}`,
		`{"storage": {"rootDirectory": "/r", "dedupe": true, "remoteCache": true}}`,
	} {
		_, warnings := mustParse(t, data)
		if len(warnings) != 1 {
			t.Fatalf("%s: warnings %v, want one", data, warnings)
		}
		if !strings.Contains(warnings[0].Message, "BoltDB cache at <rootDirectory>/cache.db") {
			t.Errorf("%s: message %q does not name pier's cache", warnings[0].Key, warnings[0].Message)
		}
	}
}

func TestRefusalsReturnsACopy(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"auth": {"ldap": {}}}}`)

	cfg.Refusals()[0].Key = "changed"
	if cfg.Refusals()[0].Key != "http.auth.ldap" {
		t.Error("changing Refusals()'s result changed the Config")
	}
}

func TestReadOnly(t *testing.T) {
	cfg, _ := mustParse(t, `{"storage": {"rootDirectory": "/r"}, "http": {"readOnly": true}}`)
	if !cfg.Storage.ReadOnly {
		t.Error("zot's http.readOnly did not set Storage.ReadOnly")
	}

	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r", "readOnly": true}}`)
	if !cfg.Storage.ReadOnly {
		t.Error("storage.readOnly did not set Storage.ReadOnly")
	}

	// zot's http.readOnly is for the whole registry: every subpath too.
	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a"}}}, "http": {"readOnly": true}}`)
	if !cfg.Storage.SubPaths["/a"].ReadOnly {
		t.Error("http.readOnly did not make the subpath read-only")
	}
	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a", "readOnly": true}}}}`)
	if cfg.Storage.ReadOnly || !cfg.Storage.SubPaths["/a"].ReadOnly {
		t.Error("a subpath's readOnly is its own")
	}

	// http.readOnly covers every root, whatever each one says; false
	// changes none of them.
	cfg, warnings := mustParse(t, `{"storage": {"rootDirectory": "/r", "readOnly": false, "subPaths": {
		"/a": {"rootDirectory": "/a", "readOnly": false}, "/b": {"rootDirectory": "/b"}}}, "http": {"readOnly": true}}`)
	if !cfg.Storage.ReadOnly || !cfg.Storage.SubPaths["/a"].ReadOnly || !cfg.Storage.SubPaths["/b"].ReadOnly {
		t.Errorf("http.readOnly true: storage %v, /a %v, /b %v; want every root read-only",
			cfg.Storage.ReadOnly, cfg.Storage.SubPaths["/a"].ReadOnly, cfg.Storage.SubPaths["/b"].ReadOnly)
	}

	if len(cfg.Refusals()) != 0 || !slices.Equal(keyList(warnings), []string{"http.readOnly"}) ||
		!strings.Contains(warnings[0].Message, "storage.readOnly for every root") {
		t.Errorf("http.readOnly: refusals %v, warnings %v; want only a warning that it is honoured", cfg.Refusals(), warnings)
	}

	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r", "readOnly": true, "subPaths": {
		"/a": {"rootDirectory": "/a", "readOnly": true}, "/b": {"rootDirectory": "/b"}}}, "http": {"readOnly": false}}`)
	if !cfg.Storage.ReadOnly || !cfg.Storage.SubPaths["/a"].ReadOnly || cfg.Storage.SubPaths["/b"].ReadOnly {
		t.Errorf("http.readOnly false: storage %v, /a %v, /b %v; want each root's own setting",
			cfg.Storage.ReadOnly, cfg.Storage.SubPaths["/a"].ReadOnly, cfg.Storage.SubPaths["/b"].ReadOnly)
	}
}

// Every row of the table for a store key applies inside a subpath the same
// way: a remote storageDriver there is refused, a retention policy warned.
func TestStoreNoticesApplyInSubPaths(t *testing.T) {
	storeFields := fieldsOf(reflect.TypeFor[fileStore]())

	var checked int

	for _, n := range notices() {
		rest, ok := strings.CutPrefix(n.key, "storage.")
		if !ok {
			continue
		}

		f, ok := storeFields[strings.ToLower(rest)]
		if !ok {
			continue // a key of the storage section only, like fastRestart
		}

		// A value the field's type decodes.
		value := "1"
		switch reflect.TypeFor[fileStore]().FieldByIndex(f.index).Type.Kind() {
		case reflect.Map:
			value = `{"name": "s3", "bucket": "bkt", "region": "us-east-1"}` // a valid storageDriver or cacheDriver
		case reflect.Pointer:
			value = "true"
		}

		data := `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a", "` + rest + `": ` + value + `}}}}`
		cfg, warnings := mustParse(t, data)

		want := []string{"storage.subPaths./a." + rest}
		got, other := keyList(warnings), keyList(cfg.Refusals())
		if n.refuse {
			got, other = other, got
		}

		if !slices.Equal(got, want) || len(other) != 0 {
			t.Errorf("%s: warnings %v, refusals %v; want only %s as a %s", data, keyList(warnings), keyList(cfg.Refusals()), want[0],
				map[bool]string{true: "refusal", false: "warning"}[n.refuse])
		}

		checked++
	}

	if checked == 0 {
		t.Error("no store key in the table")
	}
}

func TestWarningString(t *testing.T) {
	w := Warning{Key: "extensions.search", Message: "accepted and ignored"}
	if got := w.String(); got != "extensions.search: accepted and ignored" {
		t.Errorf("String() = %q", got)
	}
}

type keyKind int

const (
	leaf     keyKind = iota // a value pier decodes
	freeForm                // decoded whole, anything below accepted
	section                 // an object walked key by key
)

// schemaKeys lists every key path of the schema with its kind. subPaths
// counts as a leaf: the names below it are data, not keys.
func schemaKeys(prefix string, t reflect.Type, keys map[string]keyKind) {
	for _, f := range fieldsOf(t) {
		path := joinKey(prefix, f.name)
		ft := t.FieldByIndex(f.index).Type

		switch {
		case isStructPointer(ft):
			keys[path] = section
			schemaKeys(path, ft.Elem(), keys)
		case ft == reflect.TypeFor[json.RawMessage](), ft == reflect.TypeFor[map[string]any]():
			keys[path] = freeForm
		default:
			keys[path] = leaf
		}
	}
}

func TestNoticesNameSchemaKeys(t *testing.T) {
	keys := map[string]keyKind{}
	schemaKeys("", reflect.TypeFor[fileConfig](), keys)

	seen := map[string]bool{}
	for _, n := range notices() {
		if _, ok := keys[n.key]; !ok {
			t.Errorf("notice for %q: no such key in the schema", n.key)
		}

		if seen[n.key] {
			t.Errorf("two notices for %q", n.key)
		}

		seen[n.key] = true

		if n.message == "" {
			t.Errorf("notice for %q has no message", n.key)
		}
	}

	// A free-form key without a notice would be taken silently, though pier
	// does nothing with it, unless pier reads what is below it itself.
	interpreted := map[string]bool{"storage.cacheDriver": true, "storage.storageDriver": true}
	for key, kind := range keys {
		if kind == freeForm && !seen[key] && !interpreted[key] {
			t.Errorf("free-form key %q has no notice", key)
		}
	}
}

// implementedKeys are the schema's keys that no notice covers: the ones
// pier acts on.
func implementedKeys() []string {
	keys := map[string]keyKind{}
	schemaKeys("", reflect.TypeFor[fileConfig](), keys)

	var implemented []string

	for key, kind := range keys {
		covered := kind == section

		for _, n := range notices() {
			if key == n.key || strings.HasPrefix(key, n.key+".") {
				covered = true
			}
		}

		if !covered {
			implemented = append(implemented, key)
		}
	}

	slices.Sort(implemented)

	return implemented
}

func TestImplementedKeys(t *testing.T) {
	// The brief for this package: what pier does have. Changing it means
	// changing the table in unsupported.go, README.md and example.json.
	want := []string{
		"distSpecVersion",
		"extensions.metrics.enable", "extensions.metrics.prometheus.path",
		"extensions.scrub.enable", "extensions.scrub.interval", "extensions.scrub.maxBytesPerSecond",
		"http.accessControl", "http.address",
		"http.auth.bearer.cert", "http.auth.bearer.realm", "http.auth.bearer.service",
		"http.auth.failDelay", "http.auth.htpasswd.path", "http.auth.mtls.identityAttributes",
		"http.bodyIdleTimeout", "http.compat", "http.idleTimeout", "http.maxConcurrentUploads", "http.maxManifestSize", "http.maxUploadSessions", "http.port",
		"http.ratelimit.methods", "http.ratelimit.rate", "http.readHeaderTimeout", "http.realm",
		"http.tls.cacert", "http.tls.cert", "http.tls.key", "http.uploadIdleTimeout",
		"log.audit", "log.level", "log.output",
		"storage.cacheDriver", "storage.commit", "storage.dedupe", "storage.gc", "storage.gcDelay", "storage.gcInterval", "storage.gcTimeWindow",
		"storage.maxRepos", "storage.quota.maxBytes", "storage.quota.minFreeSpace", "storage.quota.perRepository", "storage.quota.retentionOnLowSpace",
		"storage.readOnly", "storage.redirectBlobURL", "storage.remoteCache", "storage.retention.delay", "storage.retention.dryRun", "storage.retention.policies",
		"storage.rootDirectory", "storage.storageDriver", "storage.storeWideLookup", "storage.subPaths",
	}

	if got := implementedKeys(); !slices.Equal(got, want) {
		t.Errorf("implemented keys = %v, want %v", got, want)
	}
}
