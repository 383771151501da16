package store

import (
	"errors"
	"fmt"

	"github.com/pier-oci/pier/store/driver"
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
	// ErrNoSpace: the storage is full; nothing partial was kept.
	ErrNoSpace = errors.New("storage is full")
	// ErrUnavailable: the storage backend cannot be reached right now.
	ErrUnavailable = errors.New("storage unavailable")
)

// The grammar's errors, under the store's names so that callers map every
// store error from one place.
var (
	ErrNameInvalid       = oci.ErrNameInvalid
	ErrTagInvalid        = oci.ErrTagInvalid
	ErrDigestInvalid     = oci.ErrDigestInvalid
	ErrDigestUnsupported = oci.ErrDigestUnsupported
)

// fromDriver gives a driver error its store meaning: a missing object is
// notFound (ErrBlobUnknown, ErrManifestUnknown…), a full or unreachable
// backend ErrNoSpace or ErrUnavailable. Other errors stay as they are
// (a 500, logged).
func fromDriver(err, notFound error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, driver.ErrNotFound) && notFound != nil:
		return fmt.Errorf("%w: %s", notFound, what)
	case errors.Is(err, driver.ErrNoSpace):
		return fmt.Errorf("%w: %s: %v", ErrNoSpace, what, err)
	case errors.Is(err, driver.ErrUnavailable):
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
	case errors.Is(err, driver.ErrReadOnly):
		return fmt.Errorf("%w: %s: %v", ErrReadOnly, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
