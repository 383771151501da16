package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/driver"
)

// A monolithic push to a store on a bucket (the digest given with the
// body) is written straight to the blob's key: while its body streams no
// upload segment is written, only the blob's own multipart upload, and
// the upload is gone once the blob is in.
func TestMonolithicPushIsWrittenOnceAtItsKey(t *testing.T) {
	d, st, chunks := bucketStore(t, nil, nil)
	ctx := context.Background()
	data := patterned(3*MinChunkSize + 777)
	dg := digest.FromBytes(data)
	var seen []string
	body := &watchedBody{r: bytes.NewReader(data), at: 2*MinChunkSize + 10, check: func() {
		objs, multiparts := rawObjects(t, d)
		seen = append(append(seen, objs...), multiparts...)
	}}
	id, err := st.NewUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CommitUpload(ctx, "app", id, body, dg); err != nil {
		t.Fatal(err)
	}
	for _, k := range seen {
		if strings.HasPrefix(k, privateDir) {
			t.Fatalf("a monolithic push wrote upload segments: %v", seen)
		}
	}
	if !contains(seen, "app/blobs/sha256/"+dg.Encoded()) {
		t.Fatalf("mid-push the bucket held %v, not the blob's multipart upload", seen)
	}
	assertStoredBlob(t, st, "app", dg, data)
	objs, multiparts := rawObjects(t, d)
	if len(multiparts) != 0 || contains(objs, "app/.uploads/"+id) {
		t.Fatalf("left after the push: objects %v, multipart uploads %v", objs, multiparts)
	}
	if used := chunks.InUse(); used != 0 {
		t.Fatalf("%d bytes of the chunk budget still held", used)
	}
}

// A monolithic push whose bytes are not its digest, or whose body breaks,
// leaves no blob and no parts; a broken one leaves its upload empty, and
// the client's retry succeeds.
func TestMonolithicPushThatFailsLeavesNothing(t *testing.T) {
	d, st, chunks := bucketStore(t, nil, nil)
	ctx := context.Background()
	data := patterned(2*MinChunkSize + 5)
	dg := digest.FromBytes(data)

	id, _ := st.NewUpload(ctx, "app")
	wrong := append([]byte{1}, data[1:]...)
	if _, err := st.CommitUpload(ctx, "app", id, bytes.NewReader(wrong), dg); !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatalf("push of other bytes: %v, want ErrDigestMismatch", err)
	}
	if _, err := st.StatBlob(ctx, "app", dg); err == nil {
		t.Fatal("a blob is there after a digest mismatch")
	}
	if _, multiparts := rawObjects(t, d); len(multiparts) != 0 {
		t.Fatalf("parts left after a mismatch: %v", multiparts)
	}

	id, _ = st.NewUpload(ctx, "app")
	broken := io.MultiReader(bytes.NewReader(data[:MinChunkSize+3]), errReader{errors.New("connection reset")})
	if _, err := st.CommitUpload(ctx, "app", id, broken, dg); err == nil {
		t.Fatal("a push whose body broke succeeded")
	}
	if n, err := st.UploadSize(ctx, "app", id); err != nil || n != 0 {
		t.Fatalf("after a broken body the upload is %d bytes, %v; want an empty upload", n, err)
	}
	if _, multiparts := rawObjects(t, d); len(multiparts) != 0 {
		t.Fatalf("parts left after a broken body: %v", multiparts)
	}
	if _, err := st.CommitUpload(ctx, "app", id, bytes.NewReader(data), dg); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	assertStoredBlob(t, st, "app", dg, data)
	if used := chunks.InUse(); used != 0 {
		t.Fatalf("%d bytes of the chunk budget still held", used)
	}
}

// bucketStore is a store on its own prefix of the test bucket, with a
// budget of two chunk buffers and idx as its dedupe index (none when
// nil), over wrap of the driver when wrap is given.
func bucketStore(t *testing.T, idx cache.Cache, wrap func(*Driver) driver.Driver) (*Driver, *store.Store, *budget.Budget) {
	t.Helper()
	cfg := testConfig(t, testServer(t))
	cfg.Buffers = budget.New(2 * MinChunkSize)
	d := mustNew(t, cfg)
	var drv driver.Driver = d
	if wrap != nil {
		drv = wrap(d)
	}
	st, err := store.New(store.Options{Driver: drv, Cache: idx})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return d, st, cfg.Buffers
}

// watchedBody calls check once, when at bytes were read.
type watchedBody struct {
	r     io.Reader
	read  int
	at    int
	check func()
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.read < b.at {
		p = p[:min(len(p), b.at-b.read)]
	} else if b.check != nil {
		b.check()
		b.check = nil
	}
	n, err := b.r.Read(p)
	b.read += n
	return n, err
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func assertStoredBlob(t *testing.T, st *store.Store, repo string, dg digest.Digest, want []byte) {
	t.Helper()
	f, _, err := st.OpenBlob(context.Background(), repo, dg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("blob %s: %d bytes, %v; want the %d pushed", dg, len(got), err, len(want))
	}
}

// A monolithic push whose length is known (a request's Content-Length)
// is one PutObject streamed as the body comes: mid-push the bucket holds
// no part, no segment and nothing at the blob's key, and no chunk buffer
// is taken.
func TestSizedMonolithicPushIsOneStreamedPut(t *testing.T) {
	d, st, chunks := bucketStore(t, nil, nil)
	ctx := context.Background()
	data := patterned(3*MinChunkSize + 777)
	dg := digest.FromBytes(data)
	var seen []string
	held := int64(-1)
	body := &watchedBody{r: bytes.NewReader(data), at: 2*MinChunkSize + 10, check: func() {
		objs, multiparts := rawObjects(t, d)
		seen = append(append(seen, objs...), multiparts...)
		held = chunks.InUse()
	}}
	id, err := st.NewUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CommitUpload(ctx, "app", id, store.Sized{Reader: body, Size: int64(len(data))}, dg); err != nil {
		t.Fatal(err)
	}
	for _, k := range seen {
		if k == "app/blobs/sha256/"+dg.Encoded() || strings.HasPrefix(k, privateDir) {
			t.Fatalf("mid-push the bucket held %v: a part, a segment or the blob", seen)
		}
	}
	if held != 0 {
		t.Fatalf("mid-push %d bytes of the chunk budget were held; want none", held)
	}
	assertStoredBlob(t, st, "app", dg, data)
	if objs, multiparts := rawObjects(t, d); len(multiparts) != 0 || contains(objs, "app/.uploads/"+id) {
		t.Fatalf("left after the push: objects %v, multipart uploads %v", objs, multiparts)
	}
}

// A sized push that fails its digest, or whose body breaks, leaves
// nothing at the blob's key; one over quota is refused before its first
// byte is read.
func TestSizedMonolithicPushThatFailsLeavesNothing(t *testing.T) {
	d, st, _ := bucketStore(t, nil, nil)
	ctx := context.Background()
	data := patterned(2*MinChunkSize + 5)
	dg := digest.FromBytes(data)
	sized := func(r io.Reader) store.Sized { return store.Sized{Reader: r, Size: int64(len(data))} }
	nothingLeft := func(what string) {
		t.Helper()
		if info, err := st.StatBlob(ctx, "app", dg); err == nil {
			fi, ferr := d.Stat(ctx, "app/blobs/sha256/"+dg.Encoded())
			t.Fatalf("a blob is there after %s: %+v; %+v %v", what, info, fi, ferr)
		}
		objs, multiparts := rawObjects(t, d)
		if len(multiparts) != 0 || contains(objs, "app/blobs/sha256/"+dg.Encoded()) {
			t.Fatalf("after %s: objects %v, multipart uploads %v", what, objs, multiparts)
		}
	}

	id, _ := st.NewUpload(ctx, "app")
	wrong := append([]byte{1}, data[1:]...)
	if _, err := st.CommitUpload(ctx, "app", id, sized(bytes.NewReader(wrong)), dg); !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatalf("push of other bytes: %v, want ErrDigestMismatch", err)
	}
	nothingLeft("a digest mismatch")

	id, _ = st.NewUpload(ctx, "app")
	broken := io.MultiReader(bytes.NewReader(data[:MinChunkSize+3]), errReader{errors.New("connection reset")})
	if _, err := st.CommitUpload(ctx, "app", id, sized(broken), dg); err == nil {
		t.Fatal("a push whose body broke succeeded")
	}
	nothingLeft("a broken body")
	if n, err := st.UploadSize(ctx, "app", id); err != nil || n != 0 {
		t.Fatalf("after a broken body the upload is %d bytes, %v; want an empty upload", n, err)
	}

	st.SetQuota(store.Quota{Name: "storage", MaxBytes: int64(len(data)) - 1})
	id, _ = st.NewUpload(ctx, "app")
	untouched := &watchedBody{r: bytes.NewReader(data)}
	if _, err := st.CommitUpload(ctx, "app", id, sized(untouched), dg); !errors.Is(err, store.ErrQuota) {
		t.Fatalf("a push over quota: %v, want ErrQuota", err)
	}
	if untouched.read != 0 {
		t.Fatalf("a push over quota read %d bytes of its body before it was refused", untouched.read)
	}
	nothingLeft("a refusal")

	st.SetQuota(store.Quota{})
	id, _ = st.NewUpload(ctx, "app")
	if _, err := st.CommitUpload(ctx, "app", id, sized(bytes.NewReader(data)), dg); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	assertStoredBlob(t, st, "app", dg, data)
}

// A free-space guard on a bucket is said to do nothing, not left to
// seem to guard.
func TestMinFreeSpaceOnABucketIsWarnedAbout(t *testing.T) {
	var logged bytes.Buffer
	st, err := store.New(store.Options{Driver: mustNew(t, testConfig(t, testServer(t))), Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetQuota(store.Quota{Name: "storage", MinFreeSpace: 1 << 30})
	if !strings.Contains(logged.String(), "storage.quota.minFreeSpace does nothing here") {
		t.Fatalf("no warning of a free-space guard on a bucket; the log: %s", logged.String())
	}
}
