package s3

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // Content-MD5, an integrity check S3 defines
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/pier-oci/pier/store/driver"
)

// An upload's record: the object at the upload's key. Its metadata marks
// it as one and gives its length, so Stat needs no GET.
type record struct {
	Format   int       `json:"pierUpload"` // recordFormat
	Size     int64     `json:"size"`
	Segments []segment `json:"segments"`
	// State is what the caller saved with the upload (driver.Checkpointer)
	// when it held StateSize bytes.
	State     []byte `json:"state,omitempty"`
	StateSize int64  `json:"stateSize,omitempty"`
}

// A segment is an object below the upload's private directory.
type segment struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	ETag string `json:"etag"`
}

const (
	recordFormat = 1
	// recordLimit bounds what is read as a record: a record of 10,000
	// segments is under 1 MiB.
	recordLimit = 2 << 20
	metaUpload  = "pier-upload"
	metaSize    = "pier-size"
	// MaxState bounds the state a caller saves with an upload.
	MaxState = 4 << 10
)

// uploadSize reports the length of an upload from its record's metadata,
// and whether the object is a record.
func uploadSize(meta map[string]string) (int64, bool) {
	if meta[metaUpload] == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(meta[metaSize], 10, 64)
	return n, err == nil
}

// segmentDir is where the segments of the upload at key are.
func (d *Driver) segmentDir(key string) string {
	return d.prefix + privateDir + "/uploads/" + key + "/"
}

func (d *Driver) segmentPieces(key string, segs []segment) []piece {
	dir := d.segmentDir(key)
	pieces := make([]piece, len(segs))
	for i, s := range segs {
		pieces[i] = piece{obj: dir + s.Name, etag: s.ETag, size: s.Size}
	}
	return pieces
}

// putRecord writes rec at obj, with the conditions given; it returns the
// record's new ETag.
func (d *Driver) putRecord(ctx context.Context, key, obj string, rec record, ifMatch, ifNoneMatch *string) (string, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	cctx, cancel := d.sendCall(ctx, len(data))
	defer cancel()
	out, err := d.s3.PutObject(cctx, &s3.PutObjectInput{
		Bucket: &d.bucket, Key: &obj, Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		ContentType: aws.String("application/json"),
		Metadata:    map[string]string{metaUpload: strconv.Itoa(recordFormat), metaSize: strconv.FormatInt(rec.Size, 10)},
		IfMatch:     ifMatch, IfNoneMatch: ifNoneMatch,
	})
	if err != nil {
		return "", fail(ctx, "write upload", key, err)
	}
	return aws.ToString(out.ETag), nil
}

// getRecord reads the record of the upload at key; a key without one is
// ErrNotFound.
func (d *Driver) getRecord(ctx context.Context, key, obj string) (record, string, error) {
	bctx, cancel := context.WithCancel(ctx)
	watch := time.AfterFunc(d.cfg.Timeout, cancel)
	out, err := d.s3.GetObject(bctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &obj})
	watch.Stop()
	if err != nil {
		cancel()
		return record{}, "", fail(ctx, "open upload", key, err)
	}
	if _, ok := uploadSize(out.Metadata); !ok {
		out.Body.Close()
		cancel()
		return record{}, "", fmt.Errorf("open upload %s: the object there is not an upload: %w", key, driver.ErrNotFound)
	}
	rec, err := d.readRecord(ctx, key, out, watch, cancel)
	return rec, aws.ToString(out.ETag), err
}

// readRecord decodes the record in a GET's body, and closes it.
func (d *Driver) readRecord(ctx context.Context, key string, out *s3.GetObjectOutput, watch *time.Timer, cancel context.CancelFunc) (record, error) {
	defer cancel()
	defer out.Body.Close()
	watch.Reset(d.cfg.Timeout)
	data, err := io.ReadAll(io.LimitReader(out.Body, recordLimit+1))
	watch.Stop()
	if err != nil {
		return record{}, fail(ctx, "read upload", key, err)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil || len(data) > recordLimit || rec.Format != recordFormat {
		return record{}, fmt.Errorf("read upload %s: not a record of format %d", key, recordFormat)
	}
	var sum int64
	for _, s := range rec.Segments {
		sum += s.Size
	}
	if sum != rec.Size {
		return record{}, fmt.Errorf("read upload %s: its segments hold %d bytes, its record says %d", key, sum, rec.Size)
	}
	return rec, nil
}

// Create starts an upload at key: its empty record, written only if there
// is no object there.
func (d *Driver) Create(ctx context.Context, key string) (driver.Writer, error) {
	obj, err := d.writable(key)
	if err != nil {
		return nil, err
	}
	rec := record{Format: recordFormat}
	etag, err := d.putRecord(ctx, key, obj, rec, nil, aws.String("*"))
	if errors.Is(err, driver.ErrConflict) {
		return nil, fmt.Errorf("create %s: %w", key, driver.ErrExists)
	}
	if err != nil {
		return nil, err
	}
	return &writer{d: d, ctx: ctx, key: key, obj: obj, etag: etag, rec: rec}, nil
}

// Append resumes the upload at key from its record.
func (d *Driver) Append(ctx context.Context, key string) (driver.Writer, error) {
	obj, err := d.writable(key)
	if err != nil {
		return nil, err
	}
	rec, etag, err := d.getRecord(ctx, key, obj)
	if err != nil {
		return nil, err
	}
	w := &writer{d: d, ctx: ctx, key: key, obj: obj, etag: etag, rec: rec, segs: slices.Clone(rec.Segments), size: rec.Size}
	if n := len(w.segs); n > 0 && w.segs[n-1].Size < MinChunkSize {
		w.tail = true
	}
	return w, nil
}

// writer appends to an upload: see the package doc. Write and Close use
// the context of the Create or Append that made it.
type writer struct {
	d        *Driver
	ctx      context.Context
	key, obj string
	etag     string    // the record's, as this writer found or left it
	rec      record    // the record at etag
	segs     []segment // the upload's segments now, before buf
	replaced []segment // the record's segments no longer in segs
	tail     bool      // the last of segs is short and must be read back before a Write
	buf      []byte    // the bytes after segs, at most a chunk
	size     int64     // the length of segs and buf
	dirty    bool      // something to save at Close
	state    []byte
	stateAt  int64
	stateSet bool
	failed   error // a Write failed and its bytes could not be taken back
	done     bool
	held     func() // gives back the budget buf holds; nil when none
}

var _ driver.Checkpointer = (*writer)(nil)

func (w *writer) Size() int64 { return w.size }

// Checkpoint returns the state saved with the upload and the length the
// upload had when it was set.
func (w *writer) Checkpoint() ([]byte, int64) { return w.rec.State, w.rec.StateSize }

// SetCheckpoint sets the state to save at Close, for the upload's length
// now.
func (w *writer) SetCheckpoint(state []byte) {
	w.state, w.stateAt, w.stateSet = slices.Clone(state), w.size, true
}

func (w *writer) Write(p []byte) (int, error) {
	switch {
	case w.done:
		return 0, fmt.Errorf("write %s: upload writer closed", w.key)
	case w.failed != nil:
		return 0, w.failed
	}
	if w.tail {
		if err := w.readTail(); err != nil {
			return 0, err
		}
	}
	good := w.size
	for n := 0; n < len(p); {
		if w.buf == nil {
			if err := w.takeBuffer(); err != nil {
				w.truncate(good)
				return 0, err
			}
		}
		k := copy(w.buf[len(w.buf):cap(w.buf)], p[n:])
		w.buf = w.buf[:len(w.buf)+k]
		n += k
		w.size += int64(k)
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				w.truncate(good)
				return 0, err
			}
			w.dropBuffer() // written: the next chunk takes one again
		}
	}
	w.dirty = true
	return len(p), nil
}

// readTail takes the record's short last segment back into the buffer, so
// that what follows makes it a segment of a full part.
func (w *writer) readTail() error {
	last := w.segs[len(w.segs)-1]
	data, err := w.readSegment(last, last.Size)
	if err != nil {
		return err
	}
	if err := w.takeBuffer(); err != nil {
		return err
	}
	w.buf = append(w.buf, data...)
	w.segs = w.segs[:len(w.segs)-1]
	w.replaced = append(w.replaced, last)
	w.tail = false
	return nil
}

// readSegment reads the first n bytes of segment s.
func (w *writer) readSegment(s segment, n int64) ([]byte, error) {
	r := w.d.newReader(w.ctx, w.key, []piece{{obj: w.d.segmentDir(w.key) + s.Name, etag: s.ETag, size: n}})
	defer r.Close()
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("read back %s: %w", w.key, err)
	}
	return data, nil
}

// flush writes the buffer as the next segment.
func (w *writer) flush() error {
	if len(w.segs) >= maxParts-1 {
		return fmt.Errorf("write %s: more than %d segments of %d bytes: %w", w.key, maxParts, w.d.cfg.ChunkSize, driver.ErrTooLarge)
	}
	start := w.size - int64(len(w.buf))
	name := fmt.Sprintf("%013d-%s", start, randomHex(4))
	obj := w.d.segmentDir(w.key) + name
	ctx, cancel := w.d.sendCall(w.ctx, len(w.buf))
	defer cancel()
	out, err := w.d.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &w.d.bucket, Key: &obj, Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf))),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		return fail(w.ctx, "write", w.key, err)
	}
	w.segs = append(w.segs, segment{Name: name, Size: int64(len(w.buf)), ETag: aws.ToString(out.ETag)})
	w.buf = w.buf[:0]
	return nil
}

// truncate takes the upload back to length good after a Write failed:
// segments written past it are dropped (they stay as garbage until the
// upload ends) and the one across it is read back into the buffer. If that
// read fails too, the writer is failed: Close saves nothing, and the upload
// stays as its record has it.
func (w *writer) truncate(good int64) {
	inSegs := w.size - int64(len(w.buf))
	if good >= inSegs {
		w.buf = w.buf[:good-inSegs]
		w.size = good
		return
	}
	w.buf = w.buf[:0]
	for inSegs > good {
		last := w.segs[len(w.segs)-1]
		w.segs = w.segs[:len(w.segs)-1]
		inSegs -= last.Size
		if inSegs < good {
			data, err := w.readSegment(last, good-inSegs)
			if err != nil {
				w.failed = fmt.Errorf("write %s: a write failed and its bytes could not be taken back: %w", w.key, err)
				return
			}
			w.buf = append(w.buf, data...)
		}
	}
	w.size = good
}

// Close writes the buffer as a segment, however short, and the record.
func (w *writer) Close() error {
	if w.done {
		return fmt.Errorf("close %s: upload writer closed", w.key)
	}
	w.done = true
	defer w.release()
	if w.failed != nil {
		return w.failed
	}
	if !w.dirty && !w.stateSet {
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	rec := record{Format: recordFormat, Size: w.size, Segments: w.segs, State: w.rec.State, StateSize: w.rec.StateSize}
	if w.stateSet {
		rec.State, rec.StateSize = w.state, w.stateAt
	}
	if _, err := w.d.putRecord(w.ctx, w.key, w.obj, rec, aws.String(w.etag), nil); err != nil {
		// Segments written here stay as garbage until the upload ends:
		// after a timeout the record may have been written after all.
		return err
	}
	// The read-back short segment is in no record now.
	w.d.cleanUp(w.ctx, w.key, w.segmentObjs(w.replaced)...)
	return nil
}

// Abort ends the writer without saving: the record, written only at
// Close, still names the upload as Append found it. Segments this writer
// wrote are deleted (what cannot be is left until the upload ends).
func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.release()
	var mine []segment
	for _, s := range w.segs {
		if !slices.ContainsFunc(w.rec.Segments, func(r segment) bool { return r.Name == s.Name }) {
			mine = append(mine, s)
		}
	}
	w.d.cleanUp(w.ctx, w.key, w.segmentObjs(mine)...)
	return nil
}

func (w *writer) release() { w.dropBuffer() }

// bufferWait bounds a writer's wait for a chunk buffer of the budget. A
// writer holds its chunk while its client fills it, and clients on slow
// links fill slowly: past this wait the writer takes a chunk outside the
// budget rather than let uploads behind slow ones starve (and their idle
// bodies be cut). The budget bounds the memory of fast pushes, which is
// where it grows.
const bufferWait = 5 * time.Second

// takeBuffer gives the writer an empty chunk buffer (takeChunk).
func (w *writer) takeBuffer() error {
	buf, held, err := w.d.takeChunk(w.ctx)
	if err != nil {
		return fmt.Errorf("write %s: %w", w.key, err)
	}
	w.buf, w.held = buf, held
	return nil
}

// takeChunk gives an empty chunk buffer, within the driver's budget of
// chunk buffers (Config.Buffers): a writer waits for its turn (for
// bufferWait at most), or until ctx ends, rather than the process holding
// a chunk for every upload at once. held gives the buffer's share of the
// budget back; it is nil for a buffer taken outside the budget.
func (d *Driver) takeChunk(ctx context.Context) (buf []byte, held func(), err error) {
	if b := d.cfg.Buffers; b != nil {
		wctx, cancel := context.WithTimeout(ctx, bufferWait)
		_, release, err := b.Acquire(wctx, d.cfg.ChunkSize)
		cancel()
		switch {
		case err == nil:
			held = release
		case ctx.Err() != nil:
			return nil, nil, fmt.Errorf("waiting for a chunk buffer: %w", ctx.Err())
		default: // waited long enough: a chunk of its own
			return make([]byte, 0, d.cfg.ChunkSize), nil, nil
		}
	}
	return d.reuseBuffer(), held, nil
}

// tryChunk gives an empty chunk buffer only if the budget has one free
// now, with no one waiting for it: a second buffer, to fill one chunk
// while the last is sent, is worth having only when it costs no other
// upload its turn.
func (d *Driver) tryChunk() (buf []byte, held func(), ok bool) {
	if b := d.cfg.Buffers; b != nil {
		if held, ok = b.TryAcquire(d.cfg.ChunkSize); !ok {
			return nil, nil, false
		}
	}
	return d.reuseBuffer(), held, true
}

func (d *Driver) reuseBuffer() []byte {
	select {
	case buf := <-d.free:
		return buf
	default:
		return d.newBuffer()
	}
}

// newBuffer makes a chunk buffer. Within a budget it is mapped outside the
// Go heap and kept for reuse for the life of the process (there are at
// most the budget's worth): the collector lets the heap grow to twice
// what is live before it runs, and chunks counted as live would double
// their own cost. Without a budget it is an ordinary slice.
func (d *Driver) newBuffer() []byte {
	if d.cfg.Buffers != nil {
		if b, err := syscall.Mmap(-1, 0, int(d.cfg.ChunkSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE); err == nil {
			return b[:0]
		}
	}
	return make([]byte, 0, d.cfg.ChunkSize)
}

// dropBuffer gives the chunk buffer back (its bytes written, or given up).
func (w *writer) dropBuffer() {
	w.d.dropChunk(w.buf, w.held)
	w.buf, w.held = nil, nil
}

// dropChunk gives back a buffer takeChunk or tryChunk gave: one of the
// budget is kept for reuse.
func (d *Driver) dropChunk(buf []byte, held func()) {
	if buf != nil && int64(cap(buf)) == d.cfg.ChunkSize && (held != nil || d.cfg.Buffers == nil) {
		select {
		case d.free <- buf[:0]:
		default:
		}
	}
	if held != nil {
		held()
	}
}

func (w *writer) segmentObjs(segs []segment) []string {
	objs := make([]string, len(segs))
	for i, s := range segs {
		objs[i] = w.d.segmentDir(w.key) + s.Name
	}
	return objs
}

// Commit makes the upload's content the object at dst: see the package doc.
func (w *writer) Commit(ctx context.Context, dst string) error {
	if w.done {
		return fmt.Errorf("commit %s: upload writer closed", w.key)
	}
	if w.failed != nil {
		return w.failed
	}
	dstObj, err := w.d.writable(dst)
	if err != nil {
		return err
	}
	pieces := w.d.segmentPieces(w.key, w.segs)
	switch {
	case len(pieces) == 0:
		_, err = w.d.put(ctx, dst, w.buf, nil, nil)
	case len(w.buf) == 0 && len(pieces) == 1:
		err = w.d.copyObject(ctx, dst, dstObj, pieces[0], nil)
	default:
		err = w.d.assemble(ctx, dst, dstObj, w.d.copyParts(pieces), w.buf)
	}
	if err != nil {
		return fmt.Errorf("commit %s: %w", w.key, err)
	}
	w.done = true
	w.release()
	w.d.removeUpload(ctx, w.key, w.obj)
	return nil
}

// Cancel removes the upload: its record and its segments.
func (w *writer) Cancel(ctx context.Context) error {
	if w.done {
		return fmt.Errorf("cancel %s: upload writer closed", w.key)
	}
	w.done = true
	w.release()
	if err := w.d.deleteObjects(ctx, []string{w.obj}); err != nil {
		return err
	}
	return w.d.deleteTree(ctx, w.d.segmentDir(w.key))
}

// removeUpload deletes an upload that was committed; what cannot be
// deleted now is left for the next Delete of its key (garbage collection).
func (d *Driver) removeUpload(ctx context.Context, key, obj string) {
	if err := d.deleteObjects(ctx, []string{obj}); err != nil {
		d.log.Warn("s3: an upload committed but its record stays", "key", key, "err", err)
		return
	}
	if err := d.deleteTree(ctx, d.segmentDir(key)); err != nil {
		d.log.Warn("s3: an upload committed but its segments stay", "key", key, "err", err)
	}
}

// cleanUp deletes objects nothing refers to any more; failures leave them
// until the upload ends.
func (d *Driver) cleanUp(ctx context.Context, key string, objs ...string) {
	if len(objs) == 0 {
		return
	}
	if err := d.deleteObjects(ctx, objs); err != nil {
		d.log.Debug("s3: unused segments stay until the upload ends", "key", key, "err", err)
	}
}

// A copyPart is a part of a multipart upload copied from a piece.
type copyPart = piece

// copyParts cuts pieces into the parts of a multipart copy: a piece longer
// than the copy chunk size is cut into ranges of it, and a short remainder
// goes with the range before it, since only the last part may be shorter
// than S3's minimum.
func (d *Driver) copyParts(pieces []piece) []copyPart {
	chunk := d.cfg.MultipartCopyChunkSize
	var parts []copyPart
	for _, p := range pieces {
		for off := int64(0); off < p.size; {
			n := min(chunk, p.size-off)
			if rest := p.size - off - n; rest > 0 && rest < MinChunkSize {
				n += rest
			}
			parts = append(parts, copyPart{obj: p.obj, etag: p.etag, off: p.off + off, size: n})
			off += n
		}
	}
	return parts
}

// assemble makes dstObj a multipart upload of parts copied on the server,
// MultipartCopyMaxConcurrency at once, and then tail from memory, and
// completes it: dst appears whole, or not at all. With meta the object
// gets that metadata (Touch).
func (d *Driver) assemble(ctx context.Context, dst, dstObj string, parts []copyPart, tail []byte, meta ...map[string]string) error {
	n := len(parts)
	if len(tail) > 0 {
		n++
	}
	if n > maxParts {
		return fmt.Errorf("copy to %s: %d parts, more than S3's %d: %w", dst, n, maxParts, driver.ErrTooLarge)
	}
	if n == 0 {
		_, err := d.put(ctx, dst, nil, nil, nil)
		return err
	}
	sse, kms := d.sse()
	in := &s3.CreateMultipartUploadInput{
		Bucket: &d.bucket, Key: &dstObj,
		StorageClass: d.storageClass(), ACL: d.acl(), ServerSideEncryption: sse, SSEKMSKeyId: kms,
	}
	if len(meta) > 0 {
		in.Metadata = meta[0]
	}
	cctx, cancel := d.call(ctx)
	created, err := d.s3.CreateMultipartUpload(cctx, in)
	cancel()
	if err != nil {
		return fail(ctx, "copy to", dst, err)
	}
	id := created.UploadId
	total := int64(len(tail))
	for _, p := range parts {
		total += p.size
	}
	completed := make([]types.CompletedPart, n)
	err = run(ctx, len(parts), d.cfg.MultipartCopyMaxConcurrency, func(ctx context.Context, i int) error {
		p := parts[i]
		cctx, cancel := d.copyCall(ctx, p.size)
		defer cancel()
		out, err := d.s3.UploadPartCopy(cctx, &s3.UploadPartCopyInput{
			Bucket: &d.bucket, Key: &dstObj, UploadId: id, PartNumber: aws.Int32(int32(i + 1)),
			CopySource: aws.String(copySource(d.bucket, p.obj)), CopySourceIfMatch: aws.String(p.etag),
			CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", p.off, p.off+p.size-1)),
		})
		if err != nil {
			return fail(ctx, "copy to", dst, err)
		}
		completed[i] = types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(int32(i + 1))}
		return nil
	})
	if err == nil && len(tail) > 0 {
		cctx, cancel := d.sendCall(ctx, len(tail))
		var out *s3.UploadPartOutput
		out, err = d.s3.UploadPart(cctx, &s3.UploadPartInput{
			Bucket: &d.bucket, Key: &dstObj, UploadId: id, PartNumber: aws.Int32(int32(n)),
			Body: bytes.NewReader(tail), ContentLength: aws.Int64(int64(len(tail))), ContentMD5: aws.String(md5Of(tail)),
		})
		cancel()
		if err != nil {
			err = fail(ctx, "write", dst, err)
		} else {
			completed[n-1] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(n))}
		}
	}
	if err == nil {
		// Completing joins the parts: a copy of the object on some servers.
		cctx, cancel := d.copyCall(ctx, total)
		_, err = d.s3.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{
			Bucket: &d.bucket, Key: &dstObj, UploadId: id,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: completed},
		})
		cancel()
		if err == nil {
			return nil
		}
		err = fail(ctx, "complete", dst, err)
	}
	// The parts are not an object; abort them so the bucket does not keep
	// (and bill) them. Not with ctx: it may be what ended.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.Timeout)
	defer cancel()
	if _, aerr := d.s3.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: &dstObj, UploadId: id}); aerr != nil {
		d.log.Warn("s3: a failed multipart upload could not be aborted", "key", dst, "err", aerr)
	}
	return err
}

// md5Of is a part's Content-MD5: a part is sent without a CRC32 (a part's
// checksum must match its upload's algorithm on AWS), so this guards it.
func md5Of(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
