// Package oci holds the grammar of the OCI Distribution and Image specs
// that every layer of pier checks input against: repository names, tags,
// digests and manifest media types. It is a leaf: it knows no storage,
// no HTTP and no configuration, so any of them may import it.
package oci

import (
	"crypto/sha256" // registers sha256 with go-digest
	_ "crypto/sha512"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Errors for input that breaks the grammar, wrapped with detail.
var (
	ErrNameInvalid       = errors.New("invalid repository name")
	ErrTagInvalid        = errors.New("invalid tag")
	ErrDigestInvalid     = errors.New("invalid digest")
	ErrDigestUnsupported = errors.New("unsupported digest algorithm")
)

// The grammar of the Distribution Spec, as its regular expressions state
// it (names_test.go checks these functions against them):
//
//	name: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//	tag:  [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//
// Names reach storage as key prefixes (directory paths), so nothing else
// may pass: no "..", no leading "/", no empty component, no upper case.
// They are checked by hand rather than by regexp because every request
// checks one.

// nameMatches reports whether name follows the name grammar.
func nameMatches(name string) bool {
	for comp := range strings.SplitSeq(name, "/") {
		if !componentMatches(comp) {
			return false
		}
	}
	return true
}

// componentMatches: alphanumerics, separated by exactly one ".", one or
// two "_", or any number of "-".
func componentMatches(c string) bool {
	if c == "" || !alnum(c[0]) || !alnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); i++ {
		if alnum(c[i]) {
			continue
		}
		j := i // a run of separators from i to j
		for j < len(c) && !alnum(c[j]) {
			j++
		}
		switch sep := c[i:j]; {
		case sep == ".", sep == "_", sep == "__":
		case strings.Trim(sep, "-") == "":
		default:
			return false
		}
		i = j
	}
	return true
}

func alnum(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }

// tagMatches reports whether tag follows the tag grammar.
func tagMatches(tag string) bool {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		b := tag[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '.' || b == '-') {
			return false
		}
	}
	return true
}

// MaxNameLength bounds a repository name; the spec lets registries cap it
// and 255 keeps every path well below PATH_MAX.
const MaxNameLength = 255

// reservedComponents are names an OCI layout, or pier's root, already uses
// for itself. A repository named "a/blobs" would live inside repository
// "a"'s blob directory, so such names are refused.
var reservedComponents = map[string]bool{
	"blobs":      true,
	"index.json": true,
	"oci-layout": true,
	"cache.db":   true,
}

// ValidateName checks a repository name from the network before it is used
// as a path.
func ValidateName(name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: longer than %d characters", ErrNameInvalid, MaxNameLength)
	}
	if !nameMatches(name) {
		return fmt.Errorf("%w: %q does not match the spec's name grammar", ErrNameInvalid, name)
	}
	for _, c := range strings.Split(name, "/") {
		if reservedComponents[c] {
			return fmt.Errorf("%w: %q is reserved by the OCI image layout", ErrNameInvalid, c)
		}
	}
	return nil
}

// ValidateTag checks a tag from the network.
func ValidateTag(tag string) error {
	if !tagMatches(tag) {
		return fmt.Errorf("%w: %q is not a valid tag", ErrTagInvalid, tag)
	}
	return nil
}

// ParseDigest parses and validates a digest from the network. Only the
// algorithms the OCI image spec registers are accepted, so every digest
// maps to exactly one path blobs/<alg>/<hex>.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrDigestInvalid, s, err)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return d, nil
	}
	return "", fmt.Errorf("%w: algorithm %q is not supported (use sha256 or sha512)", ErrDigestUnsupported, d.Algorithm())
}

// ValidDigest reports whether d, read from storage rather than the
// network, is one pier can build a path from and hash with.
func ValidDigest(d digest.Digest) bool {
	_, err := ParseDigest(string(d))
	return err == nil
}

// IsDigest reports whether a manifest reference is a digest rather than a
// tag (tags cannot contain ':').
func IsDigest(ref string) bool { return strings.Contains(ref, ":") }

// SHA256Of is the digest of b, for content pier creates itself.
func SHA256Of(b []byte) digest.Digest {
	sum := sha256.Sum256(b)
	return digest.NewDigestFromBytes(digest.SHA256, sum[:])
}
