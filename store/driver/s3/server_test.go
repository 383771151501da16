package s3

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store/driver"
)

// rawObjects lists every object below the driver's prefix, private ones
// too, and every multipart upload in progress there.
func rawObjects(t *testing.T, d *Driver) (objs []string, multiparts []string) {
	t.Helper()
	list, _, err := d.listPrefix(context.Background(), d.prefix, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list {
		objs = append(objs, strings.TrimPrefix(aws.ToString(o.Key), d.prefix))
	}
	out, err := d.s3.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: aws.String(d.prefix)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	for _, u := range out.Uploads {
		multiparts = append(multiparts, strings.TrimPrefix(aws.ToString(u.Key), d.prefix))
	}
	return objs, multiparts
}

// An upload leaves nothing in the bucket once it is committed, cancelled
// or deleted: no segment, no record, no multipart upload.
func TestNoLeftovers(t *testing.T) {
	d := mustNew(t, testConfig(t, testServer(t)))
	ctx := context.Background()
	data := make([]byte, 3*MinChunkSize+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for i, end := range []func(driver.Writer) error{
		func(w driver.Writer) error { return w.Commit(ctx, "r/blobs/sha256/x") },
		func(w driver.Writer) error { return w.Cancel(ctx) },
		func(w driver.Writer) error { w.Close(); return d.Delete(ctx, "r/.uploads/u") },
	} {
		w, err := d.Create(ctx, "r/.uploads/u")
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data[:MinChunkSize+1])
		w.Close()
		w, err = d.Append(ctx, "r/.uploads/u")
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data[MinChunkSize+1:])
		if err := end(w); err != nil {
			t.Fatalf("end %d: %v", i, err)
		}
		objs, mps := rawObjects(t, d)
		want := []string{"r/blobs/sha256/x"} // the first's commit
		if strings.Join(objs, ",") != strings.Join(want, ",") || len(mps) != 0 {
			t.Fatalf("after end %d the bucket holds %q and multipart uploads %q; want %q and none", i, objs, mps, want)
		}
	}
}

// zot keeps repositories at <rootdirectory>/<rootdirectory>/<repo> (see
// configs.S3Config.KeyPrefix): a bucket zot wrote reads through a driver
// on that prefix, and what pier writes is where zot looks.
func TestZotLayout(t *testing.T) {
	// The driver as a config file makes it, rootdirectory and all.
	s := testServer(t)
	root := "zotlayout-" + randomHex(4)
	file, _, err := configs.Parse([]byte(`{"storage": {"rootDirectory": "` + t.TempDir() + `", "storageDriver": {
		"name": "s3", "bucket": "` + s.bucket + `", "region": "` + s.region + `", "regionendpoint": "` + s.endpoint + `",
		"accesskey": "` + s.access + `", "secretkey": "` + s.secret + `", "rootdirectory": "/` + root + `", "chunksize": 5242880}}}`))
	if err != nil {
		t.Fatal(err)
	}
	d := mustNew(t, FromConfig(file.Storage.S3, false, nil))
	ctx := context.Background()

	// As zot's s3 driver writes them (distribution's s3-aws: plain
	// PutObject, and a completed multipart upload for a blob).
	raw := func(key string, data []byte) {
		_, err := d.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: aws.String(key), Body: bytes.NewReader(data)})
		if err != nil {
			t.Fatal(err)
		}
	}
	raw(root+"/"+root+"/alpine/index.json", []byte(`{"schemaVersion":2,"manifests":[]}`))
	raw(root+"/"+root+"/alpine/oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	raw(root+"/"+root+"/alpine/blobs/sha256/0123", []byte("layer"))
	got, _, err := d.ReadFile(ctx, "alpine/index.json", 1<<20)
	if err != nil || string(got) != `{"schemaVersion":2,"manifests":[]}` {
		t.Fatalf("zot's index.json through the driver: %q, %v", got, err)
	}
	entries, err := d.List(ctx, "alpine/blobs/sha256")
	if err != nil || len(entries) != 1 || entries[0].Key != "alpine/blobs/sha256/0123" || entries[0].Size != 5 {
		t.Fatalf("zot's blobs through the driver: %+v, %v", entries, err)
	}

	if _, err := d.WriteFile(ctx, "busybox/index.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: aws.String(root + "/" + root + "/busybox/index.json")}); err != nil {
		t.Fatalf("pier's index.json is not at zot's key: %v", err)
	}
}

// The conditions the driver relies on, asked of the server directly: a
// server without them would let a replica lose an update or a reader
// splice two versions.
func TestServerConditions(t *testing.T) {
	d := mustNew(t, testConfig(t, testServer(t)))
	ctx := context.Background()
	key := d.prefix + "c"
	put := func(in *s3.PutObjectInput) (*s3.PutObjectOutput, error) {
		in.Bucket, in.Key = &d.bucket, &key
		return d.s3.PutObject(ctx, in)
	}
	code := func(err error) string {
		var api smithy.APIError
		if errors.As(err, &api) {
			return api.ErrorCode()
		}
		if err != nil {
			return err.Error()
		}
		return "ok"
	}
	first, err := put(&s3.PutObjectInput{Body: strings.NewReader("one"), IfNoneMatch: aws.String("*")})
	if err != nil {
		t.Fatalf("PutObject If-None-Match * of a new key: %v", err)
	}
	if _, err := put(&s3.PutObjectInput{Body: strings.NewReader("two"), IfNoneMatch: aws.String("*")}); code(err) != "PreconditionFailed" {
		t.Errorf("PutObject If-None-Match * of an existing key: %s, want PreconditionFailed", code(err))
	}
	if _, err := put(&s3.PutObjectInput{Body: strings.NewReader("two"), IfMatch: aws.String(`"0123"`)}); code(err) != "PreconditionFailed" {
		t.Errorf("PutObject If-Match of another ETag: %s, want PreconditionFailed", code(err))
	}
	if _, err := d.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &key, IfMatch: aws.String(`"0123"`)}); code(err) != "PreconditionFailed" {
		t.Errorf("GetObject If-Match of another ETag: %s, want PreconditionFailed", code(err))
	}

	mp, err := d.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &d.bucket, Key: aws.String(key + "2")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: aws.String(key + "2"), UploadId: mp.UploadId})
	_, err = d.s3.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
		Bucket: &d.bucket, Key: aws.String(key + "2"), UploadId: mp.UploadId, PartNumber: aws.Int32(1),
		CopySource: aws.String(copySource(d.bucket, key)), CopySourceIfMatch: aws.String(`"0123"`), CopySourceRange: aws.String("bytes=0-2"),
	})
	if code(err) != "PreconditionFailed" {
		t.Errorf("UploadPartCopy x-amz-copy-source-if-match of another ETag: %s, want PreconditionFailed", code(err))
	}
	part, err := d.s3.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
		Bucket: &d.bucket, Key: aws.String(key + "2"), UploadId: mp.UploadId, PartNumber: aws.Int32(1),
		CopySource: aws.String(copySource(d.bucket, key)), CopySourceIfMatch: first.ETag, CopySourceRange: aws.String("bytes=1-2"),
	})
	if err != nil {
		t.Fatalf("UploadPartCopy of a range: %v", err)
	}

	// Not relied upon, reported: conditions on completing a multipart
	// upload, and the listings of multipart uploads.
	_, err = d.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &d.bucket, Key: aws.String(key + "2"), UploadId: mp.UploadId, IfMatch: aws.String(`"0123"`),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: part.CopyPartResult.ETag, PartNumber: aws.Int32(1)}}},
	})
	t.Logf("CompleteMultipartUpload If-Match of a missing key: %s", code(err))
	if ups, err := d.s3.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: aws.String(d.prefix)}); err == nil {
		t.Logf("ListMultipartUploads: %d uploads", len(ups.Uploads))
	} else {
		t.Logf("ListMultipartUploads: %s", code(err))
	}
	if parts, err := d.s3.ListParts(ctx, &s3.ListPartsInput{Bucket: &d.bucket, Key: aws.String(key + "2"), UploadId: mp.UploadId}); err == nil {
		t.Logf("ListParts: %d parts", len(parts.Parts))
	} else {
		t.Logf("ListParts: %s", code(err))
	}
	// If-None-Match * on completing over an existing object.
	mp3, err := d.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &d.bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	p3, err := d.s3.UploadPart(ctx, &s3.UploadPartInput{Bucket: &d.bucket, Key: &key, UploadId: mp3.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("three")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &d.bucket, Key: &key, UploadId: mp3.UploadId, IfNoneMatch: aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: p3.ETag, PartNumber: aws.Int32(1)}}},
	})
	t.Logf("CompleteMultipartUpload If-None-Match * over an existing object: %s", code(err))
	d.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: &key, UploadId: mp3.UploadId})
	// An upload id that is not there, on a key that has an object.
	_, err = d.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &d.bucket, Key: &key, UploadId: aws.String("no-such-upload"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: p3.ETag, PartNumber: aws.Int32(1)}}},
	})
	t.Logf("CompleteMultipartUpload of an unknown upload id over an existing object: %s (AWS: NoSuchUpload)", code(err))
}

// Two writers on one upload through drivers of their own (two replicas a
// client's requests went to): the first Close wins, the second is a
// conflict and changes nothing, and its segments go when the upload ends.
func TestConcurrentAppends(t *testing.T) {
	cfg := testConfig(t, testServer(t))
	a, b := mustNew(t, cfg), mustNew(t, cfg)
	ctx := context.Background()
	w, err := a.Create(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("base "))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wa, err := a.Append(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	wb, err := b.Append(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	wa.Write(bytes.Repeat([]byte("a"), MinChunkSize+1))
	wb.Write([]byte("from b"))
	if err := wa.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := wb.Close(); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("second Close on the same upload: %v, want ErrConflict", err)
	}
	got, _, err := b.ReadFile(ctx, "r/.uploads/u", 1<<30)
	if err != nil || !bytes.Equal(got, append([]byte("base "), bytes.Repeat([]byte("a"), MinChunkSize+1)...)) {
		t.Fatalf("the upload holds %d bytes (%v), want the first writer's", len(got), err)
	}
	w, err = b.Append(ctx, "r/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, "r/blobs/sha256/ab"); err != nil {
		t.Fatal(err)
	}
	if objs, mps := rawObjects(t, a); strings.Join(objs, ",") != "r/blobs/sha256/ab" || len(mps) != 0 {
		t.Fatalf("after the commit the bucket holds %q and multipart uploads %q", objs, mps)
	}
}
