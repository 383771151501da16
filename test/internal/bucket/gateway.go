package bucket

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Gateway is an S3 server of the test's own (versitygw, the binary of
// test/services/s3.sh), to kill and start again on the same address and
// data: the tests of what pier does when its bucket goes away.
type Gateway struct {
	t    testing.TB
	bin  string
	dir  string
	Addr string
	cmd  *exec.Cmd
}

// NewGateway starts a versitygw on a free port with the test bucket's
// credentials and an empty bucket of the same name, and returns a Bucket
// on it. It is killed when the test ends.
func NewGateway(t testing.TB) (*Gateway, Bucket) {
	t.Helper()
	b := New(t)
	bin := os.Getenv("PIER_TEST_S3_VERSITYGW")
	if bin == "" {
		t.Fatal("PIER_TEST_S3_VERSITYGW is unset: run the tests under test/services.sh (make test does)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	g := &Gateway{t: t, bin: bin, dir: t.TempDir(), Addr: addr}
	if err := os.Mkdir(filepath.Join(g.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Kill)
	b.Endpoint = "http://" + addr
	g.Start(b)
	d := b.Open(t)
	if _, err := d.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(b.Name)}); err != nil {
		t.Fatal(err)
	}
	return g, b
}

// Start starts the server (again), and waits until it accepts connections.
func (g *Gateway) Start(b Bucket) {
	g.t.Helper()
	logf, err := os.OpenFile(filepath.Join(g.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		g.t.Fatal(err)
	}
	defer logf.Close()
	g.cmd = exec.Command(g.bin, "--access", b.AccessKey, "--secret", b.SecretKey, "--region", b.Region,
		"--port", g.Addr, "--quiet", "posix", filepath.Join(g.dir, "data"))
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", g.Addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("versitygw does not answer on %s", g.Addr)
		}
	}
}

// Kill stops the server with SIGKILL.
func (g *Gateway) Kill() {
	if g.cmd != nil && g.cmd.Process != nil {
		g.cmd.Process.Signal(syscall.SIGKILL)
		g.cmd.Wait()
		g.cmd = nil
	}
}
