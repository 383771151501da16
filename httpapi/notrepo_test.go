package httpapi

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Paths below the root that are not repositories, though a valid name
// reaches them: a name that crosses a file (ENOTDIR: pier's own files, or
// what an operator left in the root), a layout whose index.json or blobs
// directory is something else (EISDIR, ENOTDIR), links that loop (ELOOP).
// Every request for them is the 404 (or 400) its route calls for, never
// a 500, and none changes anything on disk.
func TestPathsThatAreNotRepositories(t *testing.T) {
	f := newFixture(t)
	img, manifest := f.pushImage("good", "v1")
	layer := digest.FromString("layer of goodv1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	root := f.root
	// A file where a repository name leads (as cache.db.corrupt-1 was).
	must(os.WriteFile(filepath.Join(root, "cache.db.corrupt-1"), []byte("not a repository"), 0o644))
	// Layouts whose parts are something else.
	layout := func(name string) string {
		dir := filepath.Join(root, name)
		must(os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755))
		must(os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
		return dir
	}
	entry := `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + img.String() +
		`","size":` + itoa(len(manifest)) + `,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`
	dir := layout("indexdir")
	must(os.Mkdir(filepath.Join(dir, "index.json"), 0o755))
	dir = layout("indexloop")
	must(os.Symlink("index.json", filepath.Join(dir, "index.json")))
	dir = layout("blobsfile")
	must(os.RemoveAll(filepath.Join(dir, "blobs")))
	must(os.WriteFile(filepath.Join(dir, "blobs"), nil, 0o644))
	must(os.WriteFile(filepath.Join(dir, "index.json"), []byte(entry), 0o644))
	dir = layout("algfile")
	must(os.RemoveAll(filepath.Join(dir, "blobs", "sha256")))
	must(os.WriteFile(filepath.Join(dir, "blobs", "sha256"), nil, 0o644))
	must(os.WriteFile(filepath.Join(dir, "index.json"), []byte(entry), 0o644))
	dir = layout("blobdir")
	must(os.Mkdir(filepath.Join(dir, "blobs", "sha256", img.Encoded()), 0o755))
	must(os.Mkdir(filepath.Join(dir, "blobs", "sha256", layer.Encoded()), 0o755))
	must(os.WriteFile(filepath.Join(dir, "index.json"), []byte(entry), 0o644))
	dir = layout("blobloop")
	must(os.Symlink(img.Encoded(), filepath.Join(dir, "blobs", "sha256", img.Encoded())))
	must(os.Symlink(layer.Encoded(), filepath.Join(dir, "blobs", "sha256", layer.Encoded())))
	must(os.WriteFile(filepath.Join(dir, "index.json"), []byte(entry), 0o644))
	// The uploads directory is a file.
	dir = layout("uploadsfile")
	must(os.WriteFile(filepath.Join(dir, ".uploads"), nil, 0o644))
	must(os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644))

	before := listFiles(t, root)
	upload := "/blobs/uploads/0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0a"
	for _, repo := range []string{"cache.db.corrupt-1", "cache.db.corrupt-1/app", "indexdir", "indexloop", "blobsfile", "algfile", "blobdir", "blobloop", "uploadsfile"} {
		for _, rq := range []struct{ method, path string }{
			{"GET", "/manifests/v1"},
			{"HEAD", "/manifests/v1"},
			{"GET", "/manifests/" + img.String()},
			{"HEAD", "/manifests/" + img.String()},
			{"GET", "/blobs/" + layer.String()},
			{"HEAD", "/blobs/" + layer.String()},
			{"DELETE", "/blobs/" + layer.String()},
			{"DELETE", "/manifests/v1"},
			{"DELETE", "/manifests/" + img.String()},
			{"GET", "/tags/list"},
			{"GET", "/referrers/" + img.String()},
			{"GET", upload},
			{"PATCH", upload},
			{"PUT", upload + "?digest=" + layer.String()},
			{"DELETE", upload},
		} {
			if rq.method == "DELETE" && strings.HasPrefix(rq.path, "/manifests/") {
				continue // below: a real repository's tag really goes
			}
			path := "/v2/" + repo + rq.path
			var body []byte
			if rq.method == "PATCH" || rq.method == "PUT" {
				body = []byte("data")
			}
			resp := f.do(rq.method, path, body, "Content-Type", "application/octet-stream")
			if resp.StatusCode >= 500 {
				t.Errorf("%s %s: %d", rq.method, path, resp.StatusCode)
			}
		}
		// A mount from it into a good repository is an ordinary upload.
		resp := f.do("POST", "/v2/good/blobs/uploads/?mount="+layer.String()+"&from="+repo, nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("mount from %s: %d, want an ordinary upload", repo, resp.StatusCode)
		}
		f.do("DELETE", resp.Header.Get("Location"), nil)
	}
	resp := f.do("GET", "/v2/_catalog", nil)
	var catalog struct{ Repositories []string }
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&catalog) != nil {
		t.Fatalf("catalog: %d", resp.StatusCode)
	}
	for _, repo := range catalog.Repositories {
		if repo == "indexdir" || repo == "indexloop" || strings.HasPrefix(repo, "cache.db") {
			t.Errorf("the catalog lists %s, which is not a repository", repo)
		}
	}
	if after := listFiles(t, root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("reads and deletes changed files:\n%s", changed(before, after))
	}
	// Deletes of what is not there are unknown; of what a damaged
	// repository does list, they go through.
	for _, repo := range []string{"cache.db.corrupt-1", "cache.db.corrupt-1/app", "indexdir", "indexloop", "blobsfile", "algfile", "blobdir", "blobloop", "uploadsfile"} {
		for _, ref := range []string{"v1", img.String()} {
			if resp := f.do("DELETE", "/v2/"+repo+"/manifests/"+ref, nil); resp.StatusCode >= 500 {
				t.Errorf("DELETE %s:%s: %d", repo, ref, resp.StatusCode)
			}
		}
	}
	before = listFiles(t, root)
	// Pushes to a name that crosses a file, or whose index.json is not a
	// file, are refused as invalid names before anything is written.
	data := []byte("pushed")
	for _, repo := range []string{"cache.db.corrupt-1", "cache.db.corrupt-1/app", "indexdir", "indexloop"} {
		for _, path := range []string{
			"/blobs/uploads/",
			"/blobs/uploads/?digest=" + digest.FromBytes(data).String(),
			"/blobs/uploads/?mount=" + layer.String() + "&from=good",
		} {
			expectError(t, f.do("POST", "/v2/"+repo+path, data), http.StatusBadRequest, "NAME_INVALID")
		}
		// Its blobs are not there: MANIFEST_BLOB_UNKNOWN, before the name.
		if resp := f.do("PUT", "/v2/"+repo+"/manifests/v2", manifest, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT a manifest to %s: %d", repo, resp.StatusCode)
		}
	}
	if after := listFiles(t, root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("refused pushes changed files:\n%s", changed(before, after))
	}
	// Pushes into a real repository whose layout is damaged fail with a
	// client error too, never a 500.
	for _, repo := range []string{"blobsfile", "algfile", "blobdir", "uploadsfile"} {
		for _, path := range []string{
			"/blobs/uploads/?digest=" + digest.FromBytes(data).String(),
			"/blobs/uploads/?mount=" + layer.String() + "&from=good",
		} {
			if resp := f.do("POST", "/v2/"+repo+path, data); resp.StatusCode >= 500 {
				t.Errorf("POST /v2/%s%s: %d", repo, path, resp.StatusCode)
			}
		}
	}
}

// changed lists the paths only in before or only in after.
func changed(before, after []string) string {
	in := map[string]int{}
	for _, p := range before {
		in[p]--
	}
	for _, p := range after {
		in[p]++
	}
	var out []string
	for p, n := range in {
		switch {
		case n < 0:
			out = append(out, "gone: "+p)
		case n > 0:
			out = append(out, "new: "+p)
		}
	}
	return strings.Join(out, "\n")
}

func itoa(n int) string { return strconv.Itoa(n) }

// A named pipe in a layout, as index.json or at a blob's path, is not
// something pier can serve: a request for it is answered as for nothing
// there, at once, instead of waiting forever for a writer to the pipe.
func TestNamedPipesInALayoutAreNotServed(t *testing.T) {
	f := newFixture(t)
	img, manifest := f.pushImage("good", "v1")
	layer := digest.FromString("layer of goodv1")
	entry := `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + img.String() +
		`","size":` + itoa(len(manifest)) + `,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`
	for _, name := range []string{"indexfifo", "blobfifo"} {
		dir := filepath.Join(f.root, name)
		if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	}
	mkfifo := func(path string) {
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkfifo(filepath.Join(f.root, "indexfifo", "index.json"))
	os.WriteFile(filepath.Join(f.root, "blobfifo", "index.json"), []byte(entry), 0o644)
	mkfifo(filepath.Join(f.root, "blobfifo", "blobs", "sha256", img.Encoded()))
	mkfifo(filepath.Join(f.root, "blobfifo", "blobs", "sha256", layer.Encoded()))
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/v2/indexfifo/tags/list", http.StatusNotFound},
		{"/v2/indexfifo/manifests/v1", http.StatusNotFound},
		{"/v2/blobfifo/manifests/v1", http.StatusNotFound},
		{"/v2/blobfifo/blobs/" + layer.String(), http.StatusNotFound},
		{"/v2/blobfifo/referrers/" + img.String(), http.StatusOK},
	} {
		resp, err := client.Get(f.srv.URL + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.status)
		}
	}
}
