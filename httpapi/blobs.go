package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/pier-oci/pier/store/oci"
)

// getBlob serves GET and HEAD of a blob. http.ServeContent does ranges
// (206, once checkRange has checked and rewritten them), If-None-Match
// against the ETag, HEAD, and sendfile. A whole-blob GET on a root that
// redirects (redirectBlobURL) is a 307 to the storage instead.
func (a *API) getBlob(w http.ResponseWriter, r *http.Request, req request) error {
	d, err := oci.ParseDigest(req.ref)
	if err != nil {
		return err
	}
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" && r.Header.Get("If-None-Match") == "" {
		u, _, err := a.reg.BlobURL(r.Context(), req.repo, d)
		if err != nil {
			return err
		}
		if u != "" {
			// The digest, as on a 200: clients check what they fetch
			// against it. The URL is a capability: never cached.
			w.Header().Set("Docker-Content-Digest", d.String())
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, u, http.StatusTemporaryRedirect)
			return nil
		}
	}
	f, info, err := a.reg.OpenBlob(r.Context(), req.repo, d)
	if err != nil {
		return err
	}
	defer f.Close()
	etag := `"` + d.String() + `"`
	if err := checkRange(w, r, info.Size, info.ModTime, etag); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", etag)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", "max-age=31536000") // content-addressed: never changes
	http.ServeContent(w, r, "", info.ModTime, f)
	return nil
}

func (a *API) deleteBlob(w http.ResponseWriter, r *http.Request, req request) error {
	d, err := oci.ParseDigest(req.ref)
	if err != nil {
		return err
	}
	if err := a.reg.DeleteBlob(r.Context(), req.repo, d); err != nil {
		return err
	}
	a.audit(r, req.who, "delete", slog.String("repo", req.repo), slog.String("blob", d.String()))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
