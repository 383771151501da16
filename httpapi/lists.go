package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
)

// page cuts a sorted list per the spec's n and last parameters: exactly n
// entries when that many remain (the spec allows fewer only at the end of
// the list), everything without n. The whole list is in memory already,
// so there is nothing to gain by cutting a page shorter. It returns the
// page and, when more remains, the last entry of the page for the next
// link.
func page(all []string, q url.Values) (items []string, next string, err error) {
	n := len(all)
	if q.Has("n") {
		v, perr := strconv.Atoi(q.Get("n"))
		if perr != nil || v < 0 {
			return nil, "", &apiError{http.StatusBadRequest, "UNSUPPORTED", "invalid pagination parameter", fmt.Sprintf("n=%q is not a number of results", q.Get("n"))}
		}
		n = v
	}
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
		all = all[i:]
	}
	items = all
	if len(items) > n {
		items = items[:n]
	}
	if len(items) < len(all) && len(items) > 0 {
		next = items[len(items)-1]
	}
	return items, next, nil
}

// setLink adds the RFC 5988 Link header pointing at the next page.
func setLink(w http.ResponseWriter, path string, n int, last string) {
	q := url.Values{}
	q.Set("n", strconv.Itoa(n))
	q.Set("last", last)
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
}

func (a *API) tagsList(w http.ResponseWriter, r *http.Request, req request) error {
	all, err := a.reg.Tags(r.Context(), req.repo)
	if err != nil {
		return err
	}
	return writePage(w, r, "/v2/"+req.repo+"/tags/list", all, func(items []string) any {
		return struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}{req.repo, items}
	})
}

func (a *API) catalog(w http.ResponseWriter, r *http.Request, req request) error {
	all, err := a.reg.Repositories(r.Context())
	if err != nil {
		return err
	}
	// The catalog lists only what the client may see.
	all = slices.DeleteFunc(all, func(repo string) bool { return !req.who.Can(repo, List) })
	return writePage(w, r, "/v2/_catalog", all, func(items []string) any {
		return struct {
			Repositories []string `json:"repositories"`
		}{items}
	})
}

// writePage sends the page of all the request asks for, as body(page),
// with a Link to the next page when there is more.
func writePage(w http.ResponseWriter, r *http.Request, path string, all []string, body func([]string) any) error {
	items, next, err := page(all, r.URL.Query())
	if err != nil {
		return err
	}
	if next != "" {
		setLink(w, path, len(items), next)
	}
	return writeJSON(w, "application/json", body(items))
}

// referrers answers the referrers API: always an image index, empty when
// nothing refers to the digest.
func (a *API) referrers(w http.ResponseWriter, r *http.Request, req request) error {
	d, err := oci.ParseDigest(req.ref)
	if err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	descs, err := a.reg.Referrers(r.Context(), req.repo, d, artifactType)
	if err != nil {
		return err
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	idx := ispec.Index{MediaType: ispec.MediaTypeImageIndex, Manifests: descs}
	idx.SchemaVersion = 2
	return writeJSON(w, ispec.MediaTypeImageIndex, idx)
}

func writeJSON(w http.ResponseWriter, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b) // a client gone mid-response is not an error of ours
	return nil
}
