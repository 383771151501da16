package oci

import (
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// Names become key prefixes (directory paths): whatever ValidateName lets
// through must stay inside the root, name no layout file, and mean one
// path only. The seed corpus (testdata/fuzz) holds traversal attempts.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"alpine", "library/alpine", "a/b/c", "a-b_c.d__e", "a.b/c--d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if len(name) > MaxNameLength || name != strings.ToLower(name) {
			t.Fatalf("%q accepted: too long or not lower case", name)
		}
		if path.Clean(name) != name || !filepath.IsLocal(name) || strings.Contains(name, "..") || strings.ContainsAny(name, "\\\x00%") {
			t.Fatalf("%q accepted but is not one clean local path", name)
		}
		root := "/srv/pier"
		if p := filepath.Join(root, name); !strings.HasPrefix(p, root+"/") {
			t.Fatalf("%q leaves the root: %s", name, p)
		}
		for _, c := range strings.Split(name, "/") {
			if reservedComponents[c] || strings.HasPrefix(c, ".") {
				t.Fatalf("%q accepted with component %q", name, c)
			}
		}
	})
}

// A digest maps to exactly blobs/<alg>/<hex>: nothing else may parse.
func FuzzParseDigest(f *testing.F) {
	for _, s := range []string{
		"sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("0", 128),
		"sha256:../../etc/passwd", "sha256:" + strings.Repeat("A", 64), "md5:abc",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		if d.Validate() != nil || d.String() != s {
			t.Fatalf("%q parsed to %q, which does not validate or differs", s, d)
		}
		p := filepath.Join("blobs", string(d.Algorithm()), d.Encoded())
		if !filepath.IsLocal(p) || strings.Count(p, "/") != 2 || strings.Trim(d.Encoded(), "0123456789abcdef") != "" {
			t.Fatalf("%q gives path %q", s, p)
		}
	})
}

// Tags are path components of nothing, but name index.json entries: no
// separators, bounded.
func FuzzValidateTag(f *testing.F) {
	for _, s := range []string{"v1", "latest", "1.0.0-rc_1", "../x", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		if ValidateTag(tag) != nil {
			return
		}
		if len(tag) > 128 || strings.ContainsAny(tag, "/:\\\x00 ") || IsDigest(tag) {
			t.Fatalf("tag %q accepted", tag)
		}
	})
}
