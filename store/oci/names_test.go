package oci

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alpine", true},
		{"library/alpine", true},
		{"a/b/c/d", true},
		{"my-app_v2.1/x__y", true},
		{"a--b", true},
		{"", false},
		{"../etc", false},
		{"a/../b", false},
		{"a/./b", false},
		{"/abs", false},
		{"trailing/", false},
		{"a//b", false},
		{"Upper", false},
		{"a b", false},
		{"a/.uploads", false},
		{"-lead", false},
		{"a/blobs", false},      // would live in a's blob directory
		{"a/index.json", false}, // would collide with a's index
		{"x/oci-layout", false},
		{"cache.db", false},
		{strings.Repeat("a", 256), false},
		{strings.Repeat("a", 255), true},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNameInvalid) {
			t.Errorf("ValidateName(%q) error %v is not ErrNameInvalid", tc.name, err)
		}
	}
}

func TestValidateTag(t *testing.T) {
	for _, tc := range []struct {
		tag string
		ok  bool
	}{
		{"latest", true},
		{"v1.2.3-rc_1", true},
		{"_x", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{".hidden", false},
		{"-x", false},
		{"a/b", false},
		{"a:b", false},
		{"../x", false},
	} {
		if err := ValidateTag(tc.tag); (err == nil) != tc.ok {
			t.Errorf("ValidateTag(%q) = %v, want ok=%v", tc.tag, err, tc.ok)
		}
	}
}

func TestParseDigest(t *testing.T) {
	hex256 := strings.Repeat("ab", 32)
	hex512 := strings.Repeat("cd", 64)
	for _, tc := range []struct {
		in      string
		wantErr error
	}{
		{"sha256:" + hex256, nil},
		{"sha512:" + hex512, nil},
		{"sha256:" + strings.ToUpper(hex256), ErrDigestInvalid},
		{"sha256:" + hex256[:63], ErrDigestInvalid},
		{"sha256:../../etc/passwd", ErrDigestInvalid},
		{"sha256:", ErrDigestInvalid},
		{"md5:" + hex256, ErrDigestInvalid},
		{"sha384:" + strings.Repeat("ab", 48), ErrDigestUnsupported},
		{"latest", ErrDigestInvalid},
		{"", ErrDigestInvalid},
	} {
		_, err := ParseDigest(tc.in)
		if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("ParseDigest(%q) = %v, want %v", tc.in, err, tc.wantErr)
		}
	}
}

// The hand-written checks agree with the spec's regular expressions.
func TestGrammarAgreesWithTheSpecPatterns(t *testing.T) {
	nameRE := regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE := regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	alphabet := []string{"a", "0", ".", "_", "-", "/", "A", ":", "__", "--"}
	var gen func(s string, depth int)
	n := 0
	gen = func(s string, depth int) {
		n++
		if got, want := nameMatches(s), nameRE.MatchString(s); got != want {
			t.Fatalf("nameMatches(%q) = %v, the spec's pattern says %v", s, got, want)
		}
		if got, want := tagMatches(s), tagRE.MatchString(s); got != want {
			t.Fatalf("tagMatches(%q) = %v, the spec's pattern says %v", s, got, want)
		}
		if depth == 0 {
			return
		}
		for _, c := range alphabet {
			gen(s+c, depth-1)
		}
	}
	gen("", 5)
	for _, s := range []string{strings.Repeat("a", 128), strings.Repeat("a", 129), "_" + strings.Repeat("b", 127)} {
		if tagMatches(s) != tagRE.MatchString(s) {
			t.Fatalf("tagMatches(%d chars) disagrees", len(s))
		}
	}
	t.Logf("%d strings agree", n)
}
