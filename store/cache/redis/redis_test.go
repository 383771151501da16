package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	goredis "github.com/redis/go-redis/v9"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/cachetest"
)

// The servers come from test/services/redis.sh.
func env(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run the tests under test/services.sh (make test does), which starts Redis", name)
	}
	return v
}

// clients returns a way to connect to each kind of deployment.
func deployments(t testing.TB) map[string]func() goredis.UniversalClient {
	single := env(t, "PIER_TEST_REDIS")
	cluster := strings.Split(env(t, "PIER_TEST_REDIS_CLUSTER"), ",")
	master, sentinel, _ := strings.Cut(env(t, "PIER_TEST_REDIS_SENTINEL"), "@")
	return map[string]func() goredis.UniversalClient{
		"single": func() goredis.UniversalClient {
			return goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{single}, ContextTimeoutEnabled: true})
		},
		"cluster": func() goredis.UniversalClient {
			return goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: cluster, ContextTimeoutEnabled: true})
		},
		"sentinel": func() goredis.UniversalClient {
			return goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{sentinel}, MasterName: master, ContextTimeoutEnabled: true})
		},
	}
}

func randomPrefix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "pier-test-" + hex.EncodeToString(b)
}

// emptyPrefix deletes every key of prefix: what a FLUSHALL does to one
// index, without touching the other tests' keys on the shared server.
func emptyPrefix(t *testing.T, c goredis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	del := func(ctx context.Context, node *goredis.Client) error {
		iter := node.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := node.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	var err error
	switch c := c.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, del)
	case *goredis.Client:
		err = del(ctx, c)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestCacheSuite(t *testing.T) {
	for name, connect := range deployments(t) {
		t.Run(name, func(t *testing.T) {
			cachetest.Run(t, cachetest.Backend{
				New: func(t *testing.T) cache.Cache {
					c := New(Options{Client: connect(), KeyPrefix: randomPrefix()})
					if c.cluster != (name == "cluster") {
						t.Fatalf("%s: cluster mode = %v", name, c.cluster)
					}
					return c
				},
				Replica: func(t *testing.T, c cache.Cache) cache.Cache {
					return New(Options{Client: connect(), KeyPrefix: c.(*Cache).prefix})
				},
				Empty: func(t *testing.T, c cache.Cache) {
					emptyPrefix(t, c.(*Cache).c, c.(*Cache).prefix)
				},
				Down: func(t *testing.T) cache.Cache {
					return New(Options{Client: goredis.NewUniversalClient(&goredis.UniversalOptions{
						Addrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true,
					})})
				},
			})
		})
	}
}

// The keys are zot's: an index zot wrote is read, and what pier writes
// zot would read.
func TestZotKeyLayout(t *testing.T) {
	ctx := context.Background()
	for name, connect := range deployments(t) {
		t.Run(name, func(t *testing.T) {
			rc := connect()
			prefix := randomPrefix()
			c := New(Options{Client: connect(), KeyPrefix: prefix})
			defer c.Close()
			defer rc.Close()
			d := digest.FromString("zot wrote this")
			p := func(repo string) string { return repo + "/blobs/sha256/" + d.Encoded() }
			rc.HSet(ctx, prefix+":blobs:original", d.String(), p("zot/b"))
			rc.SAdd(ctx, prefix+":blobs:duplicates:"+d.String(), p("zot/a"), p("zot/b"))
			got, err := c.Paths(ctx, d)
			if err != nil || strings.Join(got, " ") != p("zot/b")+" "+p("zot/a") {
				t.Fatalf("paths = %q, %v", got, err)
			}
			e := digest.FromString("pier wrote this")
			if err := c.Apply(ctx, []cache.Op{{Digest: e, Path: p("pier/x")}, {Digest: e, Path: p("pier/y")}}); err != nil {
				t.Fatal(err)
			}
			if o := rc.HGet(ctx, prefix+":blobs:original", e.String()).Val(); o != p("pier/x") {
				t.Fatalf("original in zot's hash = %q", o)
			}
			if n := rc.SCard(ctx, prefix+":blobs:duplicates:"+e.String()).Val(); n != 2 {
				t.Fatalf("%d paths in zot's set, want 2", n)
			}
			// The default prefix is zot's.
			if New(Options{Client: rc}).prefix != "zot" {
				t.Fatal("the default key prefix is not zot's")
			}
		})
	}
}

// With remote storage zot records the storage root before each path;
// PathPrefix writes and reads that form.
func TestPathPrefix(t *testing.T) {
	ctx := context.Background()
	connect := deployments(t)["single"]
	prefix := randomPrefix()
	c := New(Options{Client: connect(), KeyPrefix: prefix, PathPrefix: "/zot/"})
	defer c.Close()
	d := digest.FromString("on s3")
	rel := "app/blobs/sha256/" + d.Encoded()
	if err := c.Apply(ctx, []cache.Op{{Digest: d, Path: rel}}); err != nil {
		t.Fatal(err)
	}
	rc := connect()
	defer rc.Close()
	if o := rc.HGet(ctx, prefix+":blobs:original", d.String()).Val(); o != "/zot/"+rel {
		t.Fatalf("stored %q, want zot's form /zot/%s", o, rel)
	}
	if got, _ := c.Paths(ctx, d); len(got) != 1 || got[0] != rel {
		t.Fatalf("paths = %q, want the relative path", got)
	}
}

func BenchmarkApply(b *testing.B) {
	for name, connect := range deployments(b) {
		b.Run(name, func(b *testing.B) {
			c := New(Options{Client: connect(), KeyPrefix: randomPrefix()})
			defer c.Close()
			cachetest.BenchApply(b, c)
		})
	}
}
