package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pier-oci/pier/store/driver"
)

// A piece is an object, or the range of one, that is part of what a reader
// or a multipart copy reads: a whole object, an upload's segment.
type piece struct {
	obj  string
	etag string // the version read: a replaced object is an error, never a mix
	off  int64  // where in obj the piece starts
	size int64
}

// reader reads pieces one after the other as one seekable stream, with
// ranged GETs from wherever it is asked to read. Each GET is made with
// If-Match, so an object replaced while it is read fails the read instead
// of splicing two versions. A body that gives nothing for the driver's
// timeout, or breaks, is cut and asked for again from where it stopped, at
// most retries times for the whole reader: a server that keeps stalling
// fails the read rather than dragging it out.
type reader struct {
	d      *Driver
	ctx    context.Context
	key    string
	pieces []piece
	size   int64
	pos    int64

	body    io.ReadCloser
	bodyPos int64 // where the next byte of body is
	bodyEnd int64 // where body ends
	cancel  context.CancelFunc
	watch   *time.Timer
	closed  bool
	retries int  // re-GETs left after a broken body
	stream  bool // GETs are made for StreamTo (OpenStream)
}

const readRetries = 2

func (d *Driver) newReader(ctx context.Context, key string, pieces []piece) *reader {
	r := &reader{d: d, ctx: ctx, key: key, pieces: pieces, retries: readRetries}
	for _, p := range pieces {
		r.size += p.size
	}
	return r
}

// prime hands the reader the body of a GET of its only piece, from 0.
func (r *reader) prime(body io.ReadCloser, cancel context.CancelFunc, watch *time.Timer) {
	r.body, r.bodyPos, r.bodyEnd, r.cancel, r.watch = body, 0, r.size, cancel, watch
}

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("read of a closed reader")
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	for {
		if r.body == nil || r.bodyPos != r.pos || r.pos >= r.bodyEnd {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		want := p[:min(int64(len(p)), r.bodyEnd-r.pos)]
		r.watch.Reset(r.d.cfg.Timeout)
		n, err := r.body.Read(want)
		r.watch.Stop()
		r.pos += int64(n)
		r.bodyPos += int64(n)
		if err == io.EOF && r.bodyPos == r.bodyEnd {
			err = nil
		}
		if err == nil || n > 0 {
			return n, nil // an error with bytes is seen again by the next Read
		}
		r.drop()
		if r.retries == 0 || r.ctx.Err() != nil {
			return 0, fail(r.ctx, "read", r.key, err)
		}
		r.retries--
	}
}

// open GETs the rest of the piece at pos.
func (r *reader) open() error {
	r.drop()
	var p piece
	start := r.pos
	for _, q := range r.pieces {
		if start < q.size {
			p = q
			break
		}
		start -= q.size
	}
	ctx, cancel := context.WithCancel(r.ctx)
	watch := time.AfterFunc(r.d.cfg.Timeout, cancel)
	out, err := r.d.s3.GetObject(ctx, &s3.GetObjectInput{
		Bucket: &r.d.bucket, Key: &p.obj, IfMatch: aws.String(p.etag),
		Range: aws.String("bytes=" + strconv.FormatInt(p.off+start, 10) + "-" + strconv.FormatInt(p.off+p.size-1, 10)),
	}, r.d.getOptions(r.stream)...)
	watch.Stop()
	if err != nil {
		cancel()
		err = fail(r.ctx, "read", r.key, err)
		if errors.Is(err, driver.ErrConflict) {
			return fmt.Errorf("read %s: replaced while being read: %w", r.key, driver.ErrConflict)
		}
		return err
	}
	r.body, r.bodyPos, r.bodyEnd, r.cancel, r.watch = out.Body, r.pos, r.pos+p.size-start, cancel, watch
	return nil
}

func (r *reader) drop() {
	if r.body != nil {
		r.body.Close()
		r.cancel()
		r.body, r.cancel = nil, nil
	}
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, fmt.Errorf("seek %s: whence %d", r.key, whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek %s: negative offset %d", r.key, offset)
	}
	r.pos = offset
	return offset, nil
}

func (r *reader) Close() error {
	r.drop()
	r.closed = true
	return nil
}
