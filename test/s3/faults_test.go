package s3

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/notify"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// bound is the longest a request may take while the bucket is down: the
// requesttimeout of these tests, the SDK's retries within it, and room.
const (
	requestTimeout = 2 * time.Second
	bound          = 4*requestTimeout + 2*time.Second
)

// within runs f and fails if it took longer than bound: a dead bucket must
// give clients an error, not a hang.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	start := time.Now()
	err := f()
	if took := time.Since(start); took > bound {
		t.Errorf("%s took %v with the bucket down, past %v: %v", what, took, bound, err)
	}
	return err
}

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	se, ok := err.(*ociclient.StatusError)
	if !ok || se.Status != status {
		t.Errorf("%s with the bucket down: %v, want status %d", what, err, status)
	}
}

// The S3 server is killed in the middle of a chunked push and started
// again: the client gets errors (503 with a message), never a hang; /v2/
// answers throughout, the watchdog keeps being pinged and the status line
// says the storage is unreachable; a pier started meanwhile starts and
// says why it cannot reach the bucket; afterwards nothing acknowledged is
// missing and the push, sent again, succeeds.
func TestBucketKilledMidPush(t *testing.T) {
	g, b := bucket.NewGateway(t)
	sock := notify.Listen(t, "")
	storage := func(keys map[string]any) map[string]any {
		m := map[string]any{"storageDriver": b.Driver(map[string]any{"requesttimeout": requestTimeout.String()})}
		for k, v := range keys {
			m[k] = v
		}
		return m
	}
	p := pierproc.Start(t, pierproc.Options{
		Storage: storage(map[string]any{"dedupe": true}),
		Env:     []string{"NOTIFY_SOCKET=" + sock.Path, "WATCHDOG_USEC=2000000"},
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pier:\n%s", p.Stderr())
		}
	})
	c := ociclient.New(p.Addr)
	acked := image("app", random(200_000), random(100_000))
	if err := c.PushImage("app", "v1", acked); err != nil {
		t.Fatal(err)
	}

	big := random(12 << 20)
	resp, err := c.Do("POST", "/v2/app/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	const chunk = 1 << 20
	var off int
	for ; off < 3*chunk; off += chunk {
		hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, off+chunk-1)}}
		resp, err := c.Do("PATCH", loc, bytes.NewReader(big[off:off+chunk]), hdr, http.StatusAccepted)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc = resp.Header.Get("Location")
	}

	g.Kill()
	watchdogs := sock.Count("WATCHDOG=1")
	err = within(t, "a PATCH", func() error {
		hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, off+chunk-1)}}
		_, err := c.Do("PATCH", loc, bytes.NewReader(big[off:off+chunk]), hdr, http.StatusAccepted)
		return err
	})
	wantStatus(t, "a PATCH", err, http.StatusServiceUnavailable)
	if se, ok := err.(*ociclient.StatusError); ok && !strings.Contains(se.Body, "storage") {
		t.Errorf("the 503 does not say what is wrong: %s", se.Body)
	}
	for _, d := range []digest.Digest{acked.Digest} {
		wantStatus(t, "a GET of a blob", within(t, "a GET of a blob", func() error { _, err := c.GetBlob("app", d); return err }), http.StatusServiceUnavailable)
	}
	wantStatus(t, "a manifest GET", within(t, "a manifest GET", func() error { _, _, err := c.GetManifest("app", "v1"); return err }), http.StatusServiceUnavailable)
	if _, err := c.Do("GET", "/v2/", nil, nil, http.StatusOK); err != nil {
		t.Errorf("/v2/ with the bucket down: %v", err)
	}
	sock.WaitForWithin(t, 10*time.Second, 0, "STATUS=", "storage unreachable")
	if n := sock.Count("WATCHDOG=1"); n <= watchdogs {
		t.Errorf("the watchdog was not pinged while the bucket was down (%d pings before, %d after): systemd would restart pier, which brings no bucket back", watchdogs, n)
	}

	// A pier started while the bucket is down starts, and says why.
	late := pierproc.Start(t, pierproc.Options{Storage: storage(map[string]any{"dedupe": false})})
	eventually(t, 10*time.Second, "a pier started with the bucket down does not say it cannot reach it", func() bool {
		return strings.Contains(late.Stderr(), "cannot be reached")
	})

	g.Start(b)
	wantImage(t, "app", "v1", acked, c, ociclient.New(late.Addr))
	// The client starts the push again, and it goes through.
	img := image("app", big)
	if err := c.PushImage("app", "v2", img); err != nil {
		t.Fatalf("the push sent again after the bucket came back: %v", err)
	}
	wantImage(t, "app", "v2", img, c, ociclient.New(late.Addr))
}

// pier is killed with SIGKILL in the middle of a chunked upload whose
// chunks span multipart segments, once between chunks and once with a
// chunk half sent: after the restart the client asks where the upload is,
// resumes from there, and the blob is whole.
func TestPierKilledMidMultipart(t *testing.T) {
	b := bucket.New(t)
	p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{"dedupe": true})})
	c := ociclient.New(p.Addr)
	data := random(16 << 20)
	resp, err := c.Do("POST", "/v2/app/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	const chunk = 3 << 20
	patch := func(off int) (int, error) {
		end := min(off+chunk, len(data))
		hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, end-1)}}
		resp, err := c.Do("PATCH", loc, bytes.NewReader(data[off:end]), hdr, http.StatusAccepted)
		if err != nil {
			return off, err
		}
		resp.Body.Close()
		loc = resp.Header.Get("Location")
		return end, nil
	}
	// offset asks pier where the upload is, as a client resuming does.
	offset := func() int {
		t.Helper()
		resp, err := c.Do("GET", loc, nil, nil, http.StatusNoContent)
		if err != nil {
			t.Fatalf("the upload after the restart: %v", err)
		}
		resp.Body.Close()
		var last int
		if _, err := fmt.Sscanf(resp.Header.Get("Range"), "0-%d", &last); err != nil {
			t.Fatalf("Range %q: %v", resp.Header.Get("Range"), err)
		}
		return last + 1
	}
	off := 0
	for range 2 {
		if off, err = patch(off); err != nil {
			t.Fatal(err)
		}
	}
	p.Kill(t)
	p.Restart(t)
	if got := offset(); got != off {
		t.Fatalf("after a restart between chunks the upload holds %d bytes, want the %d acknowledged", got, off)
	}

	// A chunk half sent when pier dies.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, off+chunk-1)}}
		_, err := c.Do("PATCH", loc, pr, hdr, http.StatusAccepted)
		done <- err
	}()
	pw.Write(data[off : off+chunk/2])
	time.Sleep(200 * time.Millisecond)
	p.Kill(t)
	pw.CloseWithError(io.ErrUnexpectedEOF)
	if err := <-done; err == nil {
		t.Fatal("a chunk cut by a crash was acknowledged")
	}
	p.Restart(t)
	if got := offset(); got != off && got != off+chunk/2 {
		t.Fatalf("after a crash mid-chunk the upload holds %d bytes; want %d (the chunk dropped) or %d (what arrived kept)", got, off, off+chunk/2)
	}
	for off = offset(); off < len(data); {
		if off, err = patch(off); err != nil {
			t.Fatal(err)
		}
	}
	d := digest.FromBytes(data)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if resp, err := c.Do("PUT", loc+sep+"digest="+d.String(), nil, nil, http.StatusCreated); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	got, err := c.GetBlob("app", d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the resumed blob: %d bytes, %v", len(got), err)
	}
}

// pier is killed with SIGKILL in the middle of a monolithic push with a
// Content-Length, which it streams to the bucket as one PutObject: the
// bucket is left with nothing at the blob's key (a body cut short is
// never an object, on a server that would otherwise keep what came), the
// blob is unknown after the restart, and the push sent again succeeds.
func TestPierKilledMidStreamedPush(t *testing.T) {
	b := bucket.New(t)
	p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{"dedupe": true})})
	c := ociclient.New(p.Addr)
	data := random(24 << 20)
	d := digest.FromBytes(data)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", p.URL("/v2/app/blobs/uploads/?digest="+d.String()), pr)
		req.ContentLength = int64(len(data))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated {
				err = fmt.Errorf("acknowledged")
			}
		}
		done <- err
	}()
	// All of it but a little: the bucket has nearly the whole object.
	if _, err := pw.Write(data[:len(data)-100]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	p.Kill(t)
	pw.CloseWithError(io.ErrUnexpectedEOF)
	if err := <-done; err == nil {
		t.Fatal("a push cut by a crash was acknowledged")
	}
	time.Sleep(500 * time.Millisecond) // the bucket has seen the connection go
	drv := b.Open(t)
	if info, err := drv.Stat(t.Context(), "app/blobs/sha256/"+d.Encoded()); err == nil {
		t.Fatalf("after the crash the bucket holds %d bytes at the blob's key", info.Size)
	}
	p.Restart(t)
	if resp, err := c.Do("HEAD", "/v2/app/blobs/"+d.String(), nil, nil, http.StatusNotFound); err != nil {
		t.Fatalf("the blob after the restart: %v", err)
	} else {
		resp.Body.Close()
	}
	if _, err := c.PushBlob("app", data); err != nil {
		t.Fatalf("the push sent again: %v", err)
	}
	got, err := c.GetBlob("app", d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the blob pushed again: %d bytes, %v", len(got), err)
	}
}
