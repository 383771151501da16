package s3

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	goredis "github.com/redis/go-redis/v9"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// redisServer is a redis-server of the test's own, to kill and restart.
type redisServer struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	if os.Getenv("PIER_TEST_REDIS_SERVER") == "" {
		t.Fatal("PIER_TEST_REDIS_SERVER is not set: run the tests under test/services.sh (make test does)")
	}
	r := &redisServer{port: pierproc.FreePort(t), dir: t.TempDir()}
	r.start(t)
	t.Cleanup(r.kill)
	return r
}

func (r *redisServer) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command(os.Getenv("PIER_TEST_REDIS_SERVER"), "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := r.client()
	defer c.Close()
	eventually(t, 10*time.Second, "redis-server did not answer", func() bool { return c.Ping(context.Background()).Err() == nil })
}

func (r *redisServer) kill() {
	if r.cmd != nil && r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

func (r *redisServer) client() *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port)})
}

// The dedupe index of an s3 root killed in the middle of pushes, started
// again empty, and flushed while pier serves: no push or pull fails or
// waits past its deadline; while the index is gone, pushes store whole
// copies and placeholders are found by looking in every repository; once
// it is back, pushes dedupe again.
func TestIndexDownOnS3(t *testing.T) {
	rs := startRedis(t)
	b := bucket.New(t)
	p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{"dedupe": true, "remoteCache": true,
		"cacheDriver": map[string]any{"name": "redis", "url": fmt.Sprintf("redis://127.0.0.1:%d/0", rs.port), "keyprefix": "s3"}})})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pier:\n%s", p.Stderr())
		}
	})
	c := ociclient.New(p.Addr)
	base := random(500_000)
	baseD := digest.FromBytes(base)
	imgs := map[string]ociclient.Image{}
	pushTimed := func(repo string) {
		t.Helper()
		imgs[repo] = image(repo, base, random(20_000))
		start := time.Now()
		if err := c.PushImage(repo, "v1", imgs[repo]); err != nil {
			t.Fatalf("push %s: %v", repo, err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("push %s took %v", repo, took)
		}
	}
	pullAll := func() {
		t.Helper()
		for repo, img := range imgs {
			wantImage(t, repo, "v1", img, c)
		}
	}
	pushTimed("a")
	pushTimed("b")
	if n := storedBytes(t, b, baseD, "a", "b"); n != int64(len(base)) {
		t.Fatalf("with the index up, the shared layer takes %d bytes, want %d", n, len(base))
	}

	rs.kill()
	pushTimed("c")
	if n := storedBytes(t, b, baseD, "c"); n != int64(len(base)) {
		t.Fatalf("with the index down, c holds %d bytes of the layer: want a whole copy (a placeholder needs the index)", n)
	}
	pullAll() // b's placeholder is found without the index

	rs.start(t) // empty
	tries := 0
	eventually(t, 30*time.Second, "pushes do not dedupe again once the index is back", func() bool {
		tries++
		repo := fmt.Sprintf("d%d", tries)
		pushTimed(repo)
		return storedBytes(t, b, baseD, repo) == 0
	})
	pullAll()

	rc := rs.client()
	defer rc.Close()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	pullAll()
	pushTimed("e")
	pullAll()
}

// A DynamoDB index that cannot be reached costs dedupe, never a push or
// a pull.
func TestDynamoDBDownOnS3(t *testing.T) {
	b := bucket.New(t)
	p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{"dedupe": true, "remoteCache": true,
		"cacheDriver": map[string]any{"name": "dynamodb", "endpoint": fmt.Sprintf("http://127.0.0.1:%d", pierproc.FreePort(t)), "region": "us-east-1", "cacheTablename": "down"}})})
	c := ociclient.New(p.Addr)
	base := random(300_000)
	for _, repo := range []string{"a", "b"} {
		img := image(repo, base)
		start := time.Now()
		if err := c.PushImage(repo, "v1", img); err != nil {
			t.Fatalf("push %s with DynamoDB down: %v", repo, err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("push %s took %v with DynamoDB down", repo, took)
		}
		wantImage(t, repo, "v1", img, c)
	}
	if n := storedBytes(t, b, digest.FromBytes(base), "a", "b"); n != 2*int64(len(base)) {
		t.Fatalf("with the index down the layer takes %d bytes; want two whole copies", n)
	}
}
