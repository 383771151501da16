package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pier-oci/pier/store/driver"
)

var (
	_ driver.Placer  = (*Driver)(nil)
	_ driver.Sweeper = (*Driver)(nil)
)

// Place writes the object at key as a multipart upload to key itself,
// completed by Finish: its bytes are written once, where an upload's
// Commit copies them from its segments (once on the server, and once more
// where completing joins the parts). One chunk is filled while the one
// before is sent, when the budget has a second buffer free; else the
// chunks go one at a time. An object of one chunk or less is one
// PutObject at Finish. A process that dies before Finish leaves an
// unfinished multipart upload, invisible at key, that Sweep removes.
// An object whose size and sha256 are given, above a chunk and within
// what one PutObject takes, is streamed as one instead (putWriter).
func (d *Driver) Place(ctx context.Context, key string, want driver.Expected) (driver.PlaceWriter, error) {
	obj, err := d.writable(key)
	if err != nil {
		return nil, err
	}
	if want.Size > int64(d.cfg.ChunkSize) && want.Size <= maxPutSize && len(want.SHA256) == sha256.Size {
		return d.placeStreamed(ctx, key, obj, want), nil
	}
	return &placeWriter{d: d, ctx: ctx, key: key, obj: obj}, nil
}

type placeWriter struct {
	d        *Driver
	ctx      context.Context
	key, obj string
	id       *string // the multipart upload, once a chunk is full
	parts    []types.CompletedPart
	buf      []byte // the chunk being filled
	held     func()
	sending  *sentPart // the chunk being sent, at most one
	size     int64
	failed   error
	done     bool
}

// A sentPart is a chunk sent as a part on its own goroutine.
type sentPart struct {
	number int32
	buf    []byte
	held   func()
	done   chan struct{}
	etag   *string
	crc    *string
	err    error
}

func (w *placeWriter) Size() int64 { return w.size }

func (w *placeWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %s: writer closed", w.key)
	}
	n := 0
	for n < len(p) {
		if w.failed != nil {
			return n, w.failed
		}
		if w.buf == nil {
			buf, held, err := w.d.takeChunk(w.ctx)
			if err != nil {
				w.failed = fmt.Errorf("write %s: %w", w.key, err)
				return n, w.failed
			}
			w.buf, w.held = buf, held
		}
		k := copy(w.buf[len(w.buf):cap(w.buf)], p[n:])
		w.buf = w.buf[:len(w.buf)+k]
		n += k
		w.size += int64(k)
		if len(w.buf) == cap(w.buf) {
			if err := w.sendChunk(); err != nil {
				w.failed = err
				return n, err
			}
		}
	}
	return n, nil
}

// sendChunk starts sending the full chunk as the next part, once the one
// before is through, and gives the writer a buffer for the next: the one
// just sent, a second one free in the budget, or (when there is none) the
// one being sent, once it is.
func (w *placeWriter) sendChunk() error {
	if w.id == nil {
		if err := w.create(); err != nil {
			return err
		}
	}
	if len(w.parts) >= maxParts-1 {
		return fmt.Errorf("write %s: more than %d parts of %d bytes: %w", w.key, maxParts, w.d.cfg.ChunkSize, driver.ErrTooLarge)
	}
	spare, spareHeld, err := w.await()
	if err != nil {
		return err
	}
	w.send(w.buf, w.held)
	w.buf, w.held = nil, nil
	if spare != nil {
		w.buf, w.held = spare[:0], spareHeld
		return nil
	}
	if buf, held, ok := w.d.tryChunk(); ok {
		w.buf, w.held = buf, held
		return nil
	}
	buf, held, err := w.await()
	if err != nil {
		return err
	}
	w.buf, w.held = buf[:0], held
	return nil
}

// create starts the multipart upload at the key.
func (w *placeWriter) create() error {
	sse, kms := w.d.sse()
	cctx, cancel := w.d.call(w.ctx)
	defer cancel()
	out, err := w.d.s3.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{
		Bucket: &w.d.bucket, Key: &w.obj, ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		StorageClass: w.d.storageClass(), ACL: w.d.acl(), ServerSideEncryption: sse, SSEKMSKeyId: kms,
	})
	if err != nil {
		return fail(w.ctx, "write", w.key, err)
	}
	w.id = out.UploadId
	return nil
}

// send starts sending buf as the next part. The part carries a CRC32 the
// server checks (the upload was created with that algorithm): cheaper
// than a Content-MD5, and the store checks the digest of every byte.
func (w *placeWriter) send(buf []byte, held func()) {
	p := &sentPart{number: int32(len(w.parts) + 1), buf: buf, held: held, done: make(chan struct{})}
	w.parts = append(w.parts, types.CompletedPart{PartNumber: aws.Int32(p.number)})
	w.sending = p
	go func() {
		defer close(p.done)
		cctx, cancel := w.d.sendCall(w.ctx, len(buf))
		defer cancel()
		out, err := w.d.s3.UploadPart(cctx, &s3.UploadPartInput{
			Bucket: &w.d.bucket, Key: &w.obj, UploadId: w.id, PartNumber: aws.Int32(p.number),
			Body: bytes.NewReader(buf), ContentLength: aws.Int64(int64(len(buf))), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		})
		if err != nil {
			p.err = aborted(fail(w.ctx, "write", w.key, err))
			return
		}
		p.etag, p.crc = out.ETag, out.ChecksumCRC32
	}()
}

// await waits for the part being sent, if any, and returns its buffer.
func (w *placeWriter) await() ([]byte, func(), error) {
	p := w.sending
	if p == nil {
		return nil, nil, nil
	}
	<-p.done
	w.sending = nil
	if p.err != nil {
		w.d.dropChunk(p.buf, p.held)
		return nil, nil, p.err
	}
	w.parts[p.number-1].ETag, w.parts[p.number-1].ChecksumCRC32 = p.etag, p.crc
	return p.buf, p.held, nil
}

// Finish sends what is left as the last part (S3 lets the last be short)
// and completes the upload: the object appears whole. An object that
// never filled a chunk is one PutObject.
func (w *placeWriter) Finish(ctx context.Context) error {
	if w.done {
		return fmt.Errorf("finish %s: writer closed", w.key)
	}
	if w.failed != nil {
		w.Abort()
		return w.failed
	}
	if w.id == nil {
		_, err := w.d.put(ctx, w.key, w.buf, nil, nil)
		w.release()
		return err
	}
	if len(w.buf) > 0 {
		buf, held, err := w.await()
		w.d.dropChunk(buf, held)
		if err != nil {
			w.Abort()
			return err
		}
		w.send(w.buf, w.held)
		w.buf, w.held = nil, nil
	}
	buf, held, err := w.await()
	w.d.dropChunk(buf, held)
	if err != nil {
		w.Abort()
		return err
	}
	// Completing joins the parts: a copy of the object on some servers.
	cctx, cancel := w.d.copyCall(ctx, w.size)
	_, err = w.d.s3.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{
		Bucket: &w.d.bucket, Key: &w.obj, UploadId: w.id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
	})
	cancel()
	if err != nil {
		err = aborted(fail(ctx, "complete", w.key, err))
		w.Abort()
		return err
	}
	w.release()
	return nil
}

// Abort drops the parts sent: the upload is aborted (not with the
// writer's context, which may be what ended), so the bucket does not keep
// them; what cannot be aborted now is left to Sweep.
func (w *placeWriter) Abort() error {
	if w.done {
		return nil
	}
	buf, held, _ := w.await()
	w.d.dropChunk(buf, held)
	w.release()
	if w.id == nil {
		return nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), w.d.cfg.Timeout)
	defer cancel()
	if _, err := w.d.s3.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &w.d.bucket, Key: &w.obj, UploadId: w.id}); err != nil {
		w.d.log.Warn("s3: an unfinished write could not be aborted; a sweep will", "key", w.key, "err", err)
		return fail(w.ctx, "abort", w.key, err)
	}
	return nil
}

// aborted gives a part or a completion that found its multipart upload
// gone (NoSuchUpload: a sweep of another replica, or a bucket lifecycle
// rule, aborted it) its meaning for a write: the write was lost and a
// retry succeeds. ErrNotFound would tell the store a file is across the
// key's way (ErrNotRepository, NAME_INVALID), which no client retries.
// Some servers (versitygw) take parts for an aborted upload and refuse
// them at completion instead: InvalidPart, which is no error the store
// knows (a 500 UNKNOWN).
func aborted(err error) error {
	var api smithy.APIError
	if errors.Is(err, driver.ErrNotFound) || (errors.As(err, &api) && api.ErrorCode() == "InvalidPart") {
		return fmt.Errorf("%w: the unfinished write was aborted under it: %v", driver.ErrUnavailable, err)
	}
	return err
}

func (w *placeWriter) release() {
	w.done = true
	w.d.dropChunk(w.buf, w.held)
	w.buf, w.held = nil, nil
}

// Sweep aborts the multipart uploads to keys below dir that were started
// before t and that busy does not claim: writes (Place, or a Commit's
// assembly) whose process died before it finished or aborted them.
func (d *Driver) Sweep(ctx context.Context, dir string, before time.Time, busy func(key string) bool) (int, error) {
	if d.cfg.ReadOnly {
		return 0, nil
	}
	prefix := d.prefix
	if dir != "" {
		prefix += dir + "/"
	}
	in := &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: aws.String(prefix)}
	swept := 0
	for {
		cctx, cancel := d.call(ctx)
		out, err := d.s3.ListMultipartUploads(cctx, in)
		cancel()
		if err != nil {
			return swept, fail(ctx, "list unfinished writes", dir, err)
		}
		for _, u := range out.Uploads {
			obj := aws.ToString(u.Key)
			key := strings.TrimPrefix(obj, d.prefix)
			if u.Initiated == nil || !u.Initiated.Before(before) || !strings.HasPrefix(obj, prefix) || (busy != nil && busy(key)) {
				continue
			}
			cctx, cancel := d.call(ctx)
			_, err := d.s3.AbortMultipartUpload(cctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: u.Key, UploadId: u.UploadId})
			cancel()
			if err = fail(ctx, "abort", key, err); err != nil && !errors.Is(err, driver.ErrNotFound) {
				return swept, err
			}
			swept++
		}
		if !aws.ToBool(out.IsTruncated) {
			return swept, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
