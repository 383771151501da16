package httpapi

import (
	"regexp"
	"testing"
)

// The Distribution Spec states its routes as these patterns; route reads
// paths with string work instead (it runs on every request), and must
// agree with them on every path.
var specRoutes = []struct {
	re   *regexp.Regexp
	kind routeKind
}{
	{regexp.MustCompile(`^$`), routeBase},
	{regexp.MustCompile(`^_catalog$`), routeCatalog},
	{regexp.MustCompile(`^(.+)/blobs/uploads/?$`), routeUploadNew},
	{regexp.MustCompile(`^(.+)/blobs/uploads/([^/]+)$`), routeUpload},
	{regexp.MustCompile(`^(.+)/blobs/([^/]+)$`), routeBlob},
	{regexp.MustCompile(`^(.+)/manifests/([^/]+)$`), routeManifest},
	{regexp.MustCompile(`^(.+)/tags/list$`), routeTags},
	{regexp.MustCompile(`^(.+)/referrers/([^/]+)$`), routeReferrers},
}

func specRoute(path string) (request, bool) {
	for _, rt := range specRoutes {
		m := rt.re.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		req := request{kind: rt.kind}
		if len(m) > 1 {
			req.repo = m[1]
		}
		if len(m) > 2 {
			req.ref = m[2]
		}
		return req, true
	}
	return request{}, false
}

func TestRouteAgreesWithTheSpecPatterns(t *testing.T) {
	parts := []string{"", "a", "app", "x/y", "blobs", "uploads", "manifests", "tags", "list", "referrers",
		"_catalog", "sha256:abc", ".."}
	var paths []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		paths = append(paths, prefix, prefix+"/")
		if depth == 0 {
			return
		}
		for _, p := range parts {
			if prefix == "" {
				gen(p, depth-1)
			} else {
				gen(prefix+"/"+p, depth-1)
			}
		}
	}
	gen("", 4)
	for _, path := range paths {
		want, ok := specRoute(path)
		got, aerr := route(path)
		switch {
		case !ok:
			if aerr == nil || aerr.Code != "NOT_FOUND" {
				t.Fatalf("route(%q) = %+v, %v; the spec's patterns match nothing", path, got, aerr)
			}
		case aerr != nil && aerr.Code == "NOT_FOUND":
			t.Fatalf("route(%q) is NOT_FOUND; the spec's patterns say %+v", path, want)
		case got.kind != want.kind || got.ref != want.ref || got.repo != want.repo:
			t.Fatalf("route(%q) = %+v (%v), the spec's patterns say %+v", path, got, aerr, want)
		}
	}
	t.Logf("%d paths agree", len(paths))
}
