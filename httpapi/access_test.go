package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/storetest"
)

// rights is a test Authorizer: the user is the X-Test-User header, and
// may do what the table says, per "repo action"; "*" for any repository.
type rights map[string]map[string]bool

type testPrincipal struct {
	name  string
	table map[string]bool
}

func (p testPrincipal) Name() string { return p.name }
func (p testPrincipal) Can(repo string, a Action) bool {
	if a == List && repo != "" {
		a = Read
	}
	return p.table[repo+" "+string(a)] || p.table["* "+string(a)]
}

// Authenticate: no header is "ci" (so the fixture's helpers push as
// ci), "-" is anonymous.
func (r rights) Authenticate(req *http.Request) (Principal, error) {
	u := req.Header.Get("X-Test-User")
	switch u {
	case "guesser":
		return nil, &Refusal{Status: http.StatusUnauthorized, Code: "UNAUTHORIZED", Message: "wrong password"}
	case "":
		u = "ci"
	case "-":
		u = ""
	}
	return testPrincipal{u, r[u]}, nil
}

func (rights) Challenge(repo string, a Action) string { return `Basic realm="test"` }

func newAuthFixture(t *testing.T, opts ...Option) (*fixture, *bytes.Buffer) {
	t.Helper()
	root := t.TempDir()
	st := storetest.Local(t, root, false, false)
	var audit bytes.Buffer
	opts = append(opts, WithAudit(slog.New(slog.NewJSONHandler(&audit, nil))))
	api := New(st, nil, opts...)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &fixture{t: t, root: root, api: api, srv: srv}, &audit
}

func TestAccessChecks(t *testing.T) {
	table := rights{
		"ci":     {"* read": true, "* create": true, "* update": true, "* delete": true, "* use": true, " list": true},
		"pusher": {"app read": true, "app create": true, "* use": true, " list": true},
		"reader": {"app read": true, "* use": true, " list": true},
		"":       {"app read": true, " list": true},
	}
	f, audit := newAuthFixture(t, WithAuthorizer(table))
	as := func(user string) []string { return []string{"X-Test-User", user} }
	secretLayer := f.pushBlob("secret", []byte("secret layer"))
	v1, _ := f.pushImage("app", "v1")
	f.pushImage("secret", "v1")

	// Anonymous: pull allowed, push asks for credentials, /v2/ too.
	if resp := f.do("GET", "/v2/app/manifests/v1", nil, as("-")...); resp.StatusCode != http.StatusOK {
		t.Errorf("anonymous pull: %d", resp.StatusCode)
	}
	for _, r := range []struct{ method, path string }{{"POST", "/v2/app/blobs/uploads/"}, {"GET", "/v2/"}, {"GET", "/v2/secret/tags/list"}} {
		resp := f.do(r.method, r.path, nil, as("-")...)
		expectError(t, resp, http.StatusUnauthorized, "UNAUTHORIZED")
		if resp.Header.Get("WWW-Authenticate") != `Basic realm="test"` {
			t.Errorf("anonymous %s %s: no challenge", r.method, r.path)
		}
	}
	// Wrong credentials: 401 with the challenge, whatever anonymous may do.
	resp := f.do("GET", "/v2/app/manifests/v1", nil, as("guesser")...)
	expectError(t, resp, http.StatusUnauthorized, "UNAUTHORIZED")
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("wrong credentials: no challenge")
	}

	// A reader: 403 DENIED on push and delete, tags and referrers of what
	// it may not read are denied too.
	expectError(t, f.do("POST", "/v2/app/blobs/uploads/", nil, as("reader")...), http.StatusForbidden, "DENIED")
	expectError(t, f.do("DELETE", "/v2/app/manifests/"+v1.String(), nil, as("reader")...), http.StatusForbidden, "DENIED")
	expectError(t, f.do("GET", "/v2/secret/tags/list", nil, as("reader")...), http.StatusForbidden, "DENIED")
	expectError(t, f.do("GET", "/v2/secret/referrers/"+v1.String(), nil, as("reader")...), http.StatusForbidden, "DENIED")

	// The catalog lists only what the client may read.
	var cat struct{ Repositories []string }
	json.NewDecoder(f.do("GET", "/v2/_catalog", nil, as("reader")...).Body).Decode(&cat)
	if strings.Join(cat.Repositories, ",") != "app" {
		t.Errorf("reader's catalog %v, want only app", cat.Repositories)
	}

	// A mount from a repository the client cannot read is an upload.
	resp = f.do("POST", "/v2/app/blobs/uploads/?mount="+secretLayer.String()+"&from=secret", nil, as("pusher")...)
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("mount from an unreadable repository: %d, want 202 and an upload", resp.StatusCode)
	}
	resp = f.do("POST", "/v2/app/blobs/uploads/?mount="+secretLayer.String(), nil, as("pusher")...)
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("mount without from of a blob only an unreadable repository has: %d, want 202", resp.StatusCode)
	}
	if resp := f.do("HEAD", "/v2/app/blobs/"+secretLayer.String(), nil, as("ci")...); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the secret layer reached app: HEAD %d", resp.StatusCode)
	}

	// Moving a tag needs update; pushing it again unchanged does not.
	_, body := f.pushImage("app", "v1")
	other := bytes.Replace(body, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":2,"annotations":{"x":"y"}`), 1)
	mt := []string{"Content-Type", "application/vnd.oci.image.manifest.v1+json", "X-Test-User", "pusher"}
	if resp := f.do("PUT", "/v2/app/manifests/v1", body, mt...); resp.StatusCode != http.StatusCreated {
		t.Errorf("re-push of the same content by a creator: %d", resp.StatusCode)
	}
	expectError(t, f.do("PUT", "/v2/app/manifests/v1", other, mt...), http.StatusForbidden, "DENIED")
	expectError(t, f.do("PUT", "/v2/app/manifests/"+digest.FromBytes(other).String()+"?tag=v1", other, mt...), http.StatusForbidden, "DENIED")
	if resp := f.do("PUT", "/v2/app/manifests/v2", other, mt...); resp.StatusCode != http.StatusCreated {
		t.Errorf("a new tag by a creator: %d", resp.StatusCode)
	}
	mt[3] = "ci"
	if resp := f.do("PUT", "/v2/app/manifests/v1", other, mt...); resp.StatusCode != http.StatusCreated {
		t.Errorf("a tag move by an updater: %d", resp.StatusCode)
	}

	// The audit log: one line per push, move, delete and refused write.
	if resp := f.do("DELETE", "/v2/app/manifests/v2", nil, as("ci")...); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	events := map[string]int{}
	var move map[string]string
	for _, line := range strings.Split(strings.TrimSpace(audit.String()), "\n") {
		var e map[string]string
		json.Unmarshal([]byte(line), &e)
		events[e["msg"]+" "+e["user"]]++
		if e["msg"] == "tag-move" {
			move = e
		}
	}
	for _, want := range []string{"push ci", "push pusher", "tag-move ci", "delete ci", "denied reader", "denied anonymous", "denied pusher"} {
		if events[want] == 0 {
			t.Errorf("audit log has no %q line:\n%s", want, audit.String())
		}
	}
	if move["tag"] != "v1" || move["from"] != v1.String() || move["to"] != digest.FromBytes(other).String() || move["remote"] == "" {
		t.Errorf("tag-move line %v", move)
	}
}

// The manifest cap holds whatever the client says: a Content-Length over
// it is refused unread, a body without one is read no further.
func TestManifestCap(t *testing.T) {
	f, _ := newAuthFixture(t, WithLimits(Limits{MaxManifestSize: 2048, MaxUploadSessions: 8, UploadIdleTimeout: time.Minute}))
	big := bytes.Repeat([]byte(" "), 4096)
	expectError(t, f.do("PUT", "/v2/app/manifests/v1", big, "Content-Type", "application/vnd.oci.image.manifest.v1+json"),
		http.StatusRequestEntityTooLarge, "MANIFEST_INVALID")
	req, _ := http.NewRequest("PUT", f.srv.URL+"/v2/app/manifests/v1", struct{ *bytes.Reader }{bytes.NewReader(big)})
	req.ContentLength = -1 // chunked
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	expectError(t, resp, http.StatusRequestEntityTooLarge, "MANIFEST_INVALID")
}

func TestUploadSessionCap(t *testing.T) {
	f, _ := newAuthFixture(t, WithLimits(Limits{MaxManifestSize: 4 << 20, MaxUploadSessions: 16, UploadIdleTimeout: time.Hour}))
	var locations []string
	for range 2 { // an eighth of 16 per client address
		resp := f.do("POST", "/v2/app/blobs/uploads/", nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("upload %d: %d", len(locations), resp.StatusCode)
		}
		locations = append(locations, resp.Header.Get("Location"))
	}
	resp := f.do("POST", "/v2/app/blobs/uploads/", nil)
	expectError(t, resp, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Finishing one makes room.
	if resp := f.do("DELETE", locations[0], nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	resp = f.do("POST", "/v2/app/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("after a cancel: %d", resp.StatusCode)
	}
	// So does one the store lost (collected), once a request finds it gone.
	id := resp.Header.Get("Docker-Upload-UUID")
	if err := f.api.reg.CancelUpload(t.Context(), "app", id); err != nil {
		t.Fatal(err)
	}
	expectError(t, f.do("PATCH", resp.Header.Get("Location"), []byte("x")), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	if resp := f.do("POST", "/v2/app/blobs/uploads/", nil); resp.StatusCode != http.StatusAccepted {
		t.Errorf("after a session vanished: %d", resp.StatusCode)
	}
}

// Sessions idle past the timeout are cancelled to make room.
func TestIdleUploadSessionsAreCancelled(t *testing.T) {
	s := newSessions(Limits{MaxUploadSessions: 8, UploadIdleTimeout: time.Minute})
	clock := time.Now()
	s.now = func() time.Time { return clock }
	root := t.TempDir()
	st := storetest.Local(t, root, false, false)
	id, err := st.NewUpload(t.Context(), "app")
	if err != nil {
		t.Fatal(err)
	}
	s.started("app", id, "192.0.2.1")
	if ref := s.admit(t.Context(), st, "192.0.2.1"); ref == nil {
		t.Fatal("a second session of one client admitted past its share (1 of 8)")
	}
	end := s.use("app", id)
	clock = clock.Add(2 * time.Minute)
	if ref := s.admit(t.Context(), st, "192.0.2.1"); ref == nil {
		t.Fatal("a session in use was taken as idle")
	}
	end(false)
	clock = clock.Add(2 * time.Minute)
	if ref := s.admit(t.Context(), st, "192.0.2.1"); ref != nil {
		t.Fatalf("an idle session still holds the client's share: %v", ref)
	}
	if _, err := st.UploadSize(t.Context(), "app", id); err == nil {
		t.Error("the idle session's upload is still there")
	}
}

func TestRatelimit(t *testing.T) {
	clock := time.Now()
	l := newRateLimiter(2, map[string]int{"PUT": 1}, func() time.Time { return clock })
	get := httptest.NewRequest("GET", "/v2/", nil)
	put := httptest.NewRequest("PUT", "/v2/", nil)
	other := httptest.NewRequest("GET", "/v2/", nil)
	other.RemoteAddr = "192.0.2.99:1"
	if l.admit(put) != nil || l.admit(get) != nil {
		t.Fatal("refused within the burst")
	}
	ref := l.admit(get)
	if ref == nil || ref.Status != http.StatusTooManyRequests || ref.RetryAfter <= 0 {
		t.Fatalf("third request in a second: %+v, want 429", ref)
	}
	if l.admit(other) != nil {
		t.Error("another client is limited by this one")
	}
	clock = clock.Add(time.Second)
	if l.admit(get) != nil {
		t.Error("still refused a second later")
	}
	m := newRateLimiter(10, map[string]int{"PUT": 1}, func() time.Time { return clock })
	if m.admit(put) != nil || m.admit(put) == nil || m.admit(get) != nil {
		t.Error("PUT's own limit of 1 a second does not hold, or holds GET too")
	}
}
