// Package remotecache tests pier with a Redis dedupe index on a local
// root, through the real binary and a redis-server of its own (which it
// kills, stalls and flushes): the index is never the truth, so a push or
// pull never fails or waits on it, and the index recovers.
package remotecache

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	goredis "github.com/redis/go-redis/v9"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// redisServer is a redis-server this test owns.
type redisServer struct {
	bin, dir string
	port     int
	cmd      *exec.Cmd
}

func startRedis(t *testing.T) *redisServer {
	bin := os.Getenv("PIER_TEST_REDIS_SERVER")
	if bin == "" {
		t.Fatal("PIER_TEST_REDIS_SERVER is not set: run the tests under test/services.sh (make test does)")
	}
	r := &redisServer{bin: bin, dir: t.TempDir(), port: pierproc.FreePort(t)}
	r.start(t)
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *redisServer) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command(r.bin, "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := r.client()
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer")
		}
	}
}

func (r *redisServer) kill() {
	if r.cmd != nil && r.cmd.ProcessState == nil {
		r.cmd.Process.Signal(syscall.SIGCONT)
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

func (r *redisServer) client() *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port)})
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func blobPath(root, repo string, d digest.Digest) string {
	return filepath.Join(root, repo, "blobs", d.Algorithm().String(), d.Encoded())
}

// eventually waits for cond, failing with what after the deadline.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

func pushTimed(t *testing.T, c *ociclient.Client, repo string, data []byte, limit time.Duration) {
	t.Helper()
	start := time.Now()
	if _, err := c.PushBlob(repo, data); err != nil {
		t.Fatalf("push to %s: %v", repo, err)
	}
	if took := time.Since(start); took > limit {
		t.Fatalf("push to %s took %v, past %v", repo, took, limit)
	}
}

// Redis killed mid-push, stalled, restarted empty and flushed while pier
// serves: every push and pull succeeds within its deadline, content is
// never lost, and the index recovers: what was pushed meanwhile is linked
// and recorded, and new pushes dedupe again.
func TestRedisDownStalledFlushed(t *testing.T) {
	rs := startRedis(t)
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{
		"dedupe": true, "remoteCache": true,
		"cacheDriver": map[string]any{"name": "redis", "url": fmt.Sprintf("redis://127.0.0.1:%d/0", rs.port), "keyprefix": "edge"},
	}})
	c := ociclient.New(srv.Addr)
	rc := rs.client()
	defer rc.Close()
	ctx := context.Background()
	base := random(1 << 20)
	d := digest.FromBytes(base)
	linked := func(repos ...string) bool {
		for _, r := range repos[1:] {
			if inode(t, blobPath(srv.Root, r, d)) != inode(t, blobPath(srv.Root, repos[0], d)) {
				return false
			}
		}
		return true
	}

	pushTimed(t, c, "a", base, 5*time.Second)
	pushTimed(t, c, "b", base, 5*time.Second)
	if !linked("a", "b") {
		t.Fatal("no dedupe through Redis")
	}
	if _, err := os.Lstat(filepath.Join(srv.Root, "cache.db")); err == nil {
		t.Fatal("a root with a remote index has a cache.db")
	}
	eventually(t, 10*time.Second, "pier's paths never reached zot's keys in Redis", func() bool {
		return rc.SCard(ctx, "edge:blobs:duplicates:"+d.String()).Val() == 2 && rc.HGet(ctx, "edge:blobs:original", d.String()).Val() != ""
	})

	// Killed in the middle of a chunked push: the push completes.
	done := make(chan error, 1)
	go func() { _, err := c.PushBlobChunked("c", base, 64<<10); done <- err }()
	time.Sleep(20 * time.Millisecond)
	rs.kill()
	if err := <-done; err != nil {
		t.Fatalf("a push across the index's death: %v", err)
	}
	for _, repo := range []string{"d", "e"} {
		pushTimed(t, c, repo, base, 2*time.Second)
	}
	for _, repo := range []string{"a", "b", "c", "d", "e"} {
		if got, err := c.GetBlob(repo, d); err != nil || !bytes.Equal(got, base) {
			t.Fatalf("pull from %s with the index down: %v", repo, err)
		}
	}

	// Back, empty (no persistence): what was pushed meanwhile is linked
	// and recorded, and pushes dedupe again.
	rs.start(t)
	eventually(t, 60*time.Second, "copies pushed while Redis was down were never linked", func() bool {
		return linked("a", "b", "c", "d", "e")
	})
	eventually(t, 60*time.Second, "the index was never rebuilt after Redis came back empty", func() bool {
		return rc.SCard(ctx, "edge:blobs:duplicates:"+d.String()).Val() == 5
	})
	pushTimed(t, c, "f", base, 2*time.Second)
	if !linked("a", "f") {
		t.Fatal("no dedupe after Redis came back")
	}

	// Stalled (SIGSTOP: connections open, no answers): pushes and pulls
	// do not wait on it.
	rs.cmd.Process.Signal(syscall.SIGSTOP)
	for _, repo := range []string{"g", "h", "i"} {
		pushTimed(t, c, repo, base, 2*time.Second)
		if _, err := c.GetBlob(repo, d); err != nil {
			t.Fatal(err)
		}
	}
	rs.cmd.Process.Signal(syscall.SIGCONT)
	eventually(t, 60*time.Second, "copies pushed while Redis was stalled were never linked", func() bool {
		return linked("a", "g", "h", "i")
	})

	// FLUSHALL while serving: found incomplete, rebuilt from the disk.
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the index was never rebuilt after FLUSHALL", func() bool {
		return rc.SCard(ctx, "edge:blobs:duplicates:"+d.String()).Val() == 9 && rc.Exists(ctx, "edge:pier:complete").Val() == 1
	})
	pushTimed(t, c, "j", base, 2*time.Second)
	if !linked("a", "j") {
		t.Fatal("no dedupe after FLUSHALL")
	}
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: exit %d\n%s", code, srv.Stderr())
	}
}
