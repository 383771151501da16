package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pier-oci/pier/store/driver"
)

// Faults: a server that is gone, stalled, failing or killed mid-upload.
// Every call returns ErrUnavailable within its deadline (plus the SDK's
// retries inside it), never hangs, and leaves no partial object.

const faultTimeout = time.Second

// every calls each operation of the driver once, and checks it fails with
// ErrUnavailable within the deadline and a margin.
func every(t *testing.T, d *Driver) {
	t.Helper()
	ctx := context.Background()
	ops := map[string]func() error{
		"Stat":        func() error { _, err := d.Stat(ctx, "r/index.json"); return err },
		"Open":        func() error { _, _, err := d.Open(ctx, "r/index.json"); return err },
		"OpenStream":  func() error { _, _, err := d.OpenStream(ctx, "r/index.json"); return err },
		"ReadFile":    func() error { _, _, err := d.ReadFile(ctx, "r/index.json", 100); return err },
		"WriteFile":   func() error { _, err := d.WriteFile(ctx, "r/index.json", []byte("{}")); return err },
		"ReplaceFile": func() error { _, err := d.ReplaceFile(ctx, "r/index.json", []byte("{}"), `"v"`); return err },
		"Create":      func() error { _, err := d.Create(ctx, "r/.uploads/u"); return err },
		"Append":      func() error { _, err := d.Append(ctx, "r/.uploads/u"); return err },
		"Copy":        func() error { return d.Copy(ctx, "r/a", "r/b") },
		"Delete":      func() error { return d.Delete(ctx, "r/a") },
		"List":        func() error { _, err := d.List(ctx, "r"); return err },
		"Touch":       func() error { return d.Touch(ctx, "r/a") },
	}
	for name, op := range ops {
		start := time.Now()
		err := op()
		took := time.Since(start)
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		}
		if took > 2*faultTimeout {
			t.Errorf("%s took %v; the deadline is %v", name, took, faultTimeout)
		}
	}
}

func faultDriver(t *testing.T, endpoint string) *Driver {
	cfg := testConfig(t, testServer(t))
	cfg.Endpoint, cfg.Timeout = endpoint, faultTimeout
	return mustNew(t, cfg)
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Nothing listens: connections are refused.
func TestFaultClosedPort(t *testing.T) {
	every(t, faultDriver(t, "http://"+freePort(t)))
}

// A server that takes connections and never answers.
func TestFaultStalledServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	every(t, faultDriver(t, "http://"+l.Addr().String()))
}

// A server that answers every request with 503 SlowDown, or 500.
func TestFaultServerErrors(t *testing.T) {
	for _, status := range []int{503, 500} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>test</Message></Error>`,
				map[int]string{503: "SlowDown", 500: "InternalError"}[status])
		}))
		every(t, faultDriver(t, srv.URL))
		srv.Close()
	}
}

// A body that stops coming: the read is cut after the deadline, tried
// again once, and fails; it does not hang.
func TestFaultStalledBody(t *testing.T) {
	endpoint, stall, release := stallingProxy(t)
	defer close(release)
	d := faultDriver(t, endpoint)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if _, err := d.WriteFile(context.Background(), "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	stall.Store(true)
	start := time.Now()
	r, _, err := d.Open(context.Background(), "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r)
	r.Close()
	if !errors.Is(err, driver.ErrUnavailable) || n >= int64(len(data)) {
		t.Fatalf("read of a stalled body: %d bytes, %v; want ErrUnavailable before the end", n, err)
	}
	if took := time.Since(start); took > (readRetries+2)*faultTimeout {
		t.Fatalf("read of a stalled body took %v; the deadline is %v, %d retries", took, faultTimeout, readRetries)
	}
}

// proxyTo is a proxy to the test server whose answers modify changes,
// and its endpoint.
func proxyTo(t *testing.T, modify func(*http.Response)) string {
	target, _ := url.Parse(testServer(t).endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	proxy.ModifyResponse = func(r *http.Response) error { modify(r); return nil }
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL
}

// stallingProxy is a proxy whose GETs' bodies, once stall is set, stop
// after 64 KiB until release is closed (which the test must do).
func stallingProxy(t *testing.T) (endpoint string, stall *atomic.Bool, release chan struct{}) {
	stall, release = &atomic.Bool{}, make(chan struct{})
	endpoint = proxyTo(t, func(r *http.Response) {
		if stall.Load() && r.Request.Method == http.MethodGet {
			r.Body = &stallingBody{ReadCloser: r.Body, left: 64 << 10, release: release}
		}
	})
	return endpoint, stall, release
}

type stallingBody struct {
	io.ReadCloser
	left    int
	release chan struct{}
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		<-b.release
		return 0, io.ErrUnexpectedEOF
	}
	n, err := b.ReadCloser.Read(p[:min(len(p), b.left)])
	b.left -= n
	return n, err
}

// gateway is a versitygw of the test's own, to kill and start again.
type gateway struct {
	t    *testing.T
	bin  string
	dir  string
	addr string
	cmd  *exec.Cmd
}

func newGateway(t *testing.T) *gateway {
	bin := os.Getenv("PIER_TEST_S3_VERSITYGW")
	if bin == "" {
		t.Fatal("PIER_TEST_S3_VERSITYGW is unset: run the tests under test/services.sh (make test does)")
	}
	g := &gateway{t: t, bin: bin, dir: t.TempDir(), addr: freePort(t)}
	if err := os.Mkdir(filepath.Join(g.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	g.start()
	t.Cleanup(g.kill)
	return g
}

func (g *gateway) start() {
	s := testServer(g.t)
	logf, err := os.OpenFile(filepath.Join(g.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		g.t.Fatal(err)
	}
	defer logf.Close()
	g.cmd = exec.Command(g.bin, "--access", s.access, "--secret", s.secret, "--region", s.region,
		"--port", g.addr, "--quiet", "posix", filepath.Join(g.dir, "data"))
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", g.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("versitygw does not answer on %s", g.addr)
		}
	}
}

func (g *gateway) kill() {
	if g.cmd != nil && g.cmd.Process != nil {
		g.cmd.Process.Signal(syscall.SIGKILL)
		g.cmd.Wait()
		g.cmd = nil
	}
}

// The server is killed with an upload half written and a commit to come,
// and started again: calls in between fail with ErrUnavailable, no partial
// object appears, and the upload resumes from its last Close.
func TestFaultServerKilled(t *testing.T) {
	g := newGateway(t)
	cfg := testConfig(t, testServer(t))
	cfg.Endpoint, cfg.Timeout = "http://"+g.addr, 5*time.Second // a restarted server is slow at first
	d := mustNew(t, cfg)
	ctx := context.Background()
	if _, err := d.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(d.bucket)}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3*MinChunkSize+12345)
	for i := range data {
		data[i] = byte(i*31 + i>>12)
	}
	closedAt := 2*MinChunkSize + 100
	w, err := d.Create(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data[:closedAt])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = d.Append(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[closedAt : closedAt+MinChunkSize]); err != nil { // one segment written past the Close
		t.Fatal(err)
	}
	if _, err := d.WriteFile(ctx, "r/index.json", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}

	g.kill()
	start := time.Now()
	_, werr := w.Write(data[closedAt+MinChunkSize:])
	cerr := w.Commit(ctx, "r/blobs/sha256/x")
	_, rerr := d.ReplaceFile(ctx, "r/index.json", []byte(`{"v":2}`), `"whatever"`)
	for name, err := range map[string]error{"Write": werr, "Commit": cerr, "ReplaceFile": rerr} {
		if err != nil && !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("%s with the server down: %v, want ErrUnavailable", name, err)
		}
	}
	if cerr == nil {
		t.Fatal("Commit with the server down succeeded")
	}
	if took := time.Since(start); took > 3*cfg.Timeout {
		t.Fatalf("three calls with the server down took %v; the deadline is %v each", took, cfg.Timeout)
	}
	every(t, faultDriver(t, "http://"+g.addr))

	g.start()
	if _, err := d.Stat(ctx, "r/blobs/sha256/x"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("after the restart the commit's key: %v, want ErrNotFound (no partial object)", err)
	}
	got, _, err := d.ReadFile(ctx, "r/index.json", 100)
	if err != nil || string(got) != `{"v":1}` {
		t.Fatalf("index.json after the restart: %q, %v", got, err)
	}
	w, err = d.Append(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != int64(closedAt) {
		t.Fatalf("the upload resumes at %d, want its last Close at %d", w.Size(), closedAt)
	}
	if _, err := w.Write(data[closedAt:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, "r/blobs/sha256/x"); err != nil {
		t.Fatal(err)
	}
	got, _, err = d.ReadFile(ctx, "r/blobs/sha256/x", 1<<30)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the resumed upload committed %d bytes, %v; want the %d written", len(got), err, len(data))
	}
	objs, mps := rawObjects(t, d)
	if strings.Join(objs, ",") != "r/blobs/sha256/x,r/index.json" || len(mps) != 0 {
		t.Fatalf("after the commit the bucket holds %q and multipart uploads %q", objs, mps)
	}
}

// An uplink slower than a chunk per deadline: a 5 MiB segment takes longer
// than the deadline to send, and gets through: a call that sends a body
// has time for it at a slow link's rate.
func TestFaultSlowUplink(t *testing.T) {
	s := testServer(t)
	target, _ := url.Parse(s.endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	direct := proxy.Director
	proxy.Director = func(r *http.Request) {
		direct(r)
		if r.Body != nil {
			r.Body = &slowBody{ReadCloser: r.Body, rate: 2 << 20}
		}
	}
	srv := httptest.NewServer(proxy)
	defer srv.Close()

	d := faultDriver(t, srv.URL) // deadline 1 s
	ctx := context.Background()
	data := bytes.Repeat([]byte("slow uplink "), MinChunkSize/12+1000)
	start := time.Now()
	w, err := d.Create(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write of a chunk over a slow uplink: %v", err)
	}
	if err := w.Commit(ctx, "r/blobs/sha256/slow"); err != nil {
		t.Fatalf("Commit over a slow uplink: %v", err)
	}
	if took := time.Since(start); took < 2*faultTimeout {
		t.Fatalf("the upload took %v: the uplink was not slower than the deadline, the test proves nothing", took)
	}
	got, _, err := d.ReadFile(ctx, "r/blobs/sha256/slow", 1<<30)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}

// slowBody gives rate bytes a second.
type slowBody struct {
	io.ReadCloser
	rate int
}

func (b *slowBody) Read(p []byte) (int, error) {
	n := min(len(p), b.rate/20)
	time.Sleep(50 * time.Millisecond)
	return b.ReadCloser.Read(p[:n])
}
