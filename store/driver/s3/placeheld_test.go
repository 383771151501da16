package s3

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/dedupe"
)

// A monolithic push of content another repository holds is read, hashed
// and written nowhere: mid-push the bucket gets no part, no segment and
// nothing at the blob's key, which then becomes a placeholder. A body
// that is not the digest changes nothing.
func TestPushOfHeldContentWritesNothing(t *testing.T) {
	d, st, _ := bucketStore(t, redisCache(t), nil)
	ctx := context.Background()
	data := patterned(2*MinChunkSize + 17)
	dg := digest.FromBytes(data)
	if _, err := st.PutBlob(ctx, "base", dg, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	for _, sized := range []bool{false, true} {
		repo := map[bool]string{false: "app", true: "sized"}[sized]
		before, _ := rawObjects(t, d)
		var midObjs, midParts []string
		body := &watchedBody{r: bytes.NewReader(data), at: MinChunkSize + 5, check: func() {
			midObjs, midParts = rawObjects(t, d)
		}}
		var r = any(body).(interface{ Read([]byte) (int, error) })
		if sized {
			r = store.Sized{Reader: body, Size: int64(len(data))}
		}
		if _, err := st.PutBlob(ctx, repo, dg, r); err != nil {
			t.Fatal(err)
		}
		for _, k := range midObjs {
			if !contains(before, k) && (strings.HasPrefix(k, privateDir) || strings.Contains(k, "/blobs/")) {
				t.Fatalf("%s: mid-push the bucket got %s", repo, k)
			}
		}
		if len(midParts) != 0 {
			t.Fatalf("%s: mid-push the bucket had multipart uploads %v", repo, midParts)
		}
		info, err := d.Stat(ctx, repo+"/blobs/sha256/"+dg.Encoded())
		if err != nil || !dedupe.IsPlaceholder(info, dg) {
			t.Fatalf("%s: the blob's key is %+v, %v; want a placeholder", repo, info, err)
		}
		assertStoredBlob(t, st, repo, dg, data)
	}
	wrong := append([]byte{data[0] ^ 0xff}, data[1:]...)
	if _, err := st.PutBlob(ctx, "bad", dg, bytes.NewReader(wrong)); !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatalf("a push of other bytes under a held digest: %v, want ErrDigestMismatch", err)
	}
	if _, err := d.Stat(ctx, "bad/blobs/sha256/"+dg.Encoded()); err == nil {
		t.Fatal("a push of other bytes left something at the blob's key")
	}
}

// The holder removed while the body is read: the push fails retryably
// (its bytes were not kept), leaves its upload empty, and the retry
// stores the content whole. A holder that rotted is not trusted: the
// content is stored whole at once.
func TestPushOfHeldContentWhoseHolderGoes(t *testing.T) {
	d, st, _ := bucketStore(t, redisCache(t), nil)
	ctx := context.Background()
	data := patterned(MinChunkSize + 301)
	dg := digest.FromBytes(data)
	holder := "base/blobs/sha256/" + dg.Encoded()
	if _, err := st.PutBlob(ctx, "base", dg, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	id, err := st.NewUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	body := &watchedBody{r: bytes.NewReader(data), at: 1000, check: func() {
		if err := d.Delete(ctx, holder); err != nil {
			t.Error(err)
		}
	}}
	if _, err := st.CommitUpload(ctx, "app", id, body, dg); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a push whose holder went mid-body: %v, want ErrUnavailable (retry)", err)
	}
	if n, err := st.UploadSize(ctx, "app", id); err != nil || n != 0 {
		t.Fatalf("after it the upload is %d bytes, %v; want it empty", n, err)
	}
	if _, err := st.CommitUpload(ctx, "app", id, bytes.NewReader(data), dg); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if n := storedSize(t, d, "app", dg); n != int64(len(data)) {
		t.Fatalf("after the retry the blob's key holds %d bytes, want the content whole", n)
	}

	// The content's only holder (app) rots in the bucket: a push of it
	// elsewhere stores it whole rather than trusting it.
	rotted := append([]byte{data[0] ^ 0xff}, data[1:]...)
	if _, err := d.WriteFile(ctx, "app/blobs/sha256/"+dg.Encoded(), rotted); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutBlob(ctx, "other", dg, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if n := storedSize(t, d, "other", dg); n != int64(len(data)) {
		t.Fatalf("with a rotted holder the blob's key holds %d bytes, want the content whole", n)
	}
	assertStoredBlob(t, st, "other", dg, data)
}

func storedSize(t *testing.T, d *Driver, repo string, dg digest.Digest) int64 {
	t.Helper()
	info, err := d.Stat(context.Background(), repo+"/blobs/sha256/"+dg.Encoded())
	if err != nil {
		t.Fatal(err)
	}
	return info.Size
}

// The empty blob pushed to a second repository (an empty body, as
// docker sends with the digest at the end) is stored, not refused for a
// placeholder that empty content cannot have.
func TestPushOfTheEmptyBlobToASecondRepository(t *testing.T) {
	_, st, _ := bucketStore(t, redisCache(t), nil)
	ctx := context.Background()
	empty := digest.FromBytes(nil)
	for _, repo := range []string{"a", "b"} {
		id, err := st.NewUpload(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CommitUpload(ctx, repo, id, store.Sized{Reader: bytes.NewReader(nil), Size: 0}, empty); err != nil {
			t.Fatalf("push of the empty blob to %s: %v", repo, err)
		}
		assertStoredBlob(t, st, repo, empty, nil)
	}
}
