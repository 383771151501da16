package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
	"github.com/pier-oci/pier/store/storetest"
)

// newLimitedFixture is a fixture whose API has limits l.
func newLimitedFixture(t *testing.T, l Limits) *fixture {
	t.Helper()
	root := t.TempDir()
	st := storetest.Local(t, root, false, false)
	full := DefaultLimits()
	full.BodyIdleTimeout, full.MaxUploads = l.BodyIdleTimeout, l.MaxUploads
	api := New(st, nil, WithLimits(full))
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &fixture{t: t, root: root, srv: srv}
}

// startUpload opens an upload session and returns its path.
func (f *fixture) startUpload(repo string) string {
	f.t.Helper()
	resp := f.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		f.t.Fatalf("start upload: %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// stalled is a request whose headers promise a body larger than what is
// sent: the client stops after sent bytes and keeps the connection open.
type stalled struct {
	conn net.Conn
	// closed receives the server's answer (possibly empty) once it ends
	// the connection.
	closed chan string
}

func (f *fixture) stall(method, path string, length int64, sent []byte) *stalled {
	f.t.Helper()
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: pier\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", method, path, length)
	conn.Write(sent)
	s := &stalled{conn: conn, closed: make(chan string, 1)}
	go func() {
		b, _ := io.ReadAll(conn) // until the server closes the connection
		s.closed <- string(b)
	}()
	return s
}

// A client that stops sending in the middle of a body is cut once the
// body has made no progress for BodyIdleTimeout: its connection is
// closed, its upload's lock is released (so the client can resume it) and
// what arrived is kept. Without the limit it held all of that forever.
func TestAStalledBodyIsCut(t *testing.T) {
	f := newLimitedFixture(t, Limits{BodyIdleTimeout: time.Second})
	loc := f.startUpload("app")
	sent := bytes.Repeat([]byte("x"), 100<<10)
	start := time.Now()
	s := f.stall("PATCH", loc, 1<<30, sent)
	select {
	case answer := <-s.closed:
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Fatalf("cut after %v, before the idle timeout", took)
		}
		if answer != "" && !strings.Contains(answer, "BLOB_UPLOAD_INVALID") {
			t.Fatalf("answer to a cut body: %q", answer)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled body was not cut 10 s after the idle timeout of 1 s")
	}
	// The upload is free again and holds what arrived: the client resumes.
	resp := f.do("GET", loc, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != fmt.Sprintf("0-%d", len(sent)-1) {
		t.Fatalf("upload after the cut: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	rest := []byte("and the rest")
	all := append(sent, rest...)
	resp = f.do("PUT", loc+"?digest="+digest.FromBytes(all).String(), rest,
		"Content-Range", fmt.Sprintf("%d-%d", len(sent), len(all)-1), "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("resuming the upload: %d", resp.StatusCode)
	}
}

// A request answered with an error before the handler read its body (a
// bad digest here) is answered at once, and its connection let go within
// the idle timeout even though the client never sends the body: net/http
// reads a little of an unread body to keep the connection, and that read
// is bounded too.
func TestAnEarlyErrorIsNotHeldByAnUnsentBody(t *testing.T) {
	f := newLimitedFixture(t, Limits{BodyIdleTimeout: time.Second})
	for _, length := range []int64{100 << 10, 1 << 30} { // drained by net/http, or too big to
		start := time.Now()
		s := f.stall("POST", "/v2/app/blobs/uploads/?digest=sha256:bad", length, nil)
		select {
		case answer := <-s.closed:
			if !strings.Contains(answer, "DIGEST_INVALID") {
				t.Fatalf("answer: %q", answer)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("the answer to a %d-byte body never sent took %v", length, took)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a %d-byte body never sent held its connection 10 s after its error", length)
		}
	}
}

// A body trickled a byte at a time is moving, but not enough to count:
// it is cut like a stalled one.
func TestATrickledBodyIsCut(t *testing.T) {
	f := newLimitedFixture(t, Limits{BodyIdleTimeout: time.Second})
	loc := f.startUpload("app")
	s := f.stall("PATCH", loc, 1<<20, []byte("x"))
	stop := time.After(10 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-tick.C:
			s.conn.Write([]byte("x"))
		case <-stop:
			t.Fatal("a body trickled at 10 bytes a second was not cut in 10 s (idle timeout 1 s)")
		}
	}
}

// A slow push that keeps sending is never cut, however long it takes
// overall: the idle timeout is not a deadline on the whole body.
func TestASlowMovingBodyIsNotCut(t *testing.T) {
	f := newLimitedFixture(t, Limits{BodyIdleTimeout: time.Second})
	loc := f.startUpload("app")
	chunk := bytes.Repeat([]byte("y"), 8<<10)
	const chunks = 12 // 8 KiB every 300 ms: 3.6 s, over three idle timeouts
	pr, pw := io.Pipe()
	go func() {
		for range chunks {
			time.Sleep(300 * time.Millisecond)
			pw.Write(chunk)
		}
		pw.Close()
	}()
	all := bytes.Repeat(chunk, chunks)
	req, _ := http.NewRequest("PUT", f.srv.URL+loc+"?digest="+digest.FromBytes(all).String(), pr)
	req.ContentLength = int64(len(all))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a slow push that kept sending: %d", resp.StatusCode)
	}
}

// Past MaxUploads requests writing at once, the next is refused at once
// with the spec's TOOMANYREQUESTS and a Retry-After, rather than queued;
// once a writer is done (here: cut for stalling), uploads go on.
func TestUploadsPastTheCapAreRefusedWithRetryAfter(t *testing.T) {
	f := newLimitedFixture(t, Limits{BodyIdleTimeout: time.Second, MaxUploads: 2})
	var held []*stalled
	for range 2 {
		held = append(held, f.stall("PATCH", f.startUpload("app"), 1<<20, []byte("partial")))
	}
	time.Sleep(100 * time.Millisecond) // both are in their handlers
	data := []byte("one more blob")
	d := digest.FromBytes(data)
	resp := f.do("POST", "/v2/app/blobs/uploads/?digest="+d.String(), data)
	expectError(t, resp, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	resp = f.do("PATCH", f.startUpload("app"), data, "Content-Type", "application/octet-stream")
	expectError(t, resp, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	// A client refused before it sent its body hears so at once.
	refused := f.stall("PATCH", f.startUpload("app"), 1<<30, nil)
	refused.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if answer := <-refused.closed; !strings.HasPrefix(answer, "HTTP/1.1 429") {
		t.Fatalf("a refused upload whose body was not sent yet got %q within 500 ms", answer)
	}
	for _, s := range held {
		select {
		case <-s.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("a stalled upload was not cut")
		}
	}
	time.Sleep(50 * time.Millisecond) // their handlers return after the connection closes
	if resp := f.do("POST", "/v2/app/blobs/uploads/?digest="+d.String(), data); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push after the writers left: %d", resp.StatusCode)
	}
}

// A manifest push holds its share of the manifest budget from before it
// reads its body: while two large manifests are being received, a third
// waits its turn (its body unread) instead of being read into memory
// beside them, and goes in once one of them is done.
func TestLargeManifestPushesWaitForTheBudget(t *testing.T) {
	f := newLimitedFixture(t, Limits{})
	cfg := f.pushBlob("app", []byte("{}"))
	layer := f.pushBlob("app", []byte("layer"))
	// Three manifests of 3 MiB: two fill the 8 MiB budget.
	manifest := func(n int) []byte {
		m := ispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageManifest,
			Config:      ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: cfg, Size: 2},
			Layers:      []ispec.Descriptor{{MediaType: ispec.MediaTypeImageLayer, Digest: layer, Size: 5}},
			Annotations: map[string]string{"n": fmt.Sprint(n), "pad": strings.Repeat("p", 3<<20)}}
		b, _ := json.Marshal(m)
		return b
	}
	if 2*len(manifest(0)) > 2*oci.MaxManifestSize || 3*len(manifest(0)) <= 2*oci.MaxManifestSize {
		t.Fatal("the manifests do not fit the test")
	}
	var held []*stalled
	for i := range 2 {
		body := manifest(i)
		held = append(held, f.stall("PUT", fmt.Sprintf("/v2/app/manifests/v%d", i), int64(len(body)), body[:1000]))
	}
	time.Sleep(100 * time.Millisecond)
	third := manifest(2)
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("PUT", f.srv.URL+"/v2/app/manifests/v2", bytes.NewReader(third))
		req.Header.Set("Content-Type", ispec.MediaTypeImageManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case status := <-done:
		t.Fatalf("a third large manifest was taken (%d) while two held the budget", status)
	case <-time.After(500 * time.Millisecond):
	}
	body := manifest(0)
	held[0].conn.Write(body[1000:]) // the first push completes
	select {
	case status := <-done:
		if status != http.StatusCreated {
			t.Fatalf("the third manifest after its wait: %d", status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the third manifest was never taken after the first push completed")
	}
	held[1].conn.Close()
}

// A client that stops reading a response (a large blob) is cut once no
// piece of it has gone out for BodyIdleTimeout: the connection and the
// open blob are let go. Without the limit it held them forever.
func TestAStalledReaderIsCut(t *testing.T) {
	f := newLimitedFixture(t, Limits{BodyIdleTimeout: time.Second})
	blob := bytes.Repeat([]byte("z"), 64<<20) // more than the socket buffers hold
	d := f.pushBlob("app", blob)
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v2/app/blobs/%s HTTP/1.1\r\nHost: pier\r\n\r\n", d)
	if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // stop reading for four idle timeouts
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, _ := io.Copy(io.Discard, conn)
	if total := n + 1<<20; total >= int64(len(blob)) {
		t.Fatalf("a client that stopped reading for 4 s (idle timeout 1 s) still got the whole blob (%d bytes)", total)
	}
}

// A client that reads slowly but steadily gets the whole blob, however
// long it takes (here longer than the idle timeout, once the socket
// buffers are full). The file's progress shows in bursts of about half
// the socket's send buffer (megabytes on loopback), so the timeout here
// is 2 s, not 1.
func TestASlowSteadyReaderIsNotCut(t *testing.T) {
	f := newLimitedFixture(t, Limits{BodyIdleTimeout: 2 * time.Second})
	blob := bytes.Repeat([]byte("s"), 16<<20)
	d := f.pushBlob("app", blob)
	resp := f.do("GET", "/v2/app/blobs/"+d.String(), nil)
	buf := make([]byte, 256<<10)
	var got int64
	start := time.Now()
	for {
		time.Sleep(50 * time.Millisecond) // about 5 MB/s: seconds of a blocked server
		n, err := io.ReadFull(resp.Body, buf)
		got += int64(n)
		if err != nil {
			break
		}
	}
	if got != int64(len(blob)) {
		t.Fatalf("a steady reader got %d of %d bytes in %v", got, len(blob), time.Since(start))
	}
}
