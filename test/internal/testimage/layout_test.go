package testimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestImagesAreDeterministic(t *testing.T) {
	p := Platform{OS: "linux", Architecture: "amd64"}
	a, b := NewImage("x", 2, p), NewImage("x", 2, p)
	if a.Manifest.Digest() != b.Manifest.Digest() {
		t.Errorf("same seed, different manifests: %s, %s", a.Manifest.Digest(), b.Manifest.Digest())
	}
	c := NewImage("y", 2, p)
	for i := range a.Layers {
		if a.Layers[i].Digest() == c.Layers[i].Digest() {
			t.Errorf("seeds x and y share layer %d", i)
		}
	}
}

func TestLayoutRoundTripAndCompare(t *testing.T) {
	dir := t.TempDir()
	multi := NewMultiArch("m", 2, Platform{"linux", "amd64"}, Platform{"linux", "arm64"})
	if err := WriteLayout(dir, map[string]Content{"v1": multi}); err != nil {
		t.Fatal(err)
	}
	l := Layout{Dir: dir}
	d, err := l.Tag("v1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest != multi.Manifest.Digest() || d.MediaType != MediaTypeIndex {
		t.Errorf("tag v1: got %s %s, want the index %s", d.MediaType, d.Digest, multi.Manifest.Digest())
	}
	if err := Compare(l, multi); err != nil {
		t.Errorf("compare with itself: %v", err)
	}
	if _, err := l.Tag("v2"); err == nil {
		t.Error("tag v2: want an error")
	}

	// One flipped bit and one missing blob must both be reported.
	flipped, missing := multi.Images[0].Layers[1].Digest(), multi.Images[1].Config.Digest()
	path := func(d string) string { return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")) }
	data, err := os.ReadFile(path(flipped))
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(path(flipped), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path(missing)); err != nil {
		t.Fatal(err)
	}
	err = Compare(l, multi)
	if err == nil || !strings.Contains(err.Error(), flipped) || !strings.Contains(err.Error(), missing) {
		t.Errorf("compare after damage: got %v, want errors naming %s and %s", err, flipped, missing)
	}
}
