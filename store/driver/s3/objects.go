package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/pier-oci/pier/store/driver"
)

// info describes an object from what S3 says of it.
func info(key string, size int64, modified *time.Time, etag *string) driver.Info {
	t := aws.ToTime(modified)
	return driver.Info{Key: key, Size: size, ModTime: t, Changed: t, Version: aws.ToString(etag), Content: aws.ToString(etag), Links: 1}
}

// Stat describes the object at key; an upload's Size is its length.
func (d *Driver) Stat(ctx context.Context, key string) (driver.Info, error) {
	obj, err := d.object(key)
	if err != nil {
		return driver.Info{}, err
	}
	cctx, cancel := d.call(ctx)
	defer cancel()
	out, err := d.s3.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &obj})
	if err != nil {
		return driver.Info{}, fail(ctx, "stat", key, err)
	}
	fi := info(key, aws.ToInt64(out.ContentLength), out.LastModified, out.ETag)
	if size, ok := uploadSize(out.Metadata); ok {
		fi.Size = size
	}
	return fi, nil
}

// Open opens the object at key, or the content of the upload there.
func (d *Driver) Open(ctx context.Context, key string) (io.ReadSeekCloser, driver.Info, error) {
	return d.open(ctx, key, false)
}

// open is Open; with stream, the reader's GETs are made for StreamTo.
func (d *Driver) open(ctx context.Context, key string, stream bool) (io.ReadSeekCloser, driver.Info, error) {
	obj, err := d.object(key)
	if err != nil {
		return nil, driver.Info{}, err
	}
	// One GET: its body is the start of the object, which is where a
	// reader begins; an upload's record is read and its segments follow.
	bctx, cancel := context.WithCancel(ctx)
	watch := time.AfterFunc(d.cfg.Timeout, cancel)
	out, err := d.s3.GetObject(bctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &obj}, d.getOptions(stream)...)
	watch.Stop()
	if err != nil {
		cancel()
		return nil, driver.Info{}, fail(ctx, "open", key, err)
	}
	fi := info(key, aws.ToInt64(out.ContentLength), out.LastModified, out.ETag)
	if _, ok := uploadSize(out.Metadata); ok {
		rec, err := d.readRecord(ctx, key, out, watch, cancel)
		if err != nil {
			return nil, driver.Info{}, err
		}
		fi.Size = rec.Size
		r := d.newReader(ctx, key, d.segmentPieces(key, rec.Segments))
		r.stream = stream
		return r, fi, nil
	}
	r := d.newReader(ctx, key, []piece{{obj: obj, etag: fi.Version, size: fi.Size}})
	r.stream = stream
	r.prime(out.Body, cancel, watch)
	return r, fi, nil
}

// ReadFile reads a small object whole.
func (d *Driver) ReadFile(ctx context.Context, key string, limit int64) ([]byte, driver.Info, error) {
	r, fi, err := d.Open(ctx, key)
	if err != nil {
		return nil, driver.Info{}, err
	}
	defer r.Close()
	if fi.Size > limit {
		return nil, driver.Info{}, fmt.Errorf("read %s: %d bytes, more than %d: %w", key, fi.Size, limit, driver.ErrTooLarge)
	}
	data := make([]byte, fi.Size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, driver.Info{}, fmt.Errorf("read %s: %w", key, err)
	}
	return data, fi, nil
}

// WriteFile replaces the object at key with data.
func (d *Driver) WriteFile(ctx context.Context, key string, data []byte) (driver.Info, error) {
	return d.put(ctx, key, data, nil, nil)
}

// ReplaceFile is WriteFile if the object at key has the ETag version, or
// with version "" if there is none: a conditional PutObject.
func (d *Driver) ReplaceFile(ctx context.Context, key string, data []byte, version string) (driver.Info, error) {
	if version == "" {
		return d.put(ctx, key, data, nil, aws.String("*"))
	}
	fi, err := d.put(ctx, key, data, aws.String(version), nil)
	if errors.Is(err, driver.ErrNotFound) {
		// If-Match on a key with no object: it changed (it went away).
		return driver.Info{}, fmt.Errorf("replace %s: %w", key, driver.ErrConflict)
	}
	return fi, err
}

func (d *Driver) put(ctx context.Context, key string, data []byte, ifMatch, ifNoneMatch *string) (driver.Info, error) {
	obj, err := d.writable(key)
	if err != nil {
		return driver.Info{}, err
	}
	sse, kms := d.sse()
	cctx, cancel := d.sendCall(ctx, len(data))
	defer cancel()
	out, err := d.s3.PutObject(cctx, &s3.PutObjectInput{
		Bucket: &d.bucket, Key: &obj, Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		IfMatch: ifMatch, IfNoneMatch: ifNoneMatch,
		StorageClass: d.storageClass(), ACL: d.acl(), ServerSideEncryption: sse, SSEKMSKeyId: kms,
	})
	if err != nil {
		return driver.Info{}, fail(ctx, "write", key, err)
	}
	// S3 does not say when; the local clock is close enough for an
	// object just written (Stat gives S3's time).
	now := time.Now()
	return driver.Info{Key: key, Size: int64(len(data)), ModTime: now, Changed: now, Version: aws.ToString(out.ETag), Content: aws.ToString(out.ETag), Links: 1}, nil
}

// Copy makes dst a copy of src on the server: CopyObject up to the
// multipart copy threshold, a multipart copy of ranges above it. An upload
// at src is copied as its content.
func (d *Driver) Copy(ctx context.Context, src, dst string) error {
	srcObj, err := d.object(src)
	if err != nil {
		return err
	}
	dstObj, err := d.writable(dst)
	if err != nil {
		return err
	}
	cctx, cancel := d.call(ctx)
	out, err := d.s3.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &srcObj})
	cancel()
	if err != nil {
		return fail(ctx, "copy", src, err)
	}
	if _, ok := uploadSize(out.Metadata); ok {
		rec, _, err := d.getRecord(ctx, src, srcObj)
		if err != nil {
			return err
		}
		return d.assemble(ctx, dst, dstObj, d.copyParts(d.segmentPieces(src, rec.Segments)), nil)
	}
	p := piece{obj: srcObj, etag: aws.ToString(out.ETag), size: aws.ToInt64(out.ContentLength)}
	return d.copyObject(ctx, dst, dstObj, p, nil)
}

// copyObject copies the object p to dstObj; with meta it replaces the
// metadata (Touch), else the copy has the source's.
func (d *Driver) copyObject(ctx context.Context, dst, dstObj string, p piece, meta map[string]string) error {
	if p.size > d.cfg.MultipartCopyThresholdSize {
		return d.assemble(ctx, dst, dstObj, d.copyParts([]piece{p}), nil, meta)
	}
	sse, kms := d.sse()
	in := &s3.CopyObjectInput{
		Bucket: &d.bucket, Key: &dstObj, CopySource: aws.String(copySource(d.bucket, p.obj)),
		CopySourceIfMatch: aws.String(p.etag),
		StorageClass:      d.storageClass(), ACL: d.acl(), ServerSideEncryption: sse, SSEKMSKeyId: kms,
	}
	if meta != nil {
		in.MetadataDirective = types.MetadataDirectiveReplace
		in.Metadata = meta
	}
	cctx, cancel := d.copyCall(ctx, p.size)
	defer cancel()
	if _, err := d.s3.CopyObject(cctx, in); err != nil {
		return fail(ctx, "copy to", dst, err)
	}
	return nil
}

// copySource is the x-amz-copy-source of an object: bucket/key, with
// everything but unreserved characters and slashes percent-encoded (servers
// differ on '+' and the like, so none is left to interpretation).
func copySource(bucket, obj string) string {
	var b strings.Builder
	b.WriteString(bucket)
	b.WriteByte('/')
	for _, c := range []byte(obj) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-_.~/", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// Move is Copy, then Delete of src.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	if src == dst {
		_, err := d.Stat(ctx, src)
		return err
	}
	if err := d.Copy(ctx, src, dst); err != nil {
		return fmt.Errorf("move %s: %w", src, err)
	}
	return d.Delete(ctx, src)
}

// Delete removes the objects at keys (uploads with their segments), in
// batches of S3's DeleteObjects.
func (d *Driver) Delete(ctx context.Context, keys ...string) error {
	objs := make([]string, len(keys))
	for i, key := range keys {
		obj, err := d.writable(key)
		if err != nil {
			return err
		}
		objs[i] = obj
	}
	if err := d.deleteObjects(ctx, objs); err != nil {
		return err
	}
	return d.deleteSegments(ctx, keys)
}

// deleteObjects deletes objects, a thousand a call.
func (d *Driver) deleteObjects(ctx context.Context, objs []string) error {
	for len(objs) > 0 {
		n := min(len(objs), 1000)
		ids := make([]types.ObjectIdentifier, n)
		for i, obj := range objs[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(obj)}
		}
		objs = objs[n:]
		cctx, cancel := d.call(ctx)
		out, err := d.s3.DeleteObjects(cctx, &s3.DeleteObjectsInput{
			Bucket: &d.bucket, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		cancel()
		if err != nil {
			return fail(ctx, "delete", aws.ToString(ids[0].Key), err)
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) == "NoSuchKey" {
				continue
			}
			return fmt.Errorf("delete %s: %s: %s", strings.TrimPrefix(aws.ToString(e.Key), d.prefix), aws.ToString(e.Code), aws.ToString(e.Message))
		}
	}
	return nil
}

// deleteSegments removes the segments of any upload among keys: one
// listing of the private directory per directory of keys.
func (d *Driver) deleteSegments(ctx context.Context, keys []string) error {
	byDir := map[string]map[string]bool{}
	for _, key := range keys {
		dir, base := splitKey(key)
		if byDir[dir] == nil {
			byDir[dir] = map[string]bool{}
		}
		byDir[dir][base] = true
	}
	for dir, bases := range byDir {
		priv := d.prefix + privateDir + "/uploads/"
		if dir != "" {
			priv += dir + "/"
		}
		_, prefixes, err := d.listPrefix(ctx, priv, "/")
		if err != nil {
			return err
		}
		for _, p := range prefixes {
			if bases[strings.TrimSuffix(strings.TrimPrefix(p, priv), "/")] {
				if err := d.deleteTree(ctx, p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// deleteTree deletes every object whose key starts with prefix.
func (d *Driver) deleteTree(ctx context.Context, prefix string) error {
	objs, _, err := d.listPrefix(ctx, prefix, "")
	if err != nil {
		return err
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = aws.ToString(o.Key)
	}
	return d.deleteObjects(ctx, keys)
}

func splitKey(key string) (dir, base string) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", key
	}
	return key[:i], key[i+1:]
}

// Touch makes the object at key changed now: a copy onto itself with its
// metadata, which on AWS gives it a new LastModified. A server that keeps
// the time on such a copy (versitygw only rewrites the metadata) gets a
// copy to a private key and back, a real rewrite; the driver remembers to
// do that from then on.
func (d *Driver) Touch(ctx context.Context, key string) error {
	obj, err := d.writable(key)
	if err != nil {
		return err
	}
	before, err := d.head(ctx, key, obj)
	if err != nil {
		return fmt.Errorf("touch: %w", err)
	}
	meta := before.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	p := piece{obj: obj, etag: aws.ToString(before.ETag), size: aws.ToInt64(before.ContentLength)}
	if !d.touchByCopy.Load() {
		if err := d.copyObject(ctx, key, obj, p, meta); err != nil {
			return err
		}
		after, err := d.head(ctx, key, obj)
		if err != nil {
			return fmt.Errorf("touch: %w", err)
		}
		if aws.ToTime(after.LastModified).After(aws.ToTime(before.LastModified)) {
			return nil
		}
		d.touchByCopy.Store(true)
		p.etag = aws.ToString(after.ETag)
	}
	tmp := d.prefix + privateDir + "/touch/" + randomHex(8)
	if err := d.copyObject(ctx, key, tmp, p, nil); err != nil {
		return err
	}
	defer d.cleanUp(context.WithoutCancel(ctx), key, tmp)
	copied, err := d.head(ctx, key, tmp)
	if err != nil {
		return fmt.Errorf("touch: %w", err)
	}
	p = piece{obj: tmp, etag: aws.ToString(copied.ETag), size: p.size}
	return d.copyObject(ctx, key, obj, p, meta)
}

func (d *Driver) head(ctx context.Context, key, obj string) (*s3.HeadObjectOutput, error) {
	cctx, cancel := d.call(ctx)
	defer cancel()
	out, err := d.s3.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &obj})
	if err != nil {
		return nil, fail(ctx, "stat", key, err)
	}
	return out, nil
}

// RedirectURL presigns a GET of the object at key.
func (d *Driver) RedirectURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	obj, err := d.object(key)
	if err != nil {
		return "", err
	}
	req, err := s3.NewPresignClient(d.s3).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &obj},
		s3.WithPresignExpires(expiry))
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", key, err)
	}
	return req.URL, nil
}

// run calls fn for each of n items with at most limit at once, and returns
// the first error; after one, the rest are not started.
func run(parent context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		slots = make(chan struct{}, max(limit, 1))
	)
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil && parent.Err() != nil {
		return parent.Err()
	}
	return first
}
