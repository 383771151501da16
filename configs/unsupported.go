package configs

import (
	"reflect"
	"strings"
)

// Warning is a note about one key of the configuration file: pier read it
// but does not act on it (from Parse), or cannot serve while it is set (from
// Config.Refusals).
type Warning struct {
	// Key is the dotted path of the key, e.g. "extensions.search".
	Key string
	// Message says what pier does about the key, and why.
	Message string
}

// String returns "key: message".
func (w Warning) String() string {
	return w.Key + ": " + w.Message
}

// notice is one row of the table of keys pier reads but does not act on.
type notice struct {
	// key is the dotted path, spelled as in fileConfig's json tags. A row
	// for a key every store has (storage.storageDriver) covers that key in
	// each subpath too (storage.subPaths./a.storageDriver): see classify.
	key string
	// refuse marks keys that would be unsafe to ignore: they change who may
	// write, or where data goes. Parse still succeeds; Refusals lists them.
	refuse  bool
	message string
}

// notices is the table of keys pier accepts without having their feature,
// plus http.readOnly, which it honours as its own storage.readOnly. When pier
// gains a feature, delete its rows. A key that is not here and not free-form
// in schema.go is one pier implements.
func notices() []notice {
	const (
		notYet  = "accepted; not active yet"
		ignored = "accepted and ignored"
	)

	return []notice{
		// Refusals: serving while ignoring these would expose or misplace data.
		{key: "http.auth.ldap", refuse: true, message: "LDAP login is not implemented (pier has htpasswd, bearer tokens and client certificates); serving would let no LDAP user in, or, without other logins, anyone"},
		{key: "http.auth.openid", refuse: true, message: "OpenID login is not implemented (pier has htpasswd, bearer tokens and client certificates); serving would let no OpenID user in, or, without other logins, anyone"},
		{key: "http.auth.bearer.oidc", refuse: true, message: "OIDC workload tokens are not implemented (pier verifies tokens signed with http.auth.bearer.cert)"},
		{key: "http.auth.bearer.awsSecretsManager", refuse: true, message: "token keys from AWS Secrets Manager are not implemented (pier verifies tokens signed with http.auth.bearer.cert)"},
		{key: "http.auth.bearer.upstreamTokenEndpoint", refuse: true, message: "token exchange is not implemented (pier verifies tokens signed with http.auth.bearer.cert)"},
		{key: "cluster", refuse: true, message: "scale-out clustering is not implemented; serving would store repositories that belong to other members here"},

		// Warnings: ignoring these changes no access and moves no data.
		{key: "http.readOnly", message: "zot's older key; honoured as storage.readOnly for every root"},
		{key: "version", message: ignored + " (zot's name for distSpecVersion before v1.0)"},
		{key: "goVersion", message: ignored + " (zot build information)"},
		{key: "commit", message: ignored + " (zot build information)"},
		{key: "releaseTag", message: ignored + " (zot build information)"},
		{key: "binaryType", message: ignored + " (zot build information)"},

		{key: "storage.gcMaxSchedulerDelay", message: ignored + " (zot scheduler tuning)"},
		{key: "storage.fastRestart", message: ignored + " (zot startup tuning)"},
		{key: "storage.hydrateBlobOnRead", message: ignored + ": a read never copies a blob in from another repository (reads have no side effects); mount or push it"},

		{key: "http.auth.apikey", message: ignored + ": API keys are not implemented; their holders cannot log in"},
		{key: "http.auth.sessionKeysFile", message: ignored + " (zot's web sessions; pier has no web interface)"},
		{key: "http.auth.sessionDriver", message: ignored + " (zot's web sessions; pier has no web interface)"},
		{key: "http.auth.secureSession", message: ignored + " (zot's web sessions; pier has no web interface)"},
		{key: "http.externalURL", message: ignored + " (used by zot's login redirects)"},
		{key: "http.allowOrigin", message: notYet + ": no CORS headers are sent"},
		{key: "http.readTimeout", message: notYet + ": pier's own server timeouts apply"},
		{key: "http.writeTimeout", message: notYet + ": pier's own server timeouts apply"},
		{key: "http.allowReadAccess", message: ignored + " (zot's older anonymous read switch): anonymous clients read only what http.accessControl's anonymousPolicy allows"},

		{key: "extensions.search", message: ignored + ": pier has no search extension"},
		{key: "extensions.sync", message: ignored + ": pier does not mirror other registries"},
		{key: "extensions.lint", message: ignored + ": pushes are not checked for mandatory annotations"},
		{key: "extensions.ui", message: ignored + ": pier has no web interface"},
		{key: "extensions.mgmt", message: ignored + " (zot ignores it too)"},
		{key: "extensions.apikey", message: ignored + " (zot ignores it too)"},
		{key: "extensions.trust", message: ignored + ": signatures are stored but not verified"},
		{key: "extensions.events", message: ignored + ": pier sends no events"},
		{key: "extensions.quota", message: ignored + ": storage.maxRepos limits the number of repositories, storage.quota their bytes"},
		{key: "extensions.metadata", message: ignored + " (zot release-candidate setting)"},

		{key: "scheduler", message: ignored + ": pier schedules its own background work"},
	}
}

// classify returns the notices that apply to a file, given the key paths
// present in it, split into warnings and refusals. Both are in table order.
// A subpath is a store with the storage section's keys, so a row for one of
// them applies to each subpath too, named with the subpath's path
// (storage.subPaths./a.storageDriver), after the storage section's key and
// in subpath order.
func classify(f *fileConfig, present map[string]bool) (warnings, refusals []Warning) {
	var subs []string
	if f.Storage != nil {
		for _, name := range sortedKeys(f.Storage.SubPaths) {
			subs = append(subs, "storage.subPaths."+name+".")
		}
	}

	for _, n := range notices() {
		keys := []string{n.key}
		if rest, ok := strings.CutPrefix(n.key, "storage."); ok && isStoreKey(rest) {
			for _, sub := range subs {
				keys = append(keys, sub+rest)
			}
		}

		for _, key := range keys {
			if !present[key] {
				continue
			}

			w := Warning{Key: key, Message: n.message}
			if n.refuse {
				refusals = append(refusals, w)
			} else {
				warnings = append(warnings, w)
			}
		}
	}

	return warnings, refusals
}

// isStoreKey reports whether name, spelled as in its json tag, is a key of
// every store: of the storage section and of each subPaths entry alike.
func isStoreKey(name string) bool {
	f, ok := fieldsOf(reflect.TypeFor[fileStore]())[strings.ToLower(name)]

	return ok && f.name == name
}
