package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/oci"
)

func uploadLocation(repo, id string) string { return "/v2/" + repo + "/blobs/uploads/" + id }

func blobLocation(repo string, d digest.Digest) string { return "/v2/" + repo + "/blobs/" + d.String() }

// startUpload is POST /v2/<name>/blobs/uploads/: a cross-repository mount
// (?mount=), a monolithic upload (?digest=), or a new session.
func (a *API) startUpload(w http.ResponseWriter, r *http.Request, req request) error {
	q := r.URL.Query()
	if q.Has("mount") {
		mounted, err := a.mount(r, req, q.Get("mount"), q.Get("from"))
		if err != nil {
			return err
		}
		if mounted != "" {
			return blobCreated(w, req.repo, mounted)
		}
		// Not mountable: the spec says to start an ordinary upload.
	}
	if q.Has("digest") {
		d, err := oci.ParseDigest(q.Get("digest"))
		if err != nil {
			return err
		}
		release, err := a.holdUpload(w)
		if err != nil {
			return err
		}
		defer release()
		if _, err := a.reg.PutBlob(r.Context(), req.repo, d, sized(r, r.Body)); err != nil {
			return err
		}
		return blobCreated(w, req.repo, d)
	}
	client := ClientAddress(r)
	if ref := a.uploads.admit(r.Context(), a.reg, client); ref != nil {
		writeRefusal(w, ref)
		return nil
	}
	id, err := a.reg.NewUpload(r.Context(), req.repo)
	if err != nil {
		return err
	}
	a.uploads.started(req.repo, id, client)
	return uploadAccepted(w, http.StatusAccepted, req.repo, id, 0)
}

// mount tries to make blob dgst available in repo from another repository
// (from, or any repository that has it when from is empty). It returns the
// mounted digest, or "" when the blob cannot be mounted: not known, from
// is not a repository pier can have (a name it reserves, say), or the
// client may not read it (a mount would hand it the content). The spec
// asks a registry that cannot mount to start an ordinary upload rather
// than fail the push. A malformed digest is an error: no client sends one.
func (a *API) mount(r *http.Request, req request, dgst, from string) (digest.Digest, error) {
	d, err := oci.ParseDigest(dgst)
	if err != nil {
		return "", err
	}
	if from == "" {
		if from, err = a.reg.FindBlob(r.Context(), d); errors.Is(err, store.ErrBlobUnknown) {
			return "", nil
		} else if err != nil {
			return "", err
		}
	} else if oci.ValidateName(from) != nil {
		return "", nil
	}
	if !req.who.Can(from, Read) {
		return "", nil
	}
	err = a.reg.MountBlob(r.Context(), req.repo, from, d)
	if errors.Is(err, store.ErrBlobUnknown) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return d, nil
}

// patchUpload appends a chunk: ordered by Content-Range when given
// (a chunk that does not start at the current end is 416), else streamed.
func (a *API) patchUpload(w http.ResponseWriter, r *http.Request, req request) (err error) {
	end := a.uploads.use(req.repo, req.ref)
	defer func() { end(sessionGone(err)) }()
	c, err := chunkOf(r)
	if err != nil {
		return a.withUploadState(w, r, req, err)
	}
	release, err := a.holdUpload(w)
	if err != nil {
		return err
	}
	defer release()
	size, err := a.reg.WriteUpload(r.Context(), req.repo, req.ref, c.start, c.body)
	if err != nil {
		return a.uploadFailed(w, r, req, err)
	}
	if err := c.checkEnd(size); err != nil {
		return err
	}
	return uploadAccepted(w, http.StatusAccepted, req.repo, req.ref, size)
}

// putUpload completes an upload with ?digest=, after appending the
// optional last chunk in the body.
func (a *API) putUpload(w http.ResponseWriter, r *http.Request, req request) (err error) {
	done := false
	end := a.uploads.use(req.repo, req.ref)
	defer func() { end(done || sessionGone(err)) }()
	q := r.URL.Query()
	if !q.Has("digest") {
		return errDigestInvalid("the digest query parameter is required to complete an upload")
	}
	d, err := oci.ParseDigest(q.Get("digest"))
	if err != nil {
		return err
	}
	c, err := chunkOf(r)
	if err != nil {
		return a.withUploadState(w, r, req, err)
	}
	release, err := a.holdUpload(w)
	if err != nil {
		return err
	}
	defer release()
	if c.start >= 0 {
		size, err := a.reg.WriteUpload(r.Context(), req.repo, req.ref, c.start, c.body)
		if err != nil {
			return a.uploadFailed(w, r, req, err)
		}
		if err := c.checkEnd(size); err != nil {
			return err
		}
		c.body = nil
	} else if c.body != nil {
		c.body = sized(r, c.body)
	}
	_, err = a.reg.CommitUpload(r.Context(), req.repo, req.ref, c.body, d)
	// A failed commit deletes the upload too (a digest mismatch, say).
	done = err == nil || sessionGone(err) || errors.Is(err, store.ErrDigestMismatch)
	if err != nil {
		return err
	}
	return blobCreated(w, req.repo, d)
}

func (a *API) uploadStatus(w http.ResponseWriter, r *http.Request, req request) (err error) {
	end := a.uploads.use(req.repo, req.ref)
	defer func() { end(sessionGone(err)) }()
	size, err := a.reg.UploadSize(r.Context(), req.repo, req.ref)
	if err != nil {
		return err
	}
	return uploadAccepted(w, http.StatusNoContent, req.repo, req.ref, size)
}

func (a *API) cancelUpload(w http.ResponseWriter, r *http.Request, req request) error {
	end := a.uploads.use(req.repo, req.ref)
	defer end(true)
	if err := a.reg.CancelUpload(r.Context(), req.repo, req.ref); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// uploadFailed adds, to a 416, where the upload really is so the client can
// resume from there; and to a chunk the disk had no room for, where the
// upload still is (the chunk was taken back).
func (a *API) uploadFailed(w http.ResponseWriter, r *http.Request, req request, err error) error {
	var off *store.OffsetError
	if errors.As(err, &off) {
		setUploadState(w, req.repo, req.ref, off.Size)
	} else if errors.Is(err, store.ErrNoSpace) {
		return a.withUploadState(w, r, req, err)
	}
	return err
}

// setUploadState says where an upload is: its URL, the bytes it holds and
// its id.
func setUploadState(w http.ResponseWriter, repo, id string, size int64) {
	h := w.Header()
	h.Set("Location", uploadLocation(repo, id))
	h.Set("Range", rangeHeader(size))
	h.Set("Docker-Upload-UUID", id)
}

// withUploadState adds, to the error for a chunk pier could not take,
// where the upload is (as for a 416), so the client can resume.
func (a *API) withUploadState(w http.ResponseWriter, r *http.Request, req request, err error) error {
	if size, serr := a.reg.UploadSize(r.Context(), req.repo, req.ref); serr == nil {
		setUploadState(w, req.repo, req.ref, size)
	}
	return err
}

var contentRangeRE = regexp.MustCompile(`^(?:bytes[= ])?([0-9]{1,19})-([0-9]{1,19})$`)

// chunk is the part of an upload a PATCH or PUT carries.
type chunk struct {
	start, end int64 // from Content-Range; start is -1 without one (append at the end)
	body       io.Reader
}

// chunkOf parses the request's Content-Range and bounds its body by it.
func chunkOf(r *http.Request) (chunk, error) {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return chunk{start: -1, end: -1, body: r.Body}, nil
	}
	m := contentRangeRE.FindStringSubmatch(cr)
	if m == nil {
		return chunk{}, errRangeInvalid(fmt.Sprintf("Content-Range %q is not <start>-<end>", cr))
	}
	start, err1 := strconv.ParseInt(m[1], 10, 64)
	end, err2 := strconv.ParseInt(m[2], 10, 64)
	if err1 != nil || err2 != nil || end < start {
		return chunk{}, errRangeInvalid(fmt.Sprintf("Content-Range %q is not a valid range", cr))
	}
	length := end - start + 1
	if r.ContentLength >= 0 && r.ContentLength != length {
		return chunk{}, errSizeInvalid(fmt.Sprintf("Content-Range %q is %d bytes but Content-Length is %d", cr, length, r.ContentLength))
	}
	return chunk{start: start, end: end, body: io.LimitReader(r.Body, length)}, nil
}

// checkEnd reports a body shorter than its Content-Range said.
func (c chunk) checkEnd(size int64) error {
	if c.start >= 0 && size != c.end+1 {
		return errBlobUploadInvalid(fmt.Sprintf("the chunk ended at byte %d, Content-Range said %d", size-1, c.end))
	}
	return nil
}

// rangeHeader is the spec's Range for an upload of size bytes: 0-<last
// byte>, with "0-0" for an empty upload as every registry sends it.
func rangeHeader(size int64) string {
	last := size - 1
	if last < 0 {
		last = 0
	}
	return "0-" + strconv.FormatInt(last, 10)
}

func uploadAccepted(w http.ResponseWriter, status int, repo, id string, size int64) error {
	setUploadState(w, repo, id, size)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
	return nil
}

func blobCreated(w http.ResponseWriter, repo string, d digest.Digest) error {
	h := w.Header()
	h.Set("Location", blobLocation(repo, d))
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// sessionGone reports an error saying the upload session no longer exists
// (collected, cancelled): it no longer counts against the limits.
func sessionGone(err error) bool {
	return errors.Is(err, store.ErrUploadUnknown) || errors.Is(err, store.ErrQuota) // a refused upload is removed
}

// sized tells the store the length of body, the whole of r's, when the
// request gave it.
func sized(r *http.Request, body io.Reader) io.Reader {
	if r.ContentLength < 0 {
		return body
	}
	return store.Sized{Reader: body, Size: r.ContentLength}
}
