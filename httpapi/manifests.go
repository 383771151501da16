package httpapi

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/oci"
)

// getManifest serves GET and HEAD of a manifest by tag or digest.
func (a *API) getManifest(w http.ResponseWriter, r *http.Request, req request) error {
	m, err := a.reg.GetManifest(r.Context(), req.repo, req.ref)
	if err != nil {
		return err
	}
	if !accepts(r.Header.Values("Accept"), m.MediaType) {
		return errManifestUnknown(fmt.Sprintf("%s is a %s, which the Accept header does not allow", req.ref, m.MediaType))
	}
	h := w.Header()
	etag := `"` + m.Digest.String() + `"`
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("ETag", etag)
	// A manifest is served whole: its digest and media type describe the
	// document, not a range of it, so Range is ignored. The one
	// precondition clients send is If-None-Match (a cached manifest).
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", m.MediaType)
	h.Set("Content-Length", strconv.Itoa(len(m.Body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(m.Body) // a client gone mid-response is not an error of ours
	}
	return nil
}

// etagMatches reports whether an If-None-Match header names etag (or *).
func etagMatches(header, etag string) bool {
	for part := range strings.SplitSeq(header, ",") {
		part = strings.TrimSpace(part)
		if part == "*" || strings.TrimPrefix(part, "W/") == etag {
			return true
		}
	}
	return false
}

// accepts reports whether a client's Accept header allows mediaType. A
// client that names no manifest type at all (or a wildcard) takes what is
// stored; one that lists manifest types but not this one gets a 404, as
// from distribution, rather than a manifest it cannot parse.
func accepts(accept []string, mediaType string) bool {
	namesManifest := false
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if mt == mediaType || mt == "*/*" || mt == "application/*" {
				return true
			}
			if oci.IsManifestType(mt) {
				namesManifest = true
			}
		}
	}
	return !namesManifest
}

// putManifest stores a manifest under a tag or its digest, and under every
// ?tag= of the request.
func (a *API) putManifest(w http.ResponseWriter, r *http.Request, req request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, oci.MaxManifestSize+1))
	if err != nil {
		return errManifestInvalid("reading the body: " + err.Error())
	}
	if len(body) > oci.MaxManifestSize {
		return fmt.Errorf("%w: larger than %d bytes", store.ErrManifestTooLarge, oci.MaxManifestSize)
	}
	tags := r.URL.Query()["tag"]
	res, err := a.reg.PutManifest(r.Context(), req.repo, req.ref, r.Header.Get("Content-Type"), body, tags)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", "/v2/"+req.repo+"/manifests/"+res.Digest.String())
	h.Set("Docker-Content-Digest", res.Digest.String())
	if res.Subject != "" {
		h.Set("OCI-Subject", res.Subject.String())
	}
	for _, t := range tags {
		h.Add("OCI-Tag", t)
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// deleteManifest deletes a tag (the manifest stays) or a manifest by digest
// (with its tags).
func (a *API) deleteManifest(w http.ResponseWriter, r *http.Request, req request) error {
	err := a.reg.DeleteManifest(r.Context(), req.repo, req.ref)
	if errors.Is(err, store.ErrTagInvalid) {
		return errManifestUnknown(err.Error())
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
