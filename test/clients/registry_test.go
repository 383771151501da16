// Package clients pushes and pulls real images and artifacts through pier
// with the clients people use (skopeo, crane, oras) and checks that what
// comes back is byte for byte what went in.
package clients

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/testimage"
	"github.com/pier-oci/pier/test/internal/tool"
)

var (
	amd64 = testimage.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = testimage.Platform{OS: "linux", Architecture: "arm64"}
)

// registry is a pier started for one test, with a runner for the clients
// that talk to it.
type registry struct {
	srv *pierproc.Server
	run tool.Runner
}

// eachStorage runs a client's test against pier on the local disk, and on
// the S3 server of test/services.sh with its blobs deduped into zot's
// placeholders through a Redis index, as replicas keep them: clients see
// the same registry.
func eachStorage(t *testing.T, test func(t *testing.T, storage map[string]any)) {
	t.Run("local", func(t *testing.T) { test(t, nil) })
	t.Run("s3", func(t *testing.T) {
		redis := os.Getenv("PIER_TEST_REDIS")
		if redis == "" {
			t.Fatal("PIER_TEST_REDIS is not set: run the tests under test/services.sh (make test does)")
		}
		b := bucket.New(t)
		test(t, b.Storage(map[string]any{"dedupe": true, "remoteCache": true,
			"cacheDriver": map[string]any{"name": "redis", "url": "redis://" + redis + "/0", "keyprefix": strings.TrimPrefix(b.Root, "/")}}))
	})
}

// startRegistry checks the client is there before starting pier, so that
// a missing tool fails fast with a clear message.
func startRegistry(t *testing.T, storage map[string]any, client string) *registry {
	t.Helper()
	tool.Path(t, client)
	srv := pierproc.Start(t, pierproc.Options{Storage: storage})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pier stderr:\n%s", srv.Stderr())
		}
	})
	return &registry{srv: srv, run: tool.Runner{Env: tool.Env(t), Dir: t.TempDir()}}
}

// ref is host:port/repoRef, as every client spells a remote image.
func (r *registry) ref(repoRef string) string { return r.srv.Addr + "/" + repoRef }

// manifest GETs a manifest straight from pier, so that a client's view can
// be checked against what pier serves. It returns the body and the
// Docker-Content-Digest header.
func (r *registry) manifest(t *testing.T, repo, reference string) ([]byte, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.srv.URL("/v2/"+repo+"/manifests/"+reference), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", strings.Join([]string{
		testimage.MediaTypeManifest, testimage.MediaTypeIndex,
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
	}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", req.URL, resp.Status, body)
	}
	return body, resp.Header.Get("Docker-Content-Digest")
}

// wantManifest fails unless pier serves exactly want for repo:reference.
func (r *registry) wantManifest(t *testing.T, repo, reference string, want testimage.Blob) {
	t.Helper()
	got, header := r.manifest(t, repo, reference)
	if string(got) != string(want.Data) {
		t.Errorf("pier serves %s:%s as %s (%d bytes), want %s (%d bytes)",
			repo, reference, testimage.Digest(got), len(got), want.Digest(), len(want.Data))
	}
	if header != want.Digest() {
		t.Errorf("%s:%s: Docker-Content-Digest %q, want %q", repo, reference, header, want.Digest())
	}
}

// lines splits a tool's output into its non-empty lines.
func lines(out []byte) []string {
	var ls []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// wantLines fails unless out has exactly want, in order.
func wantLines(t *testing.T, what string, out []byte, want ...string) {
	t.Helper()
	if got := lines(out); !slices.Equal(got, want) {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

// decodeJSON parses a tool's JSON output, failing the test on bad JSON.
func decodeJSON(t *testing.T, out []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("parse %T from %q: %v", v, out, err)
	}
}

// writeFile writes data to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// layout writes an OCI layout of tagged content in a temp dir.
func layout(t *testing.T, tagged map[string]testimage.Content) string {
	t.Helper()
	dir := t.TempDir()
	if err := testimage.WriteLayout(dir, tagged); err != nil {
		t.Fatal(err)
	}
	return dir
}

func wantNoErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s:\n%v", what, err)
	}
}
