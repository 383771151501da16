// Package redis is the dedupe index in Redis (one server, a sentinel-run
// master, or a cluster), in zot's key layout so that a zot deployment's
// index carries over, and shared by every pier that names the same
// server and key prefix:
//
//	<prefix>:blobs:original               hash: digest → the original's path
//	<prefix>:blobs:duplicates:<digest>    set: every path of digest, the original included
//	<prefix>:pier:complete                pier's mark of a full build; zot ignores it
//
// Paths are as zot writes them: relative to the root for a local root
// (pier's own form), and, for remote storage, PathPrefix followed by the
// relative path (zot's absolute form, the storage's rootDirectory first).
// A path recorded in another form is returned as it is, and the store
// ignores it.
//
// Several processes change one digest at once. On one server (or a
// sentinel's master) a Lua script applies a whole batch atomically. In a
// cluster the keys of one digest sit in different slots (zot's layout puts
// every original in one hash, on one node), so no script may touch both;
// there each change is a safe order of single-key steps instead: a put
// adds its path to the set before it offers itself as the original
// (HSETNX), and a removal takes its path out of the set, then settles the
// original by compare-and-set until the original is a member of the set,
// the first-sorting one when it had to be replaced (settle).
package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	goredis "github.com/redis/go-redis/v9"

	"github.com/pier-oci/pier/store/cache"
)

// DefaultKeyPrefix is zot's default keyprefix.
const DefaultKeyPrefix = "zot"

// Options configures New.
type Options struct {
	// Client is the connection, as configs builds it (one server,
	// sentinel or cluster); the Cache closes it. It must have
	// ContextTimeoutEnabled, so that every call ends with its deadline.
	Client goredis.UniversalClient
	// KeyPrefix separates indexes sharing a server (zot's keyprefix);
	// empty means DefaultKeyPrefix.
	KeyPrefix string
	// PathPrefix is put before every path recorded, and taken off every
	// path returned: empty for a local root, the storage's root for
	// remote storage (zot's form there).
	PathPrefix string
}

// Cache is a Redis dedupe index.
type Cache struct {
	c          goredis.UniversalClient
	cluster    bool
	prefix     string
	pathPrefix string
}

var _ cache.Cache = (*Cache)(nil)

// New returns the index opts names. It makes no call: a server that is
// down is an error of the first call, not of New.
func New(opts Options) *Cache {
	prefix := opts.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	_, cluster := opts.Client.(*goredis.ClusterClient)
	return &Cache{c: opts.Client, cluster: cluster, prefix: prefix, pathPrefix: opts.PathPrefix}
}

func (c *Cache) originals() string { return c.prefix + ":blobs:original" }
func (c *Cache) duplicates(d digest.Digest) string {
	return c.prefix + ":blobs:duplicates:" + d.String()
}
func (c *Cache) completeKey() string { return c.prefix + ":pier:complete" }

// unavailable wraps every error of the server or the network: to the
// store, an index that errs is one it cannot use right now.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: redis: %w", cache.ErrUnavailable, err)
}

func (c *Cache) stored(rel string) string { return c.pathPrefix + rel }

func (c *Cache) relative(p string) string {
	if c.pathPrefix != "" {
		if rel, ok := strings.CutPrefix(p, c.pathPrefix); ok {
			return rel
		}
	}
	return p
}

// Paths returns the paths recorded for d, the original first. An original
// that is not among the paths (a removal under way in a cluster, or left
// by zot) is passed over for the first-sorting path, as a settle would.
func (c *Cache) Paths(ctx context.Context, d digest.Digest) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, unavailable(err)
	}
	var orig *goredis.StringCmd
	var members *goredis.StringSliceCmd
	_, err := c.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		orig = p.HGet(ctx, c.originals(), d.String())
		members = p.SMembers(ctx, c.duplicates(d))
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, unavailable(err)
	}
	ms := members.Val()
	if len(ms) == 0 {
		return nil, nil
	}
	slices.Sort(ms)
	first := ms[0]
	if o := orig.Val(); o != "" && slices.Contains(ms, o) {
		first = o
	}
	out := []string{c.relative(first)}
	for _, m := range ms {
		if m != first {
			out = append(out, c.relative(m))
		}
	}
	return out, nil
}

// Apply makes ops, in order. On one server, batches of batchSize ops run
// as one script each; in a cluster, the ops of each digest run in order,
// digests side by side.
func (c *Cache) Apply(ctx context.Context, ops []cache.Op) error {
	if err := ctx.Err(); err != nil {
		return unavailable(err)
	}
	for _, op := range ops {
		if op.Path == "" {
			return fmt.Errorf("cache: an empty path for %s", op.Digest)
		}
	}
	if c.cluster {
		return c.applyCluster(ctx, ops)
	}
	for batch := range slices.Chunk(ops, batchSize) {
		keys := make([]string, 0, 1+len(batch))
		args := make([]any, 0, 3*len(batch))
		keys = append(keys, c.originals())
		for _, op := range batch {
			kind := "+"
			if op.Remove {
				kind = "-"
			}
			keys = append(keys, c.duplicates(op.Digest))
			args = append(args, kind, op.Digest.String(), c.stored(op.Path))
		}
		if err := applyScript.Run(ctx, c.c, keys, args...).Err(); err != nil && !errors.Is(err, goredis.Nil) {
			return unavailable(err)
		}
	}
	return nil
}

// batchSize bounds one script's run: Redis serves nothing else meanwhile.
const batchSize = 256

// applyScript applies a batch: KEYS[1] is the hash of originals, KEYS[i+1]
// the set of op i's digest; ARGV holds, for each op, "+" or "-", the
// digest, the path. Paths compare byte by byte: Lua's string order
// follows the server's locale.
var applyScript = goredis.NewScript(`
local function less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function settle(orig, dup, d)
  local o = redis.call('HGET', orig, d)
  if o and redis.call('SISMEMBER', dup, o) == 1 then return end
  local ms = redis.call('SMEMBERS', dup)
  if #ms == 0 then
    if o then redis.call('HDEL', orig, d) end
    return
  end
  local m = ms[1]
  for i = 2, #ms do
    if less(ms[i], m) then m = ms[i] end
  end
  redis.call('HSET', orig, d, m)
end
local orig = KEYS[1]
for i = 1, #KEYS - 1 do
  local kind, d, p = ARGV[3*i-2], ARGV[3*i-1], ARGV[3*i]
  local dup = KEYS[i+1]
  if kind == '+' then
    redis.call('SADD', dup, p)
    if redis.call('HSETNX', orig, d, p) == 0 then settle(orig, dup, d) end
  else
    redis.call('SREM', dup, p)
    settle(orig, dup, d)
  end
end
return 0
`)

// casScript sets (or, given "", deletes) field ARGV[1] of hash KEYS[1]
// to ARGV[3] if it holds ARGV[2] ("" for none): one key, so a cluster
// runs it.
var casScript = goredis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
`)

// clusterWorkers is how many digests a cluster Apply changes side by side.
const clusterWorkers = 8

func (c *Cache) applyCluster(ctx context.Context, ops []cache.Op) error {
	return cache.ApplyByDigest(ops, clusterWorkers, func(op cache.Op) error {
		if op.Remove {
			return c.removeOne(ctx, op.Digest, c.stored(op.Path))
		}
		return c.putOne(ctx, op.Digest, c.stored(op.Path))
	})
}

func (c *Cache) putOne(ctx context.Context, d digest.Digest, p string) error {
	if err := c.c.SAdd(ctx, c.duplicates(d), p).Err(); err != nil {
		return unavailable(err)
	}
	set, err := c.c.HSetNX(ctx, c.originals(), d.String(), p).Result()
	if err != nil {
		return unavailable(err)
	}
	if set {
		return nil
	}
	return c.settle(ctx, d)
}

func (c *Cache) removeOne(ctx context.Context, d digest.Digest, p string) error {
	if err := c.c.SRem(ctx, c.duplicates(d), p).Err(); err != nil {
		return unavailable(err)
	}
	return c.settle(ctx, d)
}

// settle makes d's original a member of its set, the first-sorting one
// when it must change, or removes it when the set is empty, by
// compare-and-set on the original, checking again after each change: a
// put or removal by another process may land between any two steps, and
// the last process to settle sees the state they left.
func (c *Cache) settle(ctx context.Context, d digest.Digest) error {
	for range 32 {
		o, err := c.c.HGet(ctx, c.originals(), d.String()).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return unavailable(err)
		}
		if o != "" {
			member, err := c.c.SIsMember(ctx, c.duplicates(d), o).Result()
			if err != nil {
				return unavailable(err)
			}
			if member {
				return nil
			}
		}
		ms, err := c.c.SMembers(ctx, c.duplicates(d)).Result()
		if err != nil {
			return unavailable(err)
		}
		next := ""
		if len(ms) > 0 {
			next = slices.Min(ms)
		}
		if next == "" && o == "" {
			return nil
		}
		if err := casScript.Run(ctx, c.c, []string{c.originals()}, d.String(), o, next).Err(); err != nil {
			return unavailable(err)
		}
	}
	return fmt.Errorf("%w: redis: the original of %s kept changing", cache.ErrUnavailable, d)
}

// Complete reports whether the mark of a full build is there: a FLUSHALL
// (or a server restarted without its data) takes it with everything else.
func (c *Cache) Complete(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, unavailable(err)
	}
	n, err := c.c.Exists(ctx, c.completeKey()).Result()
	if err != nil {
		return false, unavailable(err)
	}
	return n == 1, nil
}

// MarkComplete records a full build.
func (c *Cache) MarkComplete(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return unavailable(err)
	}
	return unavailable(c.c.Set(ctx, c.completeKey(), "1", 0).Err())
}

// Close closes the connection.
func (c *Cache) Close() error { return c.c.Close() }
