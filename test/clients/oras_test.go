package clients

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pier-oci/pier/test/internal/testimage"
)

const (
	bundleType = "application/vnd.example.bundle"
	sbomType   = "application/vnd.example.sbom"
	otherType  = "application/vnd.example.other"
)

// orasDescriptor is what oras push, attach and discover print with
// --format json.
type orasDescriptor struct {
	Digest       string           `json:"digest"`
	MediaType    string           `json:"mediaType"`
	ArtifactType string           `json:"artifactType"`
	Referrers    []orasDescriptor `json:"referrers"`
}

// referrer is what discover must show of each referrer.
type referrer struct{ Digest, ArtifactType string }

// TestOras pushes an artifact of files and pulls it back, then attaches an
// SBOM to an image and finds it through the referrers API. The steps build
// on each other, so the first that fails stops the test.
func TestOras(t *testing.T) { eachStorage(t, testOras) }

func testOras(t *testing.T, storage map[string]any) {
	reg := startRegistry(t, storage, "oras")
	oras := func(t *testing.T, args ...string) []byte {
		t.Helper()
		return reg.run.Run(t, "oras", args...)
	}
	bundle, imageRef := reg.ref("oras/bundle:v1"), reg.ref("oras/image:v1")
	image := testimage.NewImage("oras-image", 2, amd64)

	// oras names each layer by the path it was given, relative to the
	// runner's directory, and pull recreates that path.
	files := []testimage.File{
		{Name: "hello.txt", Data: []byte("hello from pier\n")},
		{Name: "data/blob.bin", Data: image.Layers[0].Data},
	}
	mediaTypes := []string{"text/plain", "application/octet-stream"}
	pushArgs := []string{"push", "--plain-http", "--format", "json", "--artifact-type", bundleType, bundle}
	for i, f := range files {
		writeFile(t, reg.run.Dir, f.Name, f.Data)
		pushArgs = append(pushArgs, f.Name+":"+mediaTypes[i])
	}
	var pushed, attached orasDescriptor

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"push artifact", func(t *testing.T) {
			decodeJSON(t, oras(t, pushArgs...), &pushed)
			if pushed.ArtifactType != bundleType {
				t.Errorf("oras push: artifactType %q, want %q", pushed.ArtifactType, bundleType)
			}
			raw := oras(t, "manifest", "fetch", "--plain-http", bundle)
			if got := testimage.Digest(raw); got != pushed.Digest {
				t.Fatalf("oras manifest fetch: digest %s, oras push said %s", got, pushed.Digest)
			}
			reg.wantManifest(t, "oras/bundle", "v1", testimage.Blob{Data: raw})
			var m struct {
				ArtifactType string                 `json:"artifactType"`
				Layers       []testimage.Descriptor `json:"layers"`
			}
			decodeJSON(t, raw, &m)
			if m.ArtifactType != bundleType {
				t.Errorf("manifest artifactType %q, want %q", m.ArtifactType, bundleType)
			}
			if len(m.Layers) != len(files) {
				t.Fatalf("manifest has %d layers, want %d", len(m.Layers), len(files))
			}
			for i, f := range files {
				l := m.Layers[i]
				title := l.Annotations["org.opencontainers.image.title"]
				if title != f.Name || l.Digest != testimage.Digest(f.Data) || l.MediaType != mediaTypes[i] {
					t.Errorf("layer %d: %s %s titled %q, want %s %s titled %q",
						i, l.MediaType, l.Digest, title, mediaTypes[i], testimage.Digest(f.Data), f.Name)
				}
			}
		}},
		{"pull artifact", func(t *testing.T) {
			out := t.TempDir()
			oras(t, "pull", "--plain-http", "-o", out, bundle)
			for _, f := range files {
				got, err := os.ReadFile(filepath.Join(out, f.Name))
				if err != nil {
					t.Errorf("pulled %s: %v", f.Name, err)
				} else if string(got) != string(f.Data) {
					t.Errorf("pulled %s: %d bytes with digest %s, want %d bytes with %s",
						f.Name, len(got), testimage.Digest(got), len(f.Data), testimage.Digest(f.Data))
				}
			}
		}},
		{"repo tags", func(t *testing.T) {
			wantLines(t, "oras repo tags", oras(t, "repo", "tags", "--plain-http", reg.ref("oras/bundle")), "v1")
		}},
		{"copy image from layout", func(t *testing.T) {
			dir := layout(t, map[string]testimage.Content{"v1": image})
			oras(t, "cp", "--from-oci-layout", "--to-plain-http", dir+":v1", imageRef)
			reg.wantManifest(t, "oras/image", "v1", image.Manifest)
		}},
		{"attach sbom", func(t *testing.T) {
			writeFile(t, reg.run.Dir, "sbom.json", []byte(`{"spdxVersion":"SPDX-2.3","name":"oras-image"}`))
			decodeJSON(t, oras(t, "attach", "--plain-http", "--format", "json",
				"--artifact-type", sbomType, imageRef, "sbom.json:application/spdx+json"), &attached)
			raw := oras(t, "manifest", "fetch", "--plain-http", reg.ref("oras/image@"+attached.Digest))
			if got := testimage.Digest(raw); got != attached.Digest {
				t.Fatalf("oras manifest fetch: digest %s, oras attach said %s", got, attached.Digest)
			}
			var m manifestJSON
			decodeJSON(t, raw, &m)
			if m.Subject == nil || m.Subject.Digest != image.Manifest.Digest() {
				t.Errorf("sbom subject %+v, want %s", m.Subject, image.Manifest.Digest())
			}
			// Attaching must not move the image's tag.
			reg.wantManifest(t, "oras/image", "v1", image.Manifest)
		}},
		{"discover", func(t *testing.T) {
			cases := []struct {
				name   string
				ref    string
				filter []string
				want   []referrer
			}{
				{"image", imageRef, nil, []referrer{{attached.Digest, sbomType}}},
				{"image, sbom only", imageRef, []string{"--artifact-type", sbomType}, []referrer{{attached.Digest, sbomType}}},
				{"image, other type", imageRef, []string{"--artifact-type", otherType}, nil},
				{"artifact without referrers", bundle, nil, nil},
			}
			for _, tc := range cases {
				var got orasDescriptor
				args := slices.Concat([]string{"discover", "--plain-http", "--format", "json"}, tc.filter, []string{tc.ref})
				decodeJSON(t, oras(t, args...), &got)
				var refs []referrer
				for _, r := range got.Referrers {
					refs = append(refs, referrer{r.Digest, r.ArtifactType})
				}
				if !slices.Equal(refs, tc.want) {
					t.Errorf("%s: referrers %+v, want %+v", tc.name, refs, tc.want)
				}
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.Fatalf("step %q failed; later steps depend on it", s.name)
		}
	}
}
