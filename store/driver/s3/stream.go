package s3

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/store/driver"
)

// Streaming. A blob pulled through pier from a bucket over plain http can
// go from the bucket's connection to the client's inside the kernel
// (splice(2)) rather than being read into pier and written out again:
// that copy is most of what a proxied pull costs. Splicing needs the raw
// TCP connection the body arrives on, which net/http's transport never
// hands out, so each GET of a reader opened with OpenStream goes over a
// connection of its own: the request is written by net/http
// (Request.Write), its answer parsed by net/http (http.ReadResponse), and
// the body is read from the socket, which is closed after it. The SDK
// still builds, signs, retries and decodes the call; only the transport of
// that one request differs. TLS cannot be spliced, so an https endpoint,
// or one reached through a proxy, is read as Open reads it.

// OpenStream is Open for a reader that will be sent to a client whole or
// in large ranges, or perhaps not read at all (a HEAD request, a check
// before a redirect): it asks only for the object's description (a HEAD),
// and its first GET is made where it is first read, of the range read
// there. Its StreamTo splices where the endpoint allows it, each GET then
// on a connection of its own.
func (d *Driver) OpenStream(ctx context.Context, key string) (io.ReadSeekCloser, driver.Info, error) {
	obj, err := d.object(key)
	if err != nil {
		return nil, driver.Info{}, err
	}
	out, err := d.head(ctx, key, obj)
	if err != nil {
		return nil, driver.Info{}, err
	}
	if _, ok := uploadSize(out.Metadata); ok {
		return d.open(ctx, key, true) // an upload: its record says where its bytes are
	}
	fi := info(key, aws.ToInt64(out.ContentLength), out.LastModified, out.ETag)
	r := d.newReader(ctx, key, []piece{{obj: obj, etag: fi.Version, size: fi.Size}})
	r.stream = true
	return r, fi, nil
}

// getOptions are the options of a GetObject: with stream (and an endpoint
// that allows it), its request goes over a connection of its own (rawGet).
func (d *Driver) getOptions(stream bool) []func(*s3.Options) {
	if !stream || !d.canStream {
		return nil
	}
	return []func(*s3.Options){func(o *s3.Options) { o.HTTPClient = streamClient{inner: o.HTTPClient} }}
}

// streamClient sends a GET over plain http with rawGet, and anything else
// (a retry that changed scheme, a proxied endpoint) with the SDK's client.
type streamClient struct {
	inner s3.HTTPClient
}

func (c streamClient) Do(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.URL.Scheme != "http" {
		return c.inner.Do(req)
	}
	if proxy, err := http.ProxyFromEnvironment(req); err != nil || proxy != nil {
		return c.inner.Do(req)
	}
	return rawGet(req)
}

// rawGet sends req over a new connection and returns its answer, whose
// body is a *streamBody that owns the connection.
func rawGet(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	dialer := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The call's context ends the connection, as it ends a transport's
	// request: a deadline or a cancel cuts a stalled body.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	giveUp := func(err error) (*http.Response, error) {
		stop()
		conn.Close()
		return nil, err
	}
	req.Close = true // Connection: close: the body ends the connection
	if err := req.Write(conn); err != nil {
		return giveUp(err)
	}
	br := bufio.NewReaderSize(conn, 4<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return giveUp(err)
	}
	body := &streamBody{conn: conn, br: br, stop: stop, left: -1, framed: resp.Body}
	if resp.ContentLength >= 0 && len(resp.TransferEncoding) == 0 {
		body.left = resp.ContentLength
	}
	resp.Body = body
	return resp, nil
}

// streamBody is the body of a rawGet: its Content-Length bytes, read from
// what the header read buffered and then from the socket. A body without a
// length (chunked) is read as net/http frames it, and never spliced.
type streamBody struct {
	conn   net.Conn
	br     *bufio.Reader
	stop   func() bool
	left   int64     // bytes of the body still to come; -1: no length
	framed io.Reader // net/http's reading of the body, for left == -1
}

func (b *streamBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return b.framed.Read(p)
	}
	if b.left == 0 {
		return 0, io.EOF
	}
	n, err := b.br.Read(p[:min(int64(len(p)), b.left)])
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// sendTo sends the next n bytes of the body into w, by splice where w is
// a TCP connection (or net/http's writer over one): first what the header
// read buffered, then straight from the socket.
func (b *streamBody) sendTo(w io.ReaderFrom, n int64) (int64, error) {
	if b.left < 0 {
		m, err := w.ReadFrom(io.LimitReader(b, n))
		if err == nil && m < n {
			err = io.ErrUnexpectedEOF // the body ended before what the range promised
		}
		return m, err
	}
	if b.left < n {
		// Shorter than the range asked for: send what there is, then
		// say so, for the reader to ask again from there.
		m, err := b.sendTo(w, b.left)
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return m, err
	}
	var sent int64
	if k := int64(b.br.Buffered()); k > 0 {
		m, err := w.ReadFrom(io.LimitReader(b.br, min(k, n)))
		sent += m
		b.left -= m
		if err != nil {
			return sent, err
		}
	}
	if sent < n {
		want := n - sent
		m, err := w.ReadFrom(&io.LimitedReader{R: b.conn, N: want})
		sent += m
		b.left -= m
		if err == nil && m < want {
			err = io.ErrUnexpectedEOF // the connection ended inside the body
		}
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func (b *streamBody) Close() error {
	b.stop()
	return b.conn.Close()
}

// StreamTo sends up to n bytes from the reader's position into w and moves
// the position by what it sent. From a body of rawGet it splices; from any
// other it copies. A body that breaks is asked for again from where it
// stopped, as Read does; an error of the client's side (a broken pipe, a
// write deadline) ends the stream at once.
func (r *reader) StreamTo(w io.ReaderFrom, n int64) (int64, error) {
	if r.closed {
		return 0, errors.New("stream of a closed reader")
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	n = min(n, r.size-r.pos)
	for {
		if r.body == nil || r.bodyPos != r.pos || r.pos >= r.bodyEnd {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		body, ok := r.body.(*streamBody)
		if !ok {
			return r.copyTo(w, n)
		}
		stop := r.watchSplice(body)
		m, err := body.sendTo(w, min(n, r.bodyEnd-r.pos))
		stop()
		r.pos += m
		r.bodyPos += m
		if err == nil {
			return m, nil
		}
		r.drop()
		if clientGone(err) {
			return m, fmt.Errorf("stream %s: %w", r.key, err)
		}
		if r.retries == 0 || r.ctx.Err() != nil {
			return m, fail(r.ctx, "read", r.key, err)
		}
		r.retries--
		if m > 0 {
			return m, nil // the next call asks for the rest again
		}
	}
}

// watchSplice cuts the bucket's connection once the bucket has given
// nothing for the driver's Timeout while a splice waits on it. A splice
// waits on the client too: a bucket whose bytes wait unread in its socket
// is not stalled, the client is slow, and that is for the HTTP layer's
// write deadline to judge. stop ends the watch.
func (r *reader) watchSplice(b *streamBody) (stop func()) {
	var (
		mu    sync.Mutex
		done  bool
		seen  uint64
		moved = time.Now()
		t     *time.Timer
	)
	cancel, timeout := r.cancel, r.d.cfg.Timeout
	b.moving(&seen)
	t = time.AfterFunc(timeout/4, func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		if now := time.Now(); b.moving(&seen) {
			moved = now
		} else if now.Sub(moved) >= timeout {
			cancel()
			return
		}
		t.Reset(timeout / 4)
	})
	return func() {
		mu.Lock()
		done = true
		mu.Unlock()
		t.Stop()
	}
}

// moving reports whether the bucket's side of the connection is alive:
// bytes came in since the last look (*seen, from TCP_INFO), or some wait
// in its socket for the splice to take them.
func (b *streamBody) moving(seen *uint64) bool {
	tc, ok := b.conn.(*net.TCPConn)
	if !ok {
		return false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	queued, received := 0, uint64(0)
	raw.Control(func(fd uintptr) {
		queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			received = info.Bytes_received
		}
	})
	grew := received > *seen
	*seen = received
	return queued > 0 || grew
}

// copyTo is StreamTo from a body that cannot be spliced (https, a proxy):
// a copy, after which the position is where w stopped taking, not where
// the reading stopped, so that what a write deadline cut off is sent
// again by the next call rather than skipped.
func (r *reader) copyTo(w io.ReaderFrom, n int64) (int64, error) {
	start := r.pos
	m, err := w.ReadFrom(io.LimitReader(r, n))
	r.pos = start + m
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	return m, err
}

// clientGone reports errors that can only come from the client's side: a
// failed write (what the header read buffered is written, not spliced;
// net/http wraps it in its "readfrom" error), a broken pipe, a deadline
// (the bucket's side is cut by closing its connection, never by a
// deadline). A failed splice says not which side failed: it is retried.
func clientGone(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if op, ok := e.(*net.OpError); ok && op.Op == "write" {
			return true
		}
	}
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.EPIPE)
}
