package clients

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pier-oci/pier/test/internal/testimage"
)

// manifestJSON is the part of an image manifest the tests read.
type manifestJSON struct {
	MediaType string                 `json:"mediaType"`
	Config    testimage.Descriptor   `json:"config"`
	Layers    []testimage.Descriptor `json:"layers"`
	Subject   *testimage.Descriptor  `json:"subject"`
}

// TestCrane walks two repositories' life with crane: push a tarball, tag,
// list, copy to another repository by cross-repo mount, push an index from
// a layout, catalog, delete, and pull what is left. The steps build on each
// other, so the first that fails stops the test.
func TestCrane(t *testing.T) { eachStorage(t, testCrane) }

func testCrane(t *testing.T, storage map[string]any) {
	reg := startRegistry(t, storage, "crane")
	crane := func(t *testing.T, args ...string) []byte {
		t.Helper()
		return reg.run.Run(t, "crane", append([]string{"--insecure"}, args...)...)
	}
	app, mirror := reg.ref("crane/app"), reg.ref("crane/mirror")

	// The layers are gzipped tars of ours; crane append keeps compressed
	// layers as they are, so pier must serve exactly these bytes.
	layers := testimage.NewImage("crane-app", 2, amd64).Layers
	appendArgs := []string{"append", "--oci-empty-base", "-t", "pier.test/crane/app:v1"}
	for i, l := range layers {
		appendArgs = append(appendArgs, "-f", writeFile(t, reg.run.Dir, fmt.Sprintf("layer%d.tar.gz", i), l.Data))
	}
	tarball := filepath.Join(reg.run.Dir, "app.tar")
	var image testimage.Image // what crane built, filled in by the first step
	multi := testimage.NewMultiArch("crane-multi", 1, amd64, arm64)

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"push tarball", func(t *testing.T) {
			crane(t, append(appendArgs, "-o", tarball)...)
			want := strings.TrimSpace(string(crane(t, "digest", "--tarball", tarball)))
			wantLines(t, "crane push", crane(t, "push", tarball, app+":v1"), app+"@"+want)

			image.Manifest = testimage.Blob{Data: crane(t, "manifest", app+":v1")}
			if got := image.Manifest.Digest(); got != want {
				t.Fatalf("crane manifest: digest %s, want %s", got, want)
			}
			var m manifestJSON
			decodeJSON(t, image.Manifest.Data, &m)
			image.Manifest.MediaType = m.MediaType
			if len(m.Layers) != len(layers) {
				t.Fatalf("manifest has %d layers, want %d", len(m.Layers), len(layers))
			}
			for i, l := range layers {
				if m.Layers[i].Digest != l.Digest() {
					t.Errorf("layer %d: manifest has %s, want %s", i, m.Layers[i].Digest, l.Digest())
				}
				got := crane(t, "blob", app+"@"+l.Digest())
				if string(got) != string(l.Data) {
					t.Errorf("crane blob %s: got %d bytes, digest %s", l.Digest(), len(got), testimage.Digest(got))
				}
			}
			image.Config = testimage.Blob{MediaType: m.Config.MediaType, Data: crane(t, "config", app+":v1")}
			if image.Config.Digest() != m.Config.Digest {
				t.Errorf("crane config: digest %s, manifest says %s", image.Config.Digest(), m.Config.Digest)
			}
			image.Layers = layers
			reg.wantManifest(t, "crane/app", "v1", image.Manifest)
		}},
		{"digest", func(t *testing.T) {
			wantLines(t, "crane digest", crane(t, "digest", app+":v1"), image.Manifest.Digest())
		}},
		{"tag and ls", func(t *testing.T) {
			crane(t, "tag", app+":v1", "stable")
			crane(t, "tag", app+":v1", "latest")
			// The spec orders tags lexically.
			wantLines(t, "crane ls", crane(t, "ls", app), "latest", "stable", "v1")
			wantLines(t, "crane digest latest", crane(t, "digest", app+":latest"), image.Manifest.Digest())
		}},
		{"copy mounts across repositories", func(t *testing.T) {
			res := reg.run.Try(t, "crane", "--insecure", "-v", "copy", app+":v1", mirror+":v1")
			if res.Err != nil {
				t.Fatalf("%s", res)
			}
			wantMounted(t, string(res.Stderr), "crane/mirror", image.Blobs())
			wantLines(t, "crane digest", crane(t, "digest", mirror+":v1"), image.Manifest.Digest())
		}},
		{"push index from layout", func(t *testing.T) {
			dir := layout(t, map[string]testimage.Content{"v1": multi})
			crane(t, "push", dir, reg.ref("crane/multi:v1"))
			reg.wantManifest(t, "crane/multi", "v1", multi.Manifest)
			for _, im := range multi.Images {
				reg.wantManifest(t, "crane/multi", im.Manifest.Digest(), im.Manifest)
			}
		}},
		{"catalog", func(t *testing.T) {
			wantLines(t, "crane catalog", crane(t, "catalog", reg.srv.Addr), "crane/app", "crane/mirror", "crane/multi")
		}},
		{"delete tag", func(t *testing.T) {
			crane(t, "delete", app+":latest")
			wantLines(t, "crane ls after deleting latest", crane(t, "ls", app), "stable", "v1")
		}},
		{"delete manifest", func(t *testing.T) {
			crane(t, "delete", app+"@"+image.Manifest.Digest())
			// The manifest is gone, and with it the tags that named it.
			for _, ref := range []string{app + ":v1", app + ":stable", app + "@" + image.Manifest.Digest()} {
				res := reg.run.Try(t, "crane", "--insecure", "digest", ref)
				if res.Err == nil || !strings.Contains(string(res.Stderr), "MANIFEST_UNKNOWN") {
					t.Errorf("crane digest %s after delete: want MANIFEST_UNKNOWN, got %s", ref, res)
				}
			}
			// An empty list, or no repository at all, are both right.
			res := reg.run.Try(t, "crane", "--insecure", "ls", app)
			if res.Err == nil && len(lines(res.Stdout)) > 0 || res.Err != nil && !strings.Contains(string(res.Stderr), "NAME_UNKNOWN") {
				t.Errorf("crane ls after deleting the manifest: want no tags, got %s", res)
			}
		}},
		{"pull what another repository shared", func(t *testing.T) {
			// The mirror's blobs were mounted from app; deleting app's
			// manifest must leave them whole.
			dir := filepath.Join(t.TempDir(), "layout")
			crane(t, "pull", "--format", "oci", mirror+":v1", dir)
			wantNoErr(t, "pulled layout", testimage.Compare(testimage.Layout{Dir: dir}, image))
			wantLines(t, "crane ls mirror", crane(t, "ls", mirror), "v1")
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.Fatalf("step %q failed; later steps depend on it", s.name)
		}
	}
}

// blobLocation matches the Location header of a finished blob as crane -v
// logs it: an answer to a mount POST is a blob's final location (201),
// where a refused mount would point at an upload session (202).
var blobLocation = regexp.MustCompile(`(?m)^Location: /v2/(\S+)/blobs/(sha256:[0-9a-f]{64})\s*$`)

// wantMounted fails unless crane's verbose log shows each blob mounted into
// repo (POST ?mount= answered 201) and no blob data uploaded.
func wantMounted(t *testing.T, log, repo string, blobs []testimage.Blob) {
	t.Helper()
	mounted := map[string]bool{}
	for _, m := range blobLocation.FindAllStringSubmatch(log, -1) {
		if m[1] == repo {
			mounted[m[2]] = true
		}
	}
	for _, b := range blobs {
		if !mounted[b.Digest()] {
			t.Errorf("blob %s was not mounted into %s", b.Digest(), repo)
		}
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "PATCH /v2/") || (strings.Contains(l, "PUT /v2/") && strings.Contains(l, "/blobs/uploads/")) {
			t.Errorf("blob data uploaded instead of mounted: %s", l)
		}
	}
	if t.Failed() {
		t.Logf("crane -v log:\n%s", log)
	}
}
