package httpapi

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/driver/local"
)

// With the store-wide lookup on, a HEAD finds a blob only in the
// repositories its client may read: one held by a repository it may not
// read is 404, as if it were nowhere, and a mount without from does not
// hand it over either.
func TestLookupOnlyWhereTheClientMayRead(t *testing.T) {
	root := t.TempDir()
	drv, err := local.Open(root, local.Options{Lock: true, TempDir: store.StateDir + "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	bc, err := boltdb.Open(filepath.Join(t.TempDir(), "cache.db"), boltdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(store.Options{Driver: drv, Cache: bc, Lookup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	table := rights{
		"ci":     {"* read": true, "* create": true, "* use": true},
		"reader": {"app read": true, "app create": true, "public read": true, "* use": true},
	}
	srv := httptest.NewServer(New(st, nil, WithAuthorizer(table)))
	t.Cleanup(srv.Close)
	f := &fixture{t: t, root: root, srv: srv}
	secret := f.pushBlob("secret", []byte("only ci may read this"))
	shared := f.pushBlob("public", []byte("anyone may read this"))
	as := []string{"X-Test-User", "reader"}

	if resp := f.do("HEAD", "/v2/app/blobs/"+shared.String(), nil, as...); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD of a blob a readable repository holds: %d, want 200", resp.StatusCode)
	}
	if resp := f.do("HEAD", "/v2/app/blobs/"+secret.String(), nil, as...); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of a blob only an unreadable repository holds: %d, want 404", resp.StatusCode)
	}
	if resp := f.do("GET", "/v2/app/blobs/"+secret.String(), nil, as...); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET of a blob only an unreadable repository holds: %d, want 404", resp.StatusCode)
	}
	if resp := f.do("POST", "/v2/app/blobs/uploads/?mount="+secret.String(), nil, as...); resp.StatusCode != http.StatusAccepted {
		t.Errorf("a mount without from of an unreadable blob: %d, want 202 (an upload, not the content)", resp.StatusCode)
	}
	if resp := f.do("HEAD", "/v2/app/blobs/"+secret.String(), nil); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD by ci, who may read it: %d, want 200", resp.StatusCode)
	}
}
