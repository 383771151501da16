package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/pier-oci/pier/store"
)

// apiError is one error in the Distribution Spec's format. Every error
// response pier sends is {"errors":[{"code","message","detail"}]}.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// The spec's error codes with their statuses and messages.
func errBlobUnknown(detail string) *apiError {
	return &apiError{http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry", detail}
}
func errBlobUploadInvalid(detail string) *apiError {
	return &apiError{http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "blob upload invalid", detail}
}
func errBlobUploadUnknown(detail string) *apiError {
	return &apiError{http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", detail}
}
func errDigestInvalid(detail string) *apiError {
	return &apiError{http.StatusBadRequest, "DIGEST_INVALID", "provided digest did not match uploaded content", detail}
}
func errManifestBlobUnknown(detail string) *apiError {
	return &apiError{http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", detail}
}
func errManifestInvalid(detail string) *apiError {
	return &apiError{http.StatusBadRequest, "MANIFEST_INVALID", "manifest invalid", detail}
}
func errManifestUnknown(detail string) *apiError {
	return &apiError{http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown to registry", detail}
}
func errNameInvalid(detail string) *apiError {
	return &apiError{http.StatusBadRequest, "NAME_INVALID", "invalid repository name", detail}
}
func errNameUnknown(detail string) *apiError {
	return &apiError{http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry", detail}
}
func errSizeInvalid(detail string) *apiError {
	return &apiError{http.StatusBadRequest, "SIZE_INVALID", "provided length did not match content length", detail}
}
func errDenied(detail string) *apiError {
	return &apiError{http.StatusForbidden, "DENIED", "requested access to the resource is denied", detail}
}
func errUnsupported(detail string) *apiError {
	return &apiError{http.StatusMethodNotAllowed, "UNSUPPORTED", "the operation is unsupported", detail}
}
func errRangeInvalid(detail string) *apiError {
	return &apiError{http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID", "requested range not satisfiable", detail}
}

// errRangeNotSatisfiable answers a blob GET whose Range pier will not
// serve. The spec has no code for it; UNSUPPORTED says the request, not
// the blob, is at fault.
func errRangeNotSatisfiable(detail string) *apiError {
	return &apiError{http.StatusRequestedRangeNotSatisfiable, "UNSUPPORTED", "requested range not satisfiable", detail}
}

func errTooManyRequests(detail string) *apiError {
	return &apiError{http.StatusTooManyRequests, "TOOMANYREQUESTS", "too many requests", detail}
}

// errStorageFull answers a write the disk has no room for. The spec has no
// code for it, so the code is UNKNOWN and the message says what happened.
// The status is 507 Insufficient Storage (RFC 4918): "the server is unable
// to store the representation needed to complete the request", which is
// exactly this. It is a 5xx, so no client blames its own request, and not
// one of the 500, 502, 503 and 504 that clients retry at once (crane, ggcr
// and containerd do), which against a full disk would only repeat the
// upload. DENIED would make docker and podman ask for credentials.
func errStorageFull() *apiError {
	return &apiError{http.StatusInsufficientStorage, "UNKNOWN", "the registry's storage is full",
		"no space left on the registry's disk; pushes work again once space is freed (delete images, then garbage collection frees their blobs)"}
}

func errUnknown(detail string) *apiError {
	return &apiError{http.StatusInternalServerError, "UNKNOWN", "internal error; see the registry's log", detail}
}

// toAPIError maps an error from the store to the spec. This is the one
// place that knows which store error is which spec code.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	msg := err.Error()
	switch {
	case errors.Is(err, store.ErrNameInvalid):
		return errNameInvalid(msg)
	case errors.Is(err, store.ErrNameUnknown):
		return errNameUnknown(msg)
	case errors.Is(err, store.ErrTagInvalid):
		return errManifestInvalid(msg)
	case errors.Is(err, store.ErrDigestInvalid), errors.Is(err, store.ErrDigestMismatch):
		return errDigestInvalid(msg)
	case errors.Is(err, store.ErrDigestUnsupported):
		return &apiError{http.StatusBadRequest, "UNSUPPORTED", "the operation is unsupported", msg}
	case errors.Is(err, store.ErrBlobUnknown):
		return errBlobUnknown(msg)
	case errors.Is(err, store.ErrBlobReferenced), errors.Is(err, store.ErrManifestReferenced):
		return errUnsupported(msg)
	case errors.Is(err, store.ErrUploadUnknown):
		return errBlobUploadUnknown(msg)
	case errors.Is(err, store.ErrUploadOffset):
		return errRangeInvalid(msg)
	case errors.Is(err, store.ErrUploadInvalid):
		return errBlobUploadInvalid(msg)
	case errors.Is(err, store.ErrManifestUnknown):
		return errManifestUnknown(msg)
	case errors.Is(err, store.ErrManifestTooLarge):
		return &apiError{http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", "manifest invalid", msg}
	case errors.Is(err, store.ErrManifestInvalid):
		return errManifestInvalid(msg)
	case errors.Is(err, store.ErrManifestBlobUnknown):
		return errManifestBlobUnknown(msg)
	case errors.Is(err, store.ErrReadOnly):
		return errDenied(msg)
	case errors.Is(err, store.ErrNoSpace):
		return errStorageFull()
	case errors.Is(err, store.ErrQuota):
		// The message names the limit; clients print it ("denied: ...").
		return &apiError{http.StatusForbidden, "DENIED", msg, nil}
	case errors.Is(err, store.ErrNotRepository):
		// Reads report these as unknown; a push cannot go there.
		return errNameInvalid("the name leads to something that is not a repository and cannot become one (a file, or a damaged layout)")
	case errors.Is(err, store.ErrUnavailable):
		return &apiError{http.StatusServiceUnavailable, "UNKNOWN", "the registry's storage cannot be reached; retry later", msg}
	case errors.Is(err, errBodyIdle):
		return errBlobUploadInvalid(err.Error())
	}
	return errUnknown("")
}

// writeError sends err as a spec error response.
func writeError(w http.ResponseWriter, err *apiError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Del("ETag")
	w.WriteHeader(err.Status)
	json.NewEncoder(w).Encode(struct {
		Errors []*apiError `json:"errors"`
	}{[]*apiError{err}})
}
