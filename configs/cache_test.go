package configs

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func storeWith(keys string) string {
	return `{"storage": {"rootDirectory": "/r", "dedupe": true, ` + keys + `}}`
}

// Each root's index, as zot reads remoteCache and cacheDriver.
func TestCacheConfig(t *testing.T) {
	tests := []struct {
		name string
		data string
		want CacheConfig
	}{
		{"BoltDB by default", storeWith(`"gc": true`), CacheConfig{}},
		{"redis URL, zot's default prefix", storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "url": "redis://127.0.0.1:6379/2"}`),
			CacheConfig{Driver: "redis", Redis: &RedisConfig{URL: "redis://127.0.0.1:6379/2", KeyPrefix: "zot"}}},
		{"rediss cluster URL", storeWith(`"remoteCache": true, "cacheDriver": {"name": "Redis", "URL": "rediss://u:p@h1:6379?addr=h2:6379&addr=h3:6379", "KeyPrefix": "edge"}`),
			CacheConfig{Driver: "redis", Redis: &RedisConfig{URL: "rediss://u:p@h1:6379?addr=h2:6379&addr=h3:6379", KeyPrefix: "edge"}}},
		{"sentinel by keys, TLS", storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "addr": ["s1:26379", "s2:26379"],
			"master_name": "pier", "db": 1, "password": "pw", "sentinel_password": "spw", "dial_timeout": "2s", "max_retries": "2",
			"pool_size": 4, "route_randomly": false, "tls": true, "tls_cacert": "/etc/ca.pem", "context_timeout_enabled": false}`),
			CacheConfig{Driver: "redis", Redis: &RedisConfig{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "pier", DB: 1,
				Password: "pw", SentinelPassword: "spw", DialTimeout: 2 * time.Second, MaxRetries: 2, PoolSize: 4,
				TLS: true, TLSCACert: "/etc/ca.pem", KeyPrefix: "zot"}}},
		{"one addr as a string", storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "addr": "r:6379"}`),
			CacheConfig{Driver: "redis", Redis: &RedisConfig{Addrs: []string{"r:6379"}, KeyPrefix: "zot"}}},
		{"dynamodb", storeWith(`"remoteCache": true, "cacheDriver": {"name": "dynamodb", "endpoint": "http://127.0.0.1:4567", "region": "us-east-2", "cacheTablename": "ZotBlobTable"}`),
			CacheConfig{Driver: "dynamodb", DynamoDB: &DynamoDBConfig{Endpoint: "http://127.0.0.1:4567", Region: "us-east-2", TableName: "ZotBlobTable"}}},
		{"remoteCache false: BoltDB", storeWith(`"remoteCache": false, "cacheDriver": {"name": "redis", "url": "redis://r"}`), CacheConfig{}},
		{"dedupe off: none", `{"storage": {"rootDirectory": "/r", "dedupe": false, "remoteCache": true, "cacheDriver": {"name": "redis", "url": "redis://r"}}}`, CacheConfig{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := Parse([]byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Storage.Cache, tt.want) {
				t.Fatalf("cache = %+v %+v %+v\nwant    %+v %+v %+v", cfg.Storage.Cache, cfg.Storage.Cache.Redis, cfg.Storage.Cache.DynamoDB,
					tt.want, tt.want.Redis, tt.want.DynamoDB)
			}
		})
	}
}

// A subpath has its own index.
func TestSubPathCache(t *testing.T) {
	cfg, _, err := Parse([]byte(`{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a", "dedupe": true,
		"remoteCache": true, "cacheDriver": {"name": "redis", "url": "redis://r:6379", "keyprefix": "a"}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Storage.SubPaths["/a"].Cache; got.Driver != "redis" || got.Redis.KeyPrefix != "a" {
		t.Fatalf("subpath cache = %+v", got)
	}
	if cfg.Storage.Cache.Driver != "" {
		t.Fatalf("the default root took the subpath's cache: %+v", cfg.Storage.Cache)
	}
}

// Combinations that make no sense are errors naming the key.
func TestCacheConfigErrors(t *testing.T) {
	tests := []struct{ data, key, says string }{
		{storeWith(`"remoteCache": true, "cacheDriver": {"url": "redis://r"}`), "storage.cacheDriver.name", "required"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "boltdb"}`), "storage.cacheDriver.name", "not a remote cache driver"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "url": "http://r"}`), "storage.cacheDriver.url", "redis://"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "url": "redis://"}`), "storage.cacheDriver.url", "no host"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "db": "one"}`), "storage.cacheDriver.db", "whole number"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "db": 1.5}`), "storage.cacheDriver.db", "whole number"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "dial_timeout": "soon"}`), "storage.cacheDriver.dial_timeout", "duration"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "addr": [1]}`), "storage.cacheDriver.addr", "host:port"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "tls": true, "tls_cert": "c.pem"}`), "storage.cacheDriver.tls_cert", "go together"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "tls_cacert": "ca.pem"}`), "storage.cacheDriver.tls", "must be true"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "sentinel_password": "x"}`), "storage.cacheDriver.master_name", "required"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "dynamodb", "region": "eu-west-1"}`), "storage.cacheDriver.cacheTablename", "required"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "dynamodb", "cacheTablename": "T", "endpoint": "localhost:4567"}`), "storage.cacheDriver.endpoint", "http://"},
		{`{"storage": {"rootDirectory": "/r", "remoteCache": true, "cacheDriver": {"name": "redis", "url": "redis://r:6379"},
			"subPaths": {"/a": {"rootDirectory": "/a", "dedupe": true, "remoteCache": true, "cacheDriver": {"name": "redis", "url": "redis://r:6379"}}}}}`,
			"storage.subPaths./a.cacheDriver", "same index as storage.cacheDriver"},
	}
	for _, tt := range tests {
		_, _, err := Parse([]byte(tt.data))
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tt.key || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s\n  err = %v, want one on %s saying %q", tt.data, err, tt.key, tt.says)
		}
	}
}

// Keys pier ignores are warnings naming them.
func TestCacheConfigWarnings(t *testing.T) {
	tests := []struct{ data, key string }{
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "url": "redis://r", "addr": "x:1"}`), "storage.cacheDriver.addr"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "redis", "whatever": 1}`), "storage.cacheDriver.whatever"},
		{storeWith(`"remoteCache": true, "cacheDriver": {"name": "dynamodb", "cacheTablename": "T", "repoMetaTablename": "M"}`), "storage.cacheDriver.repoMetaTablename"},
		{`{"storage": {"rootDirectory": "/r", "dedupe": false, "remoteCache": true, "cacheDriver": {"name": "redis"}}}`, "storage.remoteCache"},
	}
	for _, tt := range tests {
		_, warnings, err := Parse([]byte(tt.data))
		if err != nil {
			t.Errorf("%s: %v", tt.data, err)
			continue
		}
		if len(warnings) != 1 || warnings[0].Key != tt.key {
			t.Errorf("%s\n  warnings = %v, want one on %s", tt.data, warnings, tt.key)
		}
	}
}
