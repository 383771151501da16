package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/budget"
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
	h.Set("Content-Type", m.MediaType)
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("ETag", `"`+m.Digest.String()+`"`)
	// A manifest is served whole: its digest and media type describe the
	// document, not a range of it (ServeContent would answer a Range with
	// a fragment, or a multipart body). Conditional requests still work.
	r.Header.Del("Range")
	r.Header.Del("If-Range")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(m.Body))
	return nil
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

// manifestBudgeter is a Registry that bounds the manifest bytes in memory
// at once. A push holds its share from before it reads the body until the
// store has decoded and stored it, so eight 4 MiB manifests pushed at once
// are read and decoded a few at a time, the others waiting their turn
// (until their client gives up) with their bytes still in the network.
type manifestBudgeter interface {
	ManifestBudget(repo string) *budget.Budget
}

// putManifest stores a manifest under a tag or its digest, and under every
// ?tag= of the request.
func (a *API) putManifest(w http.ResponseWriter, r *http.Request, req request) error {
	if r.ContentLength > oci.MaxManifestSize {
		return fmt.Errorf("%w: Content-Length %d is more than %d bytes", store.ErrManifestTooLarge, r.ContentLength, oci.MaxManifestSize)
	}
	ctx := r.Context()
	if mb, ok := a.reg.(manifestBudgeter); ok {
		weight := r.ContentLength
		if weight < 0 {
			weight = oci.MaxManifestSize // not known until it is read
		}
		held, release, err := mb.ManifestBudget(req.repo).Acquire(ctx, weight)
		if err != nil {
			return fmt.Errorf("waiting to read a manifest: %w", err)
		}
		defer release()
		ctx = held
	}
	body, err := readManifestBody(r)
	if err != nil {
		return err
	}
	tags := r.URL.Query()["tag"]
	res, err := a.reg.PutManifest(ctx, req.repo, req.ref, r.Header.Get("Content-Type"), body, tags)
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

// readManifestBody reads a manifest push's body: into a buffer of its
// Content-Length when it has one, so the bytes are not copied as a buffer
// grows, else up to one byte past the limit.
func readManifestBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n >= 0 {
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, errManifestInvalid("reading the body: " + err.Error())
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, errManifestInvalid("reading the body: " + err.Error())
	}
	if len(body) > oci.MaxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", store.ErrManifestTooLarge, oci.MaxManifestSize)
	}
	return body, nil
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
