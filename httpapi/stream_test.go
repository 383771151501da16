package httpapi

import (
	"errors"
	"io"
	"net/http/httptest"
	"testing"
	"time"
)

// A chunk of a streamed response is what the client took in about a
// second the last time: it shrinks at once to a client that slowed, grows
// at most twofold, and stays between watchedChunk and maxStreamChunk.
func TestNextStreamChunk(t *testing.T) {
	for _, c := range []struct {
		chunk, n int64
		took     time.Duration
		want     int64
	}{
		{16 << 20, 3 << 20, 30 * time.Second, 104857},          // a client down to 100 KiB/s
		{64 << 10, 64 << 10, time.Millisecond, 128 << 10},      // fast: twofold, no more
		{16 << 20, 16 << 20, time.Millisecond, maxStreamChunk}, // the ceiling
		{1 << 20, 1 << 10, 10 * time.Second, watchedChunk},     // the floor
		{1 << 20, 1 << 20, 0, 2 << 20},                         // no time measured
	} {
		if got := nextStreamChunk(c.chunk, c.n, c.took); got != c.want {
			t.Errorf("nextStreamChunk(%d, %d, %v) = %d, want %d", c.chunk, c.n, c.took, got, c.want)
		}
	}
}

// nothingStreamer sends nothing and says nothing.
type nothingStreamer struct{ calls int }

func (s *nothingStreamer) Read([]byte) (int, error) { return 0, io.EOF }

func (s *nothingStreamer) StreamTo(io.ReaderFrom, int64) (int64, error) {
	s.calls++
	return 0, nil
}

// A streamer that gives nothing ends the response with an error, never a
// loop that writes nothing (and so never meets a write deadline).
func TestAStreamerThatGivesNothingEnds(t *testing.T) {
	rec := &recorder{ResponseWriter: readerFromRecorder{httptest.NewRecorder()}}
	s := &nothingStreamer{}
	n, err := rec.ReadFrom(&io.LimitedReader{R: s, N: 1 << 20})
	if n != 0 || !errors.Is(err, io.ErrNoProgress) || s.calls != 1 {
		t.Fatalf("ReadFrom of a streamer giving nothing: %d, %v after %d calls; want io.ErrNoProgress at once", n, err, s.calls)
	}
}

// readerFromRecorder is an httptest.ResponseRecorder with the ReadFrom a
// server's writer has.
type readerFromRecorder struct{ *httptest.ResponseRecorder }

func (r readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(r.ResponseRecorder, src)
}
