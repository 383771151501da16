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
	// ErrNotRepository: a push found something other than a repository's
	// own files where its name leads (a file across the path, a directory
	// where index.json belongs), which it cannot replace.
	ErrNotRepository = errors.New("something other than a repository is where the name leads")
)

// The grammar's errors, under the store's names so that callers map every
// store error from one place.
var (
	ErrNameInvalid       = oci.ErrNameInvalid
	ErrTagInvalid        = oci.ErrTagInvalid
	ErrDigestInvalid     = oci.ErrDigestInvalid
	ErrDigestUnsupported = oci.ErrDigestUnsupported
)

// fromDriver gives a driver error its store meaning. For a read (notFound
// set), a missing object, or one too large to be what it claims, is
// notFound (ErrBlobUnknown, ErrManifestUnknown…); for a write (notFound
// nil), "not found" means the way to the key is blocked (a file across
// the path): ErrNotRepository. A full or unreachable backend is ErrNoSpace
// or ErrUnavailable. Other errors stay as they are (a 500, logged).
func fromDriver(err, notFound error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	switch {
	case (errors.Is(err, driver.ErrNotFound) || errors.Is(err, driver.ErrTooLarge)) && notFound != nil:
		return fmt.Errorf("%w: %s", notFound, what)
	case errors.Is(err, driver.ErrNotFound):
		return fmt.Errorf("%w: %s: %v", ErrNotRepository, what, err)
	case errors.Is(err, driver.ErrNoSpace):
		return fmt.Errorf("%w: %s: %v", ErrNoSpace, what, err)
	case errors.Is(err, driver.ErrUnavailable):
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
	case errors.Is(err, driver.ErrReadOnly):
		return fmt.Errorf("%w: %s: %v", ErrReadOnly, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
