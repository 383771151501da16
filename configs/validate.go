package configs

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pier-oci/pier/store/oci"
)

// distSpecVersionPattern matches the versions zot writes, e.g. "1.1.1" or
// "1.0.1-dev".
var distSpecVersionPattern = regexp.MustCompile(`^\d+\.\d+\.\d+(-.*)?$`)

// validate checks the values of a decoded file, before defaults are applied
// so that it can tell a key set to "" from an absent one. It reports every
// problem, not just the first.
func validate(f *fileConfig) error {
	var v validation

	if f.DistSpecVersion != nil && !distSpecVersionPattern.MatchString(*f.DistSpecVersion) {
		v.fail("distSpecVersion", "%q is not a version like \"1.1.1\"", *f.DistSpecVersion)
	}

	v.storage(f.Storage)
	v.http(f.HTTP)
	v.log(f.Log)

	if f.Extensions != nil {
		v.scrub(f.Extensions.Scrub)
	}

	return errors.Join(v.errs...)
}

type validation struct {
	errs []error
}

func (v *validation) fail(key, format string, args ...any) {
	v.errs = append(v.errs, &KeyError{Key: key, Message: fmt.Sprintf(format, args...)})
}

func (v *validation) storage(s *fileStorage) {
	if s == nil || s.RootDirectory == nil || *s.RootDirectory == "" {
		v.fail("storage.rootDirectory", "required: the directory images are stored in")

		return
	}

	roots := map[string]string{"storage.rootDirectory": absClean(*s.RootDirectory)}
	buckets := map[string]*S3Config{}
	if c := v.storageDriver("storage", s.StorageDriver); c != nil {
		buckets["storage"] = c
	}
	defer v.s3Roots(buckets)
	for _, name := range sortedKeys(s.SubPaths) {
		key := "storage.subPaths." + name
		if c := v.storageDriver(key, s.SubPaths[name].StorageDriver); c != nil {
			buckets[key] = c
		}
		if !strings.HasPrefix(name, "/") || oci.ValidateName(strings.TrimPrefix(name, "/")) != nil {
			v.fail(key, `a subpath must be "/" and a repository name prefix, like "/a" or "/team/app" (lower case, no trailing "/")`)
		}

		sub := s.SubPaths[name]
		if sub.RootDirectory == nil || *sub.RootDirectory == "" {
			v.fail(key+".rootDirectory", "required: the directory this subpath's images are stored in")

			continue
		}
		roots[key+".rootDirectory"] = absClean(*sub.RootDirectory)
	}

	// Two stores in one directory, or one inside another, would each
	// garbage-collect (and list as repositories) the other's files.
	keys := sortedKeys(roots)
	for i, a := range keys {
		for _, b := range keys[i+1:] {
			ra, rb := roots[a], roots[b]
			switch {
			case ra == rb:
				v.fail(b, "is the same directory as %s (%s)", a, ra)
			case within(ra, rb):
				v.fail(b, "%s is inside %s (%s)", rb, a, ra)
			case within(rb, ra):
				v.fail(b, "%s contains %s (%s)", rb, a, ra)
			}
		}
	}
}

// absClean makes a root directory comparable.
func absClean(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return filepath.Clean(dir)
}

// within reports whether dir lies below parent.
func within(parent, dir string) bool {
	rel, err := filepath.Rel(parent, dir)
	return err == nil && rel != "." && filepath.IsLocal(rel)
}

func (v *validation) http(h *fileHTTP) {
	if h == nil {
		return
	}

	if h.Address != nil {
		switch addr := *h.Address; {
		case addr == "":
			v.fail("http.address", "must not be empty (use \"0.0.0.0\" to listen on every interface)")
		case strings.Contains(addr, ":") && net.ParseIP(addr) == nil:
			// Hosts and IPv4 addresses have no colon; the likely mistake
			// is "host:port", which would not join with http.port.
			v.fail("http.address", "%q is not an address; put the port in http.port", addr)
		}
	}

	if h.Port != nil {
		if n, err := strconv.Atoi(string(*h.Port)); err != nil || n < 0 || n > 65535 {
			v.fail("http.port", "%q is not a port number (0 to 65535)", string(*h.Port))
		}
	}

	if h.TLS != nil {
		v.tls(h.TLS)
	}

	v.auth(h.Auth)
	v.limits(h)

	for _, c := range h.Compat {
		if !strings.EqualFold(c, "docker2s2") {
			v.fail("http.compat", "%q is not a compatibility mode (the only one is \"docker2s2\")", c)
		}
	}

	if h.BodyIdleTimeout != nil && *h.BodyIdleTimeout != 0 && time.Duration(*h.BodyIdleTimeout) < time.Second {
		// Deadlines move back once a second: less would cut moving bodies.
		v.fail("http.bodyIdleTimeout", "must be 0 (never cut) or at least 1s")
	}

	if h.MaxConcurrentUploads != nil && *h.MaxConcurrentUploads < 0 {
		v.fail("http.maxConcurrentUploads", "must be 0 (no cap) or more")
	}
}

func (v *validation) tls(t *fileTLS) {
	cert, key, ca := deref(t.Cert), deref(t.Key), deref(t.CACert)

	switch {
	case cert != "" && key == "":
		v.fail("http.tls.key", "required when http.tls.cert is set")
	case key != "" && cert == "":
		v.fail("http.tls.cert", "required when http.tls.key is set")
	case ca != "" && cert == "":
		v.fail("http.tls.cacert", "needs http.tls.cert and http.tls.key: client certificates are checked only over TLS")
	}
}

func (v *validation) log(l *fileLog) {
	if l == nil || l.Level == nil {
		return
	}

	if _, ok := logLevel(*l.Level); !ok {
		v.fail("log.level", "%q is not a log level (use debug, info, warn or error)", *l.Level)
	}
}

func (v *validation) scrub(s *fileScrub) {
	if s == nil {
		return
	}

	if s.MaxBytesPerSecond != nil && *s.MaxBytesPerSecond < 0 {
		v.fail("extensions.scrub.maxBytesPerSecond", "must be 0 (unthrottled) or more")
	}
}

// logLevel maps a level name as zot (zerolog) or pier spells it to pier's.
func logLevel(name string) (string, bool) {
	switch strings.ToLower(name) {
	case "trace", "debug":
		return "debug", true
	case "info":
		return "info", true
	case "warn":
		return "warn", true
	case "error", "fatal", "panic":
		return "error", true
	default:
		return "", false
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}

	return *p
}

// sortedKeys gives errors and results a stable order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}

	slices.Sort(keys)

	return keys
}
