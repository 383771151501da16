package s3

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/driver"
)

// connPair is the two ends of a loopback TCP connection.
func connPair(t *testing.T) (c, peer *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// tcpPair is one end of a loopback TCP connection, and what arrives at
// the other until the first is closed for writing.
func tcpPair(t *testing.T) (*net.TCPConn, func() []byte) {
	t.Helper()
	c, peer := connPair(t)
	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(peer)
		got <- data
	}()
	return c, func() []byte { c.CloseWrite(); return <-got }
}

func randomData(t *testing.T, n int) []byte {
	data := make([]byte, n)
	crand.Read(data)
	return data
}

// A reader opened with OpenStream splices its object into a connection
// (its GETs go over connections of its own), in chunks of any size, after
// a Read and after a Seek, and ends with io.EOF.
func TestStreamToSendsTheObject(t *testing.T) {
	ctx := context.Background()
	d := mustNew(t, testConfig(t, testServer(t)))
	data := randomData(t, 5<<20+3)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	f, info, err := d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if info.Size != int64(len(data)) {
		t.Fatalf("size %d, want %d", info.Size, len(data))
	}
	sr, ok := f.(driver.StreamReader)
	if !ok {
		t.Fatalf("OpenStream gave a %T, not a StreamReader", f)
	}
	conn, received := tcpPair(t)
	var want bytes.Buffer
	send := func(n int64) {
		t.Helper()
		pos, _ := f.Seek(0, io.SeekCurrent)
		m, err := sr.StreamTo(conn, n)
		if err != nil || m != min(n, int64(len(data))-pos) {
			t.Fatalf("StreamTo(%d) at %d: %d, %v", n, pos, m, err)
		}
		want.Write(data[pos : pos+m])
	}
	head := make([]byte, 10)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	conn.Write(head)
	want.Write(head)
	send(1)
	if _, raw := f.(*reader).body.(*streamBody); !raw {
		t.Fatalf("the GET's body is a %T: it did not go over a connection of its own", f.(*reader).body)
	}
	send(100 << 10)
	if _, err := f.Seek(2<<20, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	send(1 << 20)
	if _, err := f.Seek(1<<20, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	for {
		pos, _ := f.Seek(0, io.SeekCurrent)
		if pos == int64(len(data)) {
			break
		}
		send(3 << 20)
	}
	if n, err := sr.StreamTo(conn, 1); n != 0 || err != io.EOF {
		t.Fatalf("StreamTo at the end: %d, %v; want io.EOF", n, err)
	}
	if got := received(); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("the connection received %d bytes that are not the %d sent", len(got), want.Len())
	}
}

// cuttingProxy is a proxy to the test server whose GETs' bodies break
// after cut bytes while armed.
func cuttingProxy(t *testing.T, cut int64) (endpoint string, gets *atomic.Int32, armed *atomic.Bool) {
	gets, armed = &atomic.Int32{}, &atomic.Bool{}
	endpoint = proxyTo(t, func(r *http.Response) {
		if r.Request.Method == http.MethodGet && armed.Load() {
			gets.Add(1)
			r.Body = &cutBody{ReadCloser: r.Body, left: cut}
		}
	})
	return endpoint, gets, armed
}

type cutBody struct {
	io.ReadCloser
	left int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("cut")
	}
	n, err := b.ReadCloser.Read(p[:min(int64(len(p)), b.left)])
	b.left -= int64(n)
	return n, err
}

// A body that breaks in the middle of a splice is asked for again from
// where it stopped: the connection receives every byte once, in order.
func TestStreamToResumesABrokenBody(t *testing.T) {
	ctx := context.Background()
	endpoint, gets, armed := cuttingProxy(t, 400<<10)
	d := faultDriver(t, endpoint)
	data := randomData(t, 1<<20)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	f, _, err := d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conn, received := tcpPair(t)
	var sent int64
	for {
		n, err := f.(driver.StreamReader).StreamTo(conn, 256<<10)
		sent += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", sent, err)
		}
	}
	if got := received(); !bytes.Equal(got, data) {
		t.Fatalf("the connection received %d bytes that are not the object's %d", len(got), len(data))
	}
	// Two cuts, within the reader's retries.
	if n := gets.Load(); n != 3 {
		t.Fatalf("%d GETs for a body cut every 400 KiB; want 3", n)
	}
}

// A body that stops coming fails the stream within the driver's deadline
// and its retries, having sent only the object's bytes.
func TestStreamToStalledBody(t *testing.T) {
	ctx := context.Background()
	endpoint, stall, release := stallingProxy(t)
	defer close(release)
	d := faultDriver(t, endpoint)
	data := randomData(t, 1<<20)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	stall.Store(true)
	f, _, err := d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	conn, received := tcpPair(t)
	start := time.Now()
	var sent int64
	for err == nil {
		var n int64
		n, err = f.(driver.StreamReader).StreamTo(conn, 1<<20)
		sent += n
	}
	f.Close()
	if !errors.Is(err, driver.ErrUnavailable) || sent >= int64(len(data)) {
		t.Fatalf("stream of a stalled body: %d bytes, %v; want ErrUnavailable before the end", sent, err)
	}
	if took := time.Since(start); took > (readRetries+2)*faultTimeout {
		t.Fatalf("stream of a stalled body took %v; the deadline is %v, %d retries", took, faultTimeout, readRetries)
	}
	if got := received(); !bytes.Equal(got, data[:len(got)]) || int64(len(got)) != sent {
		t.Fatalf("the connection received %d bytes, not the first %d of the object", len(got), sent)
	}
}

// A client that is gone (its end reset) ends the stream with an error at
// once, not after the bucket's retries.
func TestStreamToAClientThatIsGone(t *testing.T) {
	ctx := context.Background()
	endpoint, gets, armed := cuttingProxy(t, 1<<40)
	d := faultDriver(t, endpoint)
	data := randomData(t, 8<<20)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	f, _, err := d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, peer := connPair(t)
	peer.SetLinger(0) // a reset, as from a client killed
	peer.Close()
	time.Sleep(100 * time.Millisecond) // the reset has arrived
	start := time.Now()
	for err == nil {
		_, err = f.(driver.StreamReader).StreamTo(c, 1<<20)
	}
	if took := time.Since(start); took > faultTimeout {
		t.Fatalf("a stream to a client that is gone took %v to fail (%v)", took, err)
	}
	// The reset, when a splice meets it, cannot be told from the bucket's:
	// one GET again, whose write meets the broken pipe, which can.
	if n := gets.Load(); n > 2 {
		t.Fatalf("%d GETs for a client that is gone (%v); want 2 at most", n, err)
	}
}

// A ranged GET answered with fewer bytes than the range asked (a server
// that clamps it, a segment shorter than its record) ends StreamTo with an
// error once the retries are spent, as Read does, never with (0, nil)
// again and again for the HTTP layer to spin on.
func TestStreamToAShortBodyEnds(t *testing.T) {
	ctx := context.Background()
	var armed atomic.Bool
	d := faultDriver(t, proxyTo(t, func(r *http.Response) {
		if armed.Load() && r.Request.Method == http.MethodGet && r.Request.Header.Get("Range") != "" && r.ContentLength > 10 {
			short := r.ContentLength / 2
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.LimitReader(r.Body, short), r.Body}
			r.ContentLength = short
			r.Header.Set("Content-Length", strconv.FormatInt(short, 10))
		}
	}))
	data := randomData(t, 1<<20)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	f, _, err := d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Seek(100, io.SeekStart) // a ranged GET
	armed.Store(true)
	conn, received := tcpPair(t)
	var sent int64
	for i := range 10 {
		n, err := f.(driver.StreamReader).StreamTo(conn, 256<<10)
		sent += n
		if err != nil {
			if !errors.Is(err, driver.ErrUnavailable) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("a short body ended the stream with %v", err)
			}
			if got := received(); !bytes.Equal(got, data[100:100+len(got)]) || int64(len(got)) != sent {
				t.Fatalf("the connection received %d bytes, not the %d of the object sent", len(got), sent)
			}
			return
		}
		if n == 0 {
			t.Fatalf("call %d: StreamTo sent nothing and said nothing", i)
		}
	}
	t.Fatal("a body short every time never ended the stream")
}

// StreamTo of a reader that copies (an https endpoint or a proxy, where
// OpenStream gives Open's reader) moves the position by what reached the
// connection, not by what it read: a write deadline that cuts a copy
// leaves no hole for the next call.
func TestStreamToACopyCutByADeadlineLeavesNoHole(t *testing.T) {
	ctx := context.Background()
	d := mustNew(t, testConfig(t, testServer(t)))
	data := randomData(t, 8<<20)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	f, _, err := d.Open(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, peer := connPair(t) // the peer reads nothing yet: the socket buffers fill
	c.SetWriteBuffer(64 << 10)
	c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := f.(driver.StreamReader).StreamTo(c, int64(len(data)))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("StreamTo: %d, %v; want the deadline", n, err)
	}
	if pos, _ := f.Seek(0, io.SeekCurrent); pos != n {
		t.Fatalf("StreamTo wrote %d bytes but moved the reader to %d: %d bytes would be skipped", n, pos, pos-n)
	}
	c.SetWriteDeadline(time.Time{})
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(peer); got <- b }()
	for {
		_, err := f.(driver.StreamReader).StreamTo(c, 1<<20)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	c.CloseWrite()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the connection received %d bytes that are not the object's %d", len(b), len(data))
	}
}

// A client slower than the driver's Timeout per splice, but reading, is
// not a stalled bucket: the bucket's bytes wait in its socket, the watch
// sees them, and the pull goes through with every byte.
func TestStreamToASlowClientIsNotAStalledBucket(t *testing.T) {
	ctx := context.Background()
	d := faultDriver(t, testServer(t).endpoint) // Timeout 1 s
	data := randomData(t, 3<<20)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	f, _, err := d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, peer := connPair(t)
	c.SetWriteBuffer(64 << 10)
	peer.SetReadBuffer(64 << 10)
	got := make(chan []byte, 1)
	go func() { // takes 1 MiB, then pauses 1.5 s, and so on
		var buf bytes.Buffer
		for {
			time.Sleep(1500 * time.Millisecond)
			if n, err := io.CopyN(&buf, peer, 1<<20); err != nil || n == 0 {
				got <- buf.Bytes()
				return
			}
		}
	}()
	for {
		_, err := f.(driver.StreamReader).StreamTo(c, 4<<20)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("a slow client's pull failed: %v", err)
		}
	}
	c.CloseWrite()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the slow client received %d bytes that are not the object's %d", len(b), len(data))
	}
}

// OpenStream asks only for the object's description: a HEAD request for
// a blob costs the bucket no GET, and a ranged one a single GET of its
// range, not one of the whole object first.
func TestOpenStreamGetsOnlyWhatIsRead(t *testing.T) {
	ctx := context.Background()
	endpoint, gets, armed := cuttingProxy(t, 1<<40)
	d := faultDriver(t, endpoint)
	data := randomData(t, 2<<20)
	if _, err := d.WriteFile(ctx, "r/blobs/sha256/b", data); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	f, info, err := d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if n := gets.Load(); n != 0 || info.Size != int64(len(data)) {
		t.Fatalf("an OpenStream closed unread: %d GETs, size %d; want none and %d", n, info.Size, len(data))
	}
	f, _, err = d.OpenStream(ctx, "r/blobs/sha256/b")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Seek(1<<20, io.SeekStart)
	conn, received := tcpPair(t)
	if n, err := f.(driver.StreamReader).StreamTo(conn, 1000); n != 1000 || err != nil {
		t.Fatalf("StreamTo: %d, %v", n, err)
	}
	if got := received(); !bytes.Equal(got, data[1<<20:1<<20+1000]) {
		t.Fatal("the range received is not the object's")
	}
	if n := gets.Load(); n != 1 {
		t.Fatalf("a ranged read made %d GETs; want 1", n)
	}
}
