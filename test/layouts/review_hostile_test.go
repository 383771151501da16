package layouts

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Review: a layout dropped into a running pier (a USB stick, a directory
// copied by hand) is hostile input. A FIFO where a blob should be blocks
// the request that opens it, in open(2), forever; and a link from a
// layout to its own directory makes GET /v2/_catalog walk millions of
// paths.

func hostedStick(t *testing.T, root string) string {
	t.Helper()
	dir := filepath.Join(root, "stick")
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644)
	return dir
}

func TestReviewAFIFOInALayoutDoesNotHangAPull(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	dir := hostedStick(t, srv.Root)
	d := digest.FromString("a FIFO")
	fifo := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(srv.URL("/v2/stick/blobs/" + d.String()))
	if err != nil {
		t.Fatalf("GET of a blob that is a FIFO: %v (the request is stuck in open(2), with its goroutine and an OS thread)", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET of a blob that is a FIFO = %d, want 404", resp.StatusCode)
	}
}

func TestReviewALinkLoopInALayoutDoesNotStallTheCatalog(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	dir := hostedStick(t, srv.Root)
	for i := range 6 {
		os.Symlink(".", filepath.Join(dir, fmt.Sprintf("l%d", i)))
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(srv.URL("/v2/_catalog"))
	if err != nil {
		t.Fatalf("GET /v2/_catalog with a link loop in a layout: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), "stick/l0") {
		t.Errorf("GET /v2/_catalog = %d %.200s; want 200 listing stick once", resp.StatusCode, body)
	}
}
