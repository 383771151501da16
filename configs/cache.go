package configs

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CacheConfig is the dedupe index of one root: pier's BoltDB file
// <rootDirectory>/cache.db, or, with remoteCache true, the Redis or
// DynamoDB index cacheDriver names (zot's keys, read as zot reads them).
type CacheConfig struct {
	// Driver is "" for the BoltDB file, else "redis" or "dynamodb".
	Driver   string
	Redis    *RedisConfig    // when Driver is "redis"
	DynamoDB *DynamoDBConfig // when Driver is "dynamodb"
}

// RedisConfig is cacheDriver for "redis". With URL set, the other
// connection keys are not read, as in zot.
type RedisConfig struct {
	// URL is a redis:// or rediss:// URL (go-redis's form); one with addr
	// query parameters names a cluster's nodes.
	URL string
	// KeyPrefix comes before every key (zot's keyprefix). Default "zot".
	KeyPrefix string

	// The connection as zot's individual keys (pkg/api/config/redis):
	// one address is one server, several a cluster, and master_name
	// makes them sentinels.
	Addrs            []string
	MasterName       string
	DB               int
	Protocol         int
	ClientName       string
	Username         string
	Password         string
	SentinelUsername string
	SentinelPassword string
	MaxRetries       int
	MinRetryBackoff  time.Duration
	MaxRetryBackoff  time.Duration
	DialTimeout      time.Duration
	ReadTimeout      time.Duration
	WriteTimeout     time.Duration
	PoolFIFO         bool
	PoolSize         int
	PoolTimeout      time.Duration
	MinIdleConns     int
	MaxIdleConns     int
	MaxActiveConns   int
	ConnMaxIdleTime  time.Duration
	ConnMaxLifetime  time.Duration
	MaxRedirects     int
	ReadOnly         bool
	RouteByLatency   bool
	RouteRandomly    bool
	DisableIdentity  bool
	IdentitySuffix   string
	UnstableResp3    bool

	// TLS turns TLS on for the individual keys (pier's keys: zot has TLS
	// only through a rediss:// URL). The files are PEM; TLSCACert adds a
	// CA to the system's, TLSCert and TLSKey are a client certificate.
	TLS           bool
	TLSCACert     string
	TLSCert       string
	TLSKey        string
	TLSServerName string
}

// DynamoDBConfig is cacheDriver for "dynamodb". Credentials come from the
// AWS SDK's usual places (environment, shared files), as in zot.
type DynamoDBConfig struct {
	Endpoint  string // empty: AWS's own
	Region    string // empty: from the environment
	TableName string // zot's cacheTablename
}

// redisKey describes one key of a redis cacheDriver: its name as zot
// spells it, and where its value goes.
type redisKey struct {
	name string
	set  func(r *RedisConfig, v any) error
}

func str(f func(*RedisConfig) *string) func(*RedisConfig, any) error {
	return func(r *RedisConfig, v any) error {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s is not a string", show(v))
		}
		*f(r) = s
		return nil
	}
}

func integer(f func(*RedisConfig) *int) func(*RedisConfig, any) error {
	return func(r *RedisConfig, v any) error {
		var n int64
		var err error
		switch v := v.(type) {
		case float64:
			n = int64(v)
			if float64(n) != v {
				err = errors.New("not whole")
			}
		case string: // zot's decoder (spf13/cast) took "3" too
			n, err = strconv.ParseInt(v, 10, 64)
		default:
			err = errors.New("not a number")
		}
		if err != nil || n < 0 {
			return fmt.Errorf("%s is not a whole number of 0 or more", show(v))
		}
		*f(r) = int(n)
		return nil
	}
}

func boolean(f func(*RedisConfig) *bool) func(*RedisConfig, any) error {
	return func(r *RedisConfig, v any) error {
		switch v := v.(type) {
		case bool:
			*f(r) = v
		case string:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s is not true or false", show(v))
			}
			*f(r) = b
		default:
			return fmt.Errorf("%s is not true or false", show(v))
		}
		return nil
	}
}

func dur(f func(*RedisConfig) *time.Duration) func(*RedisConfig, any) error {
	return func(r *RedisConfig, v any) error {
		var d time.Duration
		var err error
		switch v := v.(type) {
		case string:
			d, err = time.ParseDuration(v)
		case float64: // nanoseconds, as zot's decoder took them
			d = time.Duration(v)
		default:
			err = errors.New("not a duration")
		}
		if err != nil || d < 0 {
			return fmt.Errorf("%s is not a duration %s", show(v), durationHint)
		}
		*f(r) = d
		return nil
	}
}

func show(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// redisKeys are the keys of a redis cacheDriver, zot's and pier's.
var redisKeys = []redisKey{
	{"url", str(func(r *RedisConfig) *string { return &r.URL })},
	{"keyprefix", str(func(r *RedisConfig) *string { return &r.KeyPrefix })},
	{"addr", func(r *RedisConfig, v any) error {
		switch v := v.(type) {
		case string:
			r.Addrs = []string{v}
		case []any:
			for _, a := range v {
				s, ok := a.(string)
				if !ok || s == "" {
					return fmt.Errorf("%s is not a host:port", show(a))
				}
				r.Addrs = append(r.Addrs, s)
			}
		default:
			return fmt.Errorf("%s is not a host:port or a list of them", show(v))
		}
		return nil
	}},
	{"master_name", str(func(r *RedisConfig) *string { return &r.MasterName })},
	{"db", integer(func(r *RedisConfig) *int { return &r.DB })},
	{"protocol", integer(func(r *RedisConfig) *int { return &r.Protocol })},
	{"client_name", str(func(r *RedisConfig) *string { return &r.ClientName })},
	{"username", str(func(r *RedisConfig) *string { return &r.Username })},
	{"password", str(func(r *RedisConfig) *string { return &r.Password })},
	{"sentinel_username", str(func(r *RedisConfig) *string { return &r.SentinelUsername })},
	{"sentinel_password", str(func(r *RedisConfig) *string { return &r.SentinelPassword })},
	{"max_retries", integer(func(r *RedisConfig) *int { return &r.MaxRetries })},
	{"min_retry_backoff", dur(func(r *RedisConfig) *time.Duration { return &r.MinRetryBackoff })},
	{"max_retry_backoff", dur(func(r *RedisConfig) *time.Duration { return &r.MaxRetryBackoff })},
	{"dial_timeout", dur(func(r *RedisConfig) *time.Duration { return &r.DialTimeout })},
	{"read_timeout", dur(func(r *RedisConfig) *time.Duration { return &r.ReadTimeout })},
	{"write_timeout", dur(func(r *RedisConfig) *time.Duration { return &r.WriteTimeout })},
	{"context_timeout_enabled", func(*RedisConfig, any) error { return nil }}, // always on in pier: every call has a deadline
	{"pool_fifo", boolean(func(r *RedisConfig) *bool { return &r.PoolFIFO })},
	{"pool_size", integer(func(r *RedisConfig) *int { return &r.PoolSize })},
	{"pool_timeout", dur(func(r *RedisConfig) *time.Duration { return &r.PoolTimeout })},
	{"min_idle_conns", integer(func(r *RedisConfig) *int { return &r.MinIdleConns })},
	{"max_idle_conns", integer(func(r *RedisConfig) *int { return &r.MaxIdleConns })},
	{"max_active_conns", integer(func(r *RedisConfig) *int { return &r.MaxActiveConns })},
	{"conn_max_idle_time", dur(func(r *RedisConfig) *time.Duration { return &r.ConnMaxIdleTime })},
	{"conn_max_lifetime", dur(func(r *RedisConfig) *time.Duration { return &r.ConnMaxLifetime })},
	{"max_redirects", integer(func(r *RedisConfig) *int { return &r.MaxRedirects })},
	{"read_only", boolean(func(r *RedisConfig) *bool { return &r.ReadOnly })},
	{"route_by_latency", boolean(func(r *RedisConfig) *bool { return &r.RouteByLatency })},
	{"route_randomly", boolean(func(r *RedisConfig) *bool { return &r.RouteRandomly })},
	{"disable_identity", boolean(func(r *RedisConfig) *bool { return &r.DisableIdentity })},
	{"identity_suffix", str(func(r *RedisConfig) *string { return &r.IdentitySuffix })},
	{"unstable_resp3", boolean(func(r *RedisConfig) *bool { return &r.UnstableResp3 })},
	{"tls", boolean(func(r *RedisConfig) *bool { return &r.TLS })},
	{"tls_cacert", str(func(r *RedisConfig) *string { return &r.TLSCACert })},
	{"tls_cert", str(func(r *RedisConfig) *string { return &r.TLSCert })},
	{"tls_key", str(func(r *RedisConfig) *string { return &r.TLSKey })},
	{"tls_server_name", str(func(r *RedisConfig) *string { return &r.TLSServerName })},
}

// zotMetaTables are dynamodb keys of zot's metadata (search, auth): pier
// has no such features and leaves them alone.
var zotMetaTables = []string{"userdatatablename", "apikeytablename", "repometatablename", "imagemetatablename",
	"repoblobsinfotablename", "versiontablename"}

// resolveCaches works out each root's dedupe index from its dedupe,
// remoteCache and cacheDriver keys, after resolve. It returns the
// warnings for keys it ignores and the errors, naming the key, for
// combinations that make no sense.
func resolveCaches(f *fileConfig, cfg *Config) ([]Warning, error) {
	var v validation
	var warnings []Warning
	warn := func(key, format string, args ...any) {
		warnings = append(warnings, Warning{Key: key, Message: fmt.Sprintf(format, args...)})
	}
	seen := map[string]string{} // index identity → the key that named it first

	one := func(key string, fs *fileStore, sc *StoreConfig) {
		if fs == nil {
			return
		}
		raw := lowerKeys(fs.CacheDriver)
		switch {
		case !sc.RemoteCache && fs.CacheDriver != nil:
			warn(key+".cacheDriver", "ignored: remoteCache is false, so pier uses its BoltDB cache at <rootDirectory>/cache.db (as zot does)")
			return
		case !sc.RemoteCache:
			return
		case !sc.Dedupe:
			if fs.CacheDriver != nil || fs.RemoteCache != nil {
				warn(key+".remoteCache", "ignored: dedupe is off for this root, so it has no dedupe index")
			}
			return
		case fs.CacheDriver == nil:
			// zot runs such a root without a dedupe index (its own
			// examples do this); pier keeps its BoltDB file.
			warn(key+".remoteCache", "true, but no cacheDriver names a remote index: pier uses its BoltDB cache at <rootDirectory>/cache.db")
			return
		}
		name, _ := raw["name"].value.(string)
		switch strings.ToLower(name) {
		case "redis":
			sc.Cache = CacheConfig{Driver: "redis", Redis: redisConfig(&v, warn, key+".cacheDriver", raw)}
		case "dynamodb":
			sc.Cache = CacheConfig{Driver: "dynamodb", DynamoDB: dynamoConfig(&v, warn, key+".cacheDriver", raw)}
		case "":
			v.fail(key+".cacheDriver.name", "required: redis or dynamodb")
			return
		default:
			v.fail(key+".cacheDriver.name", "%q is not a remote cache driver (use redis or dynamodb; for BoltDB set remoteCache to false)", name)
			return
		}
		if id := sc.Cache.identity(); id != "" {
			if other, ok := seen[id]; ok {
				v.fail(key+".cacheDriver", "is the same index as %s: two roots would mix their entries; give this one another keyprefix (redis) or cacheTablename (dynamodb)", other)
			}
			seen[id] = key + ".cacheDriver"
		}
	}

	if f.Storage != nil {
		one("storage", &f.Storage.fileStore, &cfg.Storage.StoreConfig)
		for _, name := range sortedKeys(f.Storage.SubPaths) {
			sub := cfg.Storage.SubPaths[name]
			one("storage.subPaths."+name, f.Storage.SubPaths[name], &sub)
			cfg.Storage.SubPaths[name] = sub
		}
	}
	return warnings, errors.Join(v.errs...)
}

// rawValue is a cacheDriver value and its key as the file spells it.
type rawValue struct {
	key   string
	value any
}

// lowerKeys indexes a cacheDriver by lower-cased key, as zot's viper
// reads it.
func lowerKeys(m map[string]any) map[string]rawValue {
	out := map[string]rawValue{}
	for k, v := range m {
		out[strings.ToLower(k)] = rawValue{key: k, value: v}
	}
	return out
}

func redisConfig(v *validation, warn func(string, string, ...any), key string, raw map[string]rawValue) *RedisConfig {
	r := &RedisConfig{}
	known := map[string]bool{"name": true}
	for _, k := range redisKeys {
		known[k.name] = true
		rv, ok := raw[k.name]
		if !ok {
			continue
		}
		if err := k.set(r, rv.value); err != nil {
			v.fail(key+"."+rv.key, "%v", err)
		}
	}
	for _, k := range slices.Sorted(mapKeys(raw)) {
		if !known[k] {
			warn(key+"."+raw[k].key, "unknown redis cacheDriver key; ignored")
		}
	}
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		switch {
		case err != nil:
			v.fail(key+".url", "not a URL: %v", err)
		case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
			v.fail(key+".url", "%q is not a redis://, rediss:// or unix:// URL", u.Scheme+"://")
		case u.Scheme != "unix" && u.Host == "":
			v.fail(key+".url", "names no host")
		}
		for _, k := range []string{"addr", "master_name", "db", "username", "password", "tls", "tls_cacert", "tls_cert", "tls_key"} {
			if rv, ok := raw[k]; ok {
				warn(key+"."+rv.key, "ignored: url is set, and the URL says how to connect (as in zot)")
			}
		}
	}
	if (r.TLSCert == "") != (r.TLSKey == "") {
		v.fail(key+".tls_cert", "tls_cert and tls_key go together")
	}
	if !r.TLS && (r.TLSCACert != "" || r.TLSCert != "" || r.TLSServerName != "") && r.URL == "" {
		v.fail(key+".tls", "must be true when other tls_ keys are set")
	}
	if r.MasterName == "" && (r.SentinelUsername != "" || r.SentinelPassword != "") {
		v.fail(key+".master_name", "required with sentinel_username or sentinel_password: it names the master the sentinels watch")
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = "zot"
	}
	return r
}

func dynamoConfig(v *validation, warn func(string, string, ...any), key string, raw map[string]rawValue) *DynamoDBConfig {
	d := &DynamoDBConfig{}
	fields := map[string]*string{"endpoint": &d.Endpoint, "region": &d.Region, "cachetablename": &d.TableName}
	for _, k := range slices.Sorted(mapKeys(raw)) {
		rv := raw[k]
		switch {
		case k == "name":
		case fields[k] != nil:
			s, ok := rv.value.(string)
			if !ok {
				v.fail(key+"."+rv.key, "%s is not a string", show(rv.value))
				continue
			}
			*fields[k] = s
		case slices.Contains(zotMetaTables, k):
			warn(key+"."+rv.key, "ignored: a table of zot's metadata (search, users, API keys), which pier does not have")
		default:
			warn(key+"."+rv.key, "unknown dynamodb cacheDriver key; ignored")
		}
	}
	if d.TableName == "" {
		v.fail(key+".cacheTablename", "required: the table of the dedupe index (zot's example calls it ZotBlobTable)")
	}
	if d.Endpoint != "" {
		if u, err := url.Parse(d.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.fail(key+".endpoint", "%q is not an http:// or https:// URL", d.Endpoint)
		}
	}
	return d
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// identity names the index a config reaches, to find two roots sharing
// one; "" when it cannot tell.
func (c CacheConfig) identity() string {
	switch {
	case c.Redis != nil:
		where := c.Redis.URL
		if where == "" {
			addrs := slices.Clone(c.Redis.Addrs)
			slices.Sort(addrs)
			where = fmt.Sprintf("%v/%d/%s", addrs, c.Redis.DB, c.Redis.MasterName)
		}
		return "redis " + where + " " + c.Redis.KeyPrefix
	case c.DynamoDB != nil:
		return "dynamodb " + c.DynamoDB.Endpoint + " " + c.DynamoDB.Region + " " + c.DynamoDB.TableName
	}
	return ""
}
