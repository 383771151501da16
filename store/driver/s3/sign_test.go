package s3

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Bodies are sent unsigned, with a CRC32: the SDK must not hash them with
// sha256 for the signature as well (a pass over every byte on each side).
func TestBodiesAreNotHashedForTheSignature(t *testing.T) {
	var sha, crc string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		sha, crc = r.Header.Get("X-Amz-Content-Sha256"), r.Header.Get("X-Amz-Checksum-Crc32")
		w.Header().Set("ETag", `"e"`)
	}))
	defer srv.Close()
	cfg := testConfig(t, server{endpoint: srv.URL, bucket: "b", access: "a", secret: "s", region: "us-east-1"})
	d := mustNew(t, cfg)
	if _, err := d.WriteFile(context.Background(), "r/blobs/sha256/x", []byte("some bytes")); err != nil {
		t.Fatal(err)
	}
	if sha != unsignedPayload || crc == "" {
		t.Fatalf("a PutObject went with x-amz-content-sha256 %q and x-amz-checksum-crc32 %q; want %s and a CRC32", sha, crc, unsignedPayload)
	}
}
