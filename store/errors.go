package store

import (
	"errors"

	"github.com/pier-oci/pier/store/oci"
)

// Errors the store returns, wrapped with detail. The HTTP layer maps each to
// a Distribution Spec error code in one place.
var (
	ErrNameUnknown         = errors.New("repository not known")
	ErrDigestMismatch      = errors.New("content does not match digest")
	ErrBlobUnknown         = errors.New("blob not known")
	ErrBlobReferenced      = errors.New("blob is referenced by a manifest")
	ErrUploadUnknown       = errors.New("upload not known")
	ErrUploadOffset        = errors.New("chunk does not start at the end of the upload")
	ErrUploadInvalid       = errors.New("invalid upload")
	ErrManifestUnknown     = errors.New("manifest not known")
	ErrManifestInvalid     = errors.New("invalid manifest")
	ErrManifestTooLarge    = errors.New("manifest too large")
	ErrManifestBlobUnknown = errors.New("manifest references a blob not in the repository")
	ErrManifestReferenced  = errors.New("manifest is referenced by an index")
	ErrReadOnly            = errors.New("storage is read-only")
	ErrNotRepository       = errors.New("something other than a repository is where the name leads")
)

// The grammar's errors, under the store's names so that callers map every
// store error from one place.
var (
	ErrNameInvalid       = oci.ErrNameInvalid
	ErrTagInvalid        = oci.ErrTagInvalid
	ErrDigestInvalid     = oci.ErrDigestInvalid
	ErrDigestUnsupported = oci.ErrDigestUnsupported
)
