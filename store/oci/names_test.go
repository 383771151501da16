package oci

import (
	"errors"
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
