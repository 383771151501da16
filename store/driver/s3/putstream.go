package s3

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pier-oci/pier/store/driver"
)

// maxPutSize is the largest object one PutObject makes (S3's limit).
const maxPutSize = 5 << 30

// putWriter writes an object whose size is known before its bytes as one
// PutObject that streams them as they come. Nothing is held in memory,
// and the server has no parts to join at the end (a second write of the
// object on servers that copy them). The last byte is held back until
// Finish: a request whose body has not ended is never an object, so a
// push that fails its digest, is aborted, or whose process dies leaves
// nothing at the key and nothing to sweep.
type putWriter struct {
	d        *Driver
	key, obj string
	size     int64 // declared
	written  int64 // taken from the caller, the held-back byte included
	last     []byte
	pw       *io.PipeWriter
	cancel   context.CancelFunc
	watch    *time.Timer // cuts the call when the server takes nothing for Timeout
	result   chan error
	done     bool
}

// errPutAborted ends the body of a PutObject the writer gave up.
var errPutAborted = errors.New("write aborted")

func (d *Driver) placeStreamed(ctx context.Context, key, obj string, want driver.Expected) *putWriter {
	size := want.Size
	pr, pw := io.Pipe()
	pctx, cancel := context.WithCancel(ctx)
	w := &putWriter{d: d, key: key, obj: obj, size: size, pw: pw, cancel: cancel, result: make(chan error, 1)}
	w.watch = time.AfterFunc(d.cfg.Timeout, cancel)
	w.watch.Stop()
	sse, kms := d.sse()
	go func() {
		// The request names the body's sha256, which the server checks:
		// besides damage on the way, that is what makes some servers
		// (versitygw) refuse a body cut short rather than store what
		// came of it. The pipe is hidden from smithy, which sends an
		// *io.PipeReader chunked, without the Content-Length it signed.
		_, err := d.s3.PutObject(pctx, &s3.PutObjectInput{
			Bucket: &d.bucket, Key: &obj, Body: struct{ io.Reader }{pr}, ContentLength: aws.Int64(size),
			ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(want.SHA256)),
			StorageClass:   d.storageClass(), ACL: d.acl(), ServerSideEncryption: sse, SSEKMSKeyId: kms,
		}, func(o *s3.Options) {
			// A body that streams cannot be sent again: the server's
			// answer (503, say) is the error, not a failed rewind.
			o.RetryMaxAttempts = 1
		})
		pr.CloseWithError(errPutAborted) // a Write still waiting returns
		w.result <- err
	}()
	return w
}

func (w *putWriter) Size() int64 { return w.written }

func (w *putWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %s: writer closed", w.key)
	}
	if w.written+int64(len(p)) > w.size {
		return 0, fmt.Errorf("write %s: more than the %d bytes declared", w.key, w.size)
	}
	send := p
	if w.written+int64(len(p)) == w.size && len(p) > 0 {
		send = p[:len(p)-1]
	}
	w.watch.Reset(w.d.cfg.Timeout)
	n, err := w.pw.Write(send)
	w.watch.Stop()
	w.written += int64(n)
	if err != nil {
		return n, w.end(err)
	}
	if len(send) < len(p) {
		w.last = append([]byte(nil), p[len(p)-1])
		w.written++
		// The request now waits, its body all but sent, for the store to
		// check the digest and decide: that wait has the deadline of a
		// call too (a server would cut an idle request anyway).
		w.watch.Reset(w.d.cfg.Timeout)
	}
	return len(p), nil
}

// end gives up the call and returns why it failed: the server's answer
// when it gave one, else cause.
func (w *putWriter) end(cause error) error {
	w.done = true
	w.watch.Stop()
	w.pw.CloseWithError(errPutAborted)
	w.cancel()
	err := <-w.result
	if err == nil || errors.Is(err, errPutAborted) {
		err = cause
	}
	return fail(context.Background(), "write", w.key, err)
}

// Finish sends the last byte: the object appears whole when the server
// answers.
func (w *putWriter) Finish(ctx context.Context) error {
	if w.done {
		return fmt.Errorf("finish %s: writer closed", w.key)
	}
	if w.written != w.size {
		return w.end(fmt.Errorf("%d bytes of the %d declared: %w", w.written, w.size, io.ErrUnexpectedEOF))
	}
	stop := context.AfterFunc(ctx, w.cancel)
	defer stop()
	w.watch.Reset(w.d.cfg.Timeout)
	defer w.watch.Stop()
	if _, err := w.pw.Write(w.last); err != nil {
		return w.end(err)
	}
	w.pw.Close()
	w.done = true
	err := <-w.result
	w.cancel()
	if err != nil {
		return fail(ctx, "write", w.key, err)
	}
	return nil
}

// Abort ends the call before its body is whole: the server makes no
// object.
func (w *putWriter) Abort() error {
	if w.done {
		return nil
	}
	w.end(errPutAborted)
	return nil
}

var _ driver.PlaceWriter = (*putWriter)(nil)
