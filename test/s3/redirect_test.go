package s3

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// redirectBlobURL (zot's key): a whole-blob GET is a 307 to a presigned
// URL of the bucket that serves the blob's bytes, for a blob and for a
// placeholder (the URL names the content's holder, never the empty
// placeholder); a HEAD, a ranged GET and a conditional one are served by
// pier; a blob the repository lacks is BLOB_UNKNOWN, not a redirect; a
// client that follows redirects pulls the image whole.
func TestRedirectBlobURL(t *testing.T) {
	b := bucket.New(t)
	p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{"dedupe": true, "redirectBlobURL": true})})
	c := ociclient.New(p.Addr)
	layer := random(3<<20 + 11)
	d := digest.FromBytes(layer)
	img := image("app", layer)
	for _, repo := range []string{"app", "copy"} {
		if err := c.PushImage(repo, "v1", img); err != nil {
			t.Fatal(err)
		}
	}
	if n := storedBytes(t, b, d, "copy"); n != 0 {
		t.Fatalf("the second repository's layer holds %d bytes; want a placeholder", n)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(repo string, hdr http.Header) *http.Response {
		req, _ := http.NewRequest("GET", p.URL("/v2/"+repo+"/blobs/"+d.String()), nil)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, repo := range []string{"app", "copy"} {
		resp := get(repo, nil)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, b.Endpoint+"/") {
			t.Fatalf("GET of a blob of %s: %d to %q; want 307 to the bucket (%s)", repo, resp.StatusCode, loc, b.Endpoint)
		}
		if got := resp.Header.Get("Docker-Content-Digest"); got != d.String() {
			t.Fatalf("the redirect's Docker-Content-Digest is %q", got)
		}
		if !strings.Contains(loc, "/app/blobs/sha256/"+d.Encoded()) {
			t.Fatalf("%s: the URL %s does not name the object that holds the content", repo, loc)
		}
		fetched, err := http.Get(loc) // no credentials: the URL carries them
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(fetched.Body)
		fetched.Body.Close()
		if fetched.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
			t.Fatalf("%s: the bucket's URL answered %d with %d bytes; want the layer's %d", repo, fetched.StatusCode, len(body), len(layer))
		}
	}
	if resp := get("app", http.Header{"Range": {"bytes=10-19"}}); resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("a ranged GET: %d, want 206 from pier", resp.StatusCode)
	} else if body, _ := io.ReadAll(resp.Body); !bytes.Equal(body, layer[10:20]) {
		t.Fatalf("a ranged GET gave %q", body)
	}
	if resp := get("app", http.Header{"If-None-Match": {`"` + d.String() + `"`}}); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("a conditional GET: %d, want 304 from pier", resp.StatusCode)
	}
	head, err := http.Head(p.URL("/v2/app/blobs/" + d.String()))
	if err != nil || head.StatusCode != http.StatusOK || head.ContentLength != int64(len(layer)) {
		t.Fatalf("HEAD: %v, %v; want 200 with the length from pier", head, err)
	}
	if resp := get("other", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET of a blob the repository lacks: %d, want 404", resp.StatusCode)
	}
	start := time.Now()
	wantImage(t, "copy", "v1", img, c) // Go's client follows the redirect
	t.Logf("image pulled through the redirect in %v", time.Since(start).Round(time.Millisecond))
}

// On a root on local disk the key does nothing but say so: pier serves
// the blobs itself.
func TestRedirectBlobURLOnALocalRoot(t *testing.T) {
	p := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"redirectBlobURL": true}})
	c := ociclient.New(p.Addr)
	layer := random(1000)
	img := image("app", layer)
	if err := c.PushImage("app", "v1", img); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(p.URL("/v2/app/blobs/" + digest.FromBytes(layer).String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Host != p.Addr {
		t.Fatalf("GET on a local root: %d from %s, want 200 from pier", resp.StatusCode, resp.Request.URL.Host)
	}
	if !strings.Contains(p.Stderr(), "redirectBlobURL applies to remote storage only") {
		t.Fatalf("no warning that the key does nothing here:\n%s", p.Stderr())
	}
}
