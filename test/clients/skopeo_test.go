package clients

import (
	"slices"
	"testing"

	"github.com/pier-oci/pier/test/internal/testimage"
)

// skopeo runs skopeo without a signature policy file: the machine's
// /etc/containers/policy.json is not ours to depend on.
func (r *registry) skopeo(t *testing.T, args ...string) []byte {
	t.Helper()
	return r.run.Run(t, "skopeo", append([]string{"--insecure-policy"}, args...)...)
}

// TestSkopeoRoundTrip copies images from an OCI layout into pier and back
// into a new layout, and checks that every manifest and blob is unchanged:
// pier must store and serve content byte for byte.
func TestSkopeoRoundTrip(t *testing.T) { eachStorage(t, testSkopeoRoundTrip) }

func testSkopeoRoundTrip(t *testing.T, storage map[string]any) {
	reg := startRegistry(t, storage, "skopeo")
	image := testimage.NewImage("skopeo-app", 3, amd64)
	multi := testimage.NewMultiArch("skopeo-multi", 2, amd64, arm64)
	src := layout(t, map[string]testimage.Content{"app": image, "multi": multi})

	cases := []struct {
		name string
		tag  string
		repo string
		want testimage.Content
		all  []string // flags to copy every image of an index
	}{
		{name: "image", tag: "app", repo: "skopeo/app", want: image},
		{name: "multi-arch index", tag: "multi", repo: "skopeo/multi", want: multi, all: []string{"--all"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			remote := "docker://" + reg.ref(tc.repo+":"+tc.tag)
			back := t.TempDir()
			// --preserve-digests makes skopeo fail rather than convert, so
			// a difference below is pier's, not skopeo's.
			copyFlags := append([]string{"copy", "--preserve-digests"}, tc.all...)
			push := slices.Concat(copyFlags, []string{"--dest-tls-verify=false", "oci:" + src + ":" + tc.tag, remote})
			pull := slices.Concat(copyFlags, []string{"--src-tls-verify=false", remote, "oci:" + back + ":" + tc.tag})

			reg.skopeo(t, push...)
			reg.wantManifest(t, tc.repo, tc.tag, tc.want.Top())
			raw := reg.skopeo(t, "inspect", "--raw", "--tls-verify=false", remote)
			if string(raw) != string(tc.want.Top().Data) {
				t.Errorf("skopeo inspect --raw: got %s, want %s", testimage.Digest(raw), tc.want.Top().Digest())
			}

			reg.skopeo(t, pull...)
			got, err := testimage.Layout{Dir: back}.Tag(tc.tag)
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != tc.want.Top().Digest() {
				t.Errorf("copied back as %s, want %s", got.Digest, tc.want.Top().Digest())
			}
			wantNoErr(t, "blobs copied back", testimage.Compare(testimage.Layout{Dir: back}, tc.want))
		})
	}

	// Every image of the index is also reachable by its own digest.
	for _, im := range multi.Images {
		raw := reg.skopeo(t, "inspect", "--raw", "--tls-verify=false",
			"docker://"+reg.ref("skopeo/multi@"+im.Manifest.Digest()))
		if string(raw) != string(im.Manifest.Data) {
			t.Errorf("skopeo/multi@%s: got %s", im.Manifest.Digest(), testimage.Digest(raw))
		}
	}
}

// TestSkopeoDir round-trips pier → skopeo's dir: format → pier under a new
// name: the second push comes from files skopeo wrote, not from our layout.
func TestSkopeoDir(t *testing.T) { eachStorage(t, testSkopeoDir) }

func testSkopeoDir(t *testing.T, storage map[string]any) {
	reg := startRegistry(t, storage, "skopeo")
	image := testimage.NewImage("skopeo-dir", 2, arm64)
	src := layout(t, map[string]testimage.Content{"v1": image})
	reg.skopeo(t, "copy", "--preserve-digests", "--dest-tls-verify=false",
		"oci:"+src+":v1", "docker://"+reg.ref("skopeo/dir:v1"))

	dir := t.TempDir()
	reg.skopeo(t, "copy", "--preserve-digests", "--src-tls-verify=false",
		"docker://"+reg.ref("skopeo/dir:v1"), "dir:"+dir)
	wantNoErr(t, "dir: blobs", testimage.Compare(testimage.Dir{Path: dir, Top: image.Manifest.Digest()}, image))

	reg.skopeo(t, "copy", "--preserve-digests", "--dest-tls-verify=false",
		"dir:"+dir, "docker://"+reg.ref("skopeo/from-dir:v2"))
	reg.wantManifest(t, "skopeo/from-dir", "v2", image.Manifest)
	reg.wantManifest(t, "skopeo/from-dir", image.Manifest.Digest(), image.Manifest)
}
