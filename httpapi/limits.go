package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// minBodyProgress is what a body must deliver within BodyIdleTimeout to
// count as moving: a few TCP segments, which the slowest real link (a 2G
// modem) sends in about a second, and a byte every few seconds never.
const minBodyProgress = 4 << 10

// extendEvery is how often, at most, a moving body's deadline is pushed
// back: not on every read, which may come thousands of times a second.
// A short timeout is extended more often (a quarter of it), so that a
// moving body always gets its deadline moved before it passes.
const extendEvery = time.Second

// uploadRetryAfter is the Retry-After of a 429: roughly how long a chunk
// takes to finish on a Pi's SD card.
const uploadRetryAfter = 2 * time.Second

// errBodyIdle is a request body cut for making no progress.
var errBodyIdle = errors.New("the request body stopped arriving")

// idleBody is a request body whose connection's read deadline moves back
// as its bytes arrive, so only a body that stops is cut.
type idleBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	timeout  time.Duration
	extended time.Time // when the deadline was last set
	progress int64     // bytes since then
	reading  bool      // the handler has read
	done     bool      // the deadline is cleared
}

// watchBody returns r with its body watched, when the limits ask for it.
// The request is a shallow copy: net/http must still see its own body in
// the original, to know after the handler how much of it is left unread
// (it drains a little to keep the connection, and closes it otherwise).
// The deadline is set at once, so that drain is bounded too, and moves
// back as the handler reads.
func (a *API) watchBody(w http.ResponseWriter, r *http.Request) *http.Request {
	if a.limits.BodyIdleTimeout <= 0 || r.Body == nil || r.Body == http.NoBody {
		return r
	}
	b := &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: a.limits.BodyIdleTimeout}
	b.extend(time.Now())
	watched := new(http.Request)
	*watched = *r
	watched.Body = b
	return watched
}

// extend moves the deadline to timeout from now. Where the connection
// does not support deadlines (none that net/http serves), the body is
// simply not watched.
func (b *idleBody) extend(now time.Time) {
	b.rc.SetReadDeadline(now.Add(b.timeout))
	b.extended, b.progress = now, 0
}

func (b *idleBody) Read(p []byte) (int, error) {
	if !b.done {
		now := time.Now()
		// The deadline moves back before the read, not after it, so time
		// spent between reads (a slow disk, a wait for the manifest
		// budget before the first) is never counted against the client.
		if !b.reading || b.progress >= minBodyProgress && now.Sub(b.extended) >= min(extendEvery, b.timeout/4) {
			b.extend(now)
			b.reading = true
		}
	}
	n, err := b.ReadCloser.Read(p)
	b.progress += int64(n)
	if err == io.EOF && !b.done {
		// The body is whole: no deadline may cut the connection's reads
		// that net/http does after it (watching for a client gone).
		b.rc.SetReadDeadline(time.Time{})
		b.done = true
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: less than %d bytes in %v", errBodyIdle, minBodyProgress, b.timeout)
	}
	return n, err
}

// watchedChunk is the piece in which a watched response held in memory
// goes out (a manifest): a client must take one within BodyIdleTimeout
// (64 KiB a minute, about a kilobyte a second, is slower than any link
// that still moves).
const watchedChunk = 64 << 10

// writeWatch moves a response's write deadline back as its pieces go out,
// so a client that stops reading (or reads a byte at a time) no longer
// holds its connection, its file and, for a manifest, its bytes forever.
type writeWatch struct {
	rc       *http.ResponseController
	timeout  time.Duration
	extended time.Time
}

// watchWrites returns the watch for a response, or nil without a timeout.
// A connection keeps its write deadline from one request to the next
// (net/http resets it only with a WriteTimeout): each request starts
// with none.
func (a *API) watchWrites(w http.ResponseWriter) *writeWatch {
	if a.limits.BodyIdleTimeout <= 0 {
		return nil
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	return &writeWatch{rc: rc, timeout: a.limits.BodyIdleTimeout}
}

// follow moves the write deadline back while f, being sent by sendfile
// (which moves f's offset as it goes), keeps moving: it looks every
// quarter of the timeout, and a client that took less than
// minBodyProgress since is left to its deadline. stop ends the following.
func (ww *writeWatch) follow(f *os.File) (stop func()) {
	ww.rc.SetWriteDeadline(time.Now().Add(ww.timeout))
	last, _ := f.Seek(0, io.SeekCurrent)
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	t = time.AfterFunc(ww.timeout/4, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if pos, err := f.Seek(0, io.SeekCurrent); err == nil && pos-last >= minBodyProgress {
			last = pos
			ww.rc.SetWriteDeadline(time.Now().Add(ww.timeout))
		}
		t.Reset(ww.timeout / 4)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
		ww.extended = time.Time{} // the next write sets its own deadline
	}
}

// moving is called before each piece is written.
func (ww *writeWatch) moving() {
	if now := time.Now(); now.Sub(ww.extended) >= min(extendEvery, ww.timeout/4) {
		ww.rc.SetWriteDeadline(now.Add(ww.timeout))
		ww.extended = now
	}
}

// renew moves the deadline back now: after a write that met it having
// made progress enough.
func (ww *writeWatch) renew() {
	now := time.Now()
	ww.rc.SetWriteDeadline(now.Add(ww.timeout))
	ww.extended = now
}

// handlerDone gives the rest of the response, which net/http flushes after
// the handler, its own time: before it flushes, net/http may drain an
// unread request body for up to the read deadline.
func (ww *writeWatch) handlerDone() {
	if ww != nil {
		ww.rc.SetWriteDeadline(time.Now().Add(2 * ww.timeout))
	}
}

// holdUpload takes one of the MaxUploads slots for a request that writes
// blob data, or answers 429 when they are all taken. release frees it.
func (a *API) holdUpload(w http.ResponseWriter) (release func(), err error) {
	if a.writing == nil {
		return func() {}, nil
	}
	select {
	case a.writing <- struct{}{}:
		return func() { <-a.writing }, nil
	default:
		w.Header().Set("Retry-After", strconv.Itoa(int(uploadRetryAfter/time.Second)))
		return nil, errTooManyRequests(fmt.Sprintf("%d uploads are being written; retry later", cap(a.writing)))
	}
}
