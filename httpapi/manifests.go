package httpapi

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

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
	// A body known to be too large is refused unread; one that does not
	// say its size is read no further than the cap.
	limit := a.limits.MaxManifestSize
	if r.ContentLength > limit {
		return fmt.Errorf("%w: %d bytes, the limit is %d", store.ErrManifestTooLarge, r.ContentLength, limit)
	}
	ctx := r.Context()
	if mb, ok := a.reg.(manifestBudgeter); ok {
		weight := r.ContentLength
		if weight < 0 {
			weight = limit // not known until it is read
		}
		held, release, err := mb.ManifestBudget(req.repo).Acquire(ctx, weight)
		if err != nil {
			return fmt.Errorf("waiting to read a manifest: %w", err)
		}
		defer release()
		ctx = held
	}
	body, err := readManifestBody(r, limit)
	if err != nil {
		return err
	}
	tags := r.URL.Query()["tag"]
	moved, err := a.tagMoves(r, req, body, tags)
	if err != nil {
		return err
	}
	res, err := a.reg.PutManifest(ctx, req.repo, req.ref, r.Header.Get("Content-Type"), body, tags)
	if err != nil {
		return err
	}
	a.audit(r, req.who, "push", slog.String("repo", req.repo), slog.String("reference", req.ref), slog.String("digest", res.Digest.String()))
	for _, m := range moved {
		a.audit(r, req.who, "tag-move", slog.String("repo", req.repo), slog.String("tag", m.tag),
			slog.String("from", m.from.String()), slog.String("to", res.Digest.String()))
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
func readManifestBody(r *http.Request, limit int64) ([]byte, error) {
	if n := r.ContentLength; n >= 0 {
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, errManifestInvalid("reading the body: " + err.Error())
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, errManifestInvalid("reading the body: " + err.Error())
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: larger than %d bytes", store.ErrManifestTooLarge, limit)
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
	a.audit(r, req.who, "delete", slog.String("repo", req.repo), slog.String("reference", req.ref))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// tagMove is a tag a push moves from other content.
type tagMove struct {
	tag  string
	from digest.Digest
}

// tagMoves lists the existing tags a push of body under req.ref and tags
// would move to other content, and refuses the push when the client may
// create but not update. It looks only when someone needs to know (an
// access check or the audit log). A tag moved by another push between
// this look and the write is not seen: the window is one request long.
func (a *API) tagMoves(r *http.Request, req request, body []byte, tags []string) ([]tagMove, error) {
	check := !req.who.Can(req.repo, Update)
	if !check && a.auditLog == nil {
		return nil, nil
	}
	if !oci.IsDigest(req.ref) {
		tags = append([]string{req.ref}, tags...)
	}
	var moved []tagMove
	for _, tag := range tags {
		if oci.ValidateTag(tag) != nil {
			continue // the store refuses it
		}
		m, err := a.reg.GetManifest(r.Context(), req.repo, tag)
		if errors.Is(err, store.ErrManifestUnknown) || errors.Is(err, store.ErrNameUnknown) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m.Digest.Algorithm().Available() && m.Digest.Algorithm().FromBytes(body) == m.Digest {
			continue // the same content again: nothing moves
		}
		if check {
			a.audit(r, req.who, "denied", slog.String("repo", req.repo), slog.String("action", string(Update)), slog.String("tag", tag))
			return nil, errDenied(fmt.Sprintf("tag %s exists; moving it needs update access to %s", tag, req.repo))
		}
		moved = append(moved, tagMove{tag, m.Digest})
	}
	return moved, nil
}
