// Package layout is zot's layout of keys in a store: one OCI Image Layout
// per repository, a directory (or a key prefix in a bucket) named after
// it. The store and its dedupe both build and read keys here, from names
// and digests that were validated (oci.ValidateName, oci.ParseDigest) or
// that pier generated itself; drivers check every key again.
//
//	<repo>/oci-layout
//	<repo>/index.json
//	<repo>/blobs/<alg>/<hex>
//	<repo>/.uploads/<id>
package layout

import (
	"context"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/pier-oci/pier/store/driver"
)

// Index is repo's index.json.
func Index(repo string) string { return repo + "/index.json" }

// OCILayout is repo's oci-layout file.
func OCILayout(repo string) string { return repo + "/oci-layout" }

// Uploads is the directory of repo's uploads in progress.
func Uploads(repo string) string { return repo + "/.uploads" }

// Upload is upload id of repo.
func Upload(repo, id string) string { return repo + "/.uploads/" + id }

// BlobsDir is the directory of repo's blobs of algorithm alg.
func BlobsDir(repo string, alg digest.Algorithm) string { return repo + "/blobs/" + alg.String() }

// Blob is blob d of repo.
func Blob(repo string, d digest.Digest) string {
	return repo + "/blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// IsBlob reports whether key has the shape <repo>/blobs/<alg>/<hex>.
func IsBlob(key string) bool { return path.Base(path.Dir(path.Dir(key))) == "blobs" }

// RepoOfBlob is the repository of <repo>/blobs/<alg>/<hex>, or "".
func RepoOfBlob(key string) string {
	if i := strings.LastIndex(key, "/blobs/"); i > 0 {
		return key[:i]
	}
	return ""
}

// DigestOfBlob is the digest a blob key names (unvalidated).
func DigestOfBlob(key string) digest.Digest {
	return digest.NewDigestFromEncoded(digest.Algorithm(path.Base(path.Dir(key))), path.Base(key))
}

// A BlobEntry is one blob found in a repository's blobs directories.
type BlobEntry struct {
	Digest digest.Digest
	Info   driver.Info
}

// ListBlobs lists repo's blobs (sha256 and sha512), skipping what is not
// one (a tool's stray file is not ours to judge).
func ListBlobs(ctx context.Context, drv driver.Driver, repo string) ([]BlobEntry, error) {
	var out []BlobEntry
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		entries, err := drv.List(ctx, BlobsDir(repo, alg))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			d := digest.NewDigestFromEncoded(alg, path.Base(e.Key))
			if e.IsDir || d.Validate() != nil {
				continue
			}
			out = append(out, BlobEntry{Digest: d, Info: e})
		}
	}
	return out, nil
}
