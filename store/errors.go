package store

import "errors"

// Errors the store returns, wrapped with detail. The HTTP layer maps each to
// a Distribution Spec error code in one place.
var (
	ErrNameInvalid         = errors.New("invalid repository name")
	ErrNameUnknown         = errors.New("repository not known")
	ErrTagInvalid          = errors.New("invalid tag")
	ErrDigestInvalid       = errors.New("invalid digest")
	ErrDigestUnsupported   = errors.New("unsupported digest algorithm")
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
)
