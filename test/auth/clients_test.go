// Package auth drives a pier with authentication and access control
// through the clients people use (podman, skopeo, crane, oras) and raw
// HTTP: logins, anonymous pull, refused pushes and deletes, the catalog,
// mounts, bearer tokens from a token server, a renewed TLS certificate,
// client certificates as users, slow clients and huge manifests.
package auth

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/testimage"
	"github.com/pier-oci/pier/test/internal/tool"
)

var amd64 = testimage.Platform{OS: "linux", Architecture: "amd64"}

// Users of the htpasswd file the tests serve with.
var users = map[string]string{"ci": "ci-secret", "reader": "reader-secret", "pusher": "pusher-secret"}

// htpasswd writes users to dir/htpasswd with `pier htpasswd`, the
// password on standard input, and returns the path.
func htpasswd(t *testing.T, dir string, users map[string]string) string {
	t.Helper()
	path := filepath.Join(dir, "htpasswd")
	for u, pw := range users {
		cmd := exec.Command(pierproc.Binary(t), "htpasswd", path, u)
		cmd.Stdin = strings.NewReader(pw + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pier htpasswd %s: %v\n%s", u, err, out)
		}
	}
	return path
}

// policy is "anonymous pull, authenticated push": anyone reads, ci does
// everything, pusher may create (not move tags or delete), reader reads,
// and secret/ is ci's alone.
func policy(htpasswdPath string) map[string]any {
	return map[string]any{
		"realm": "pier-test",
		"auth":  map[string]any{"htpasswd": map[string]any{"path": htpasswdPath}},
		"accessControl": map[string]any{
			"repositories": map[string]any{
				"**": map[string]any{
					"policies": []any{
						map[string]any{"users": []string{"ci"}, "actions": []string{"read", "create", "update", "delete"}},
						map[string]any{"users": []string{"pusher"}, "actions": []string{"read", "create"}},
					},
					"defaultPolicy":   []string{"read"},
					"anonymousPolicy": []string{"read"},
				},
				"secret/**": map[string]any{
					"policies": []any{map[string]any{"users": []string{"ci"}, "actions": []string{"read", "create", "update", "delete"}}},
				},
			},
		},
	}
}

// site is a pier serving the policy, with an audit log.
type site struct {
	srv   *pierproc.Server
	audit string
}

func startSite(t *testing.T) *site {
	t.Helper()
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	srv := pierproc.Start(t, pierproc.Options{
		HTTP:  policy(htpasswd(t, dir, users)),
		Extra: map[string]any{"log": map[string]any{"level": "warn", "audit": audit}},
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pier stderr:\n%s", srv.Stderr())
		}
	})
	return &site{srv: srv, audit: audit}
}

// do sends a request as user ("" for anonymous).
func (s *site) do(t *testing.T, method, path, user string, body []byte, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.srv.URL(path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, users[user])
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// wantError fails unless resp is status with the spec error code.
func wantError(t *testing.T, what string, resp *http.Response, status int, code string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || !strings.Contains(string(body), `"code":"`+code+`"`) {
		t.Errorf("%s: %s %s, want %d %s", what, resp.Status, body, status, code)
	}
}

// auditEvents counts the audit log's lines by "event user repo".
func (s *site) auditEvents(t *testing.T) map[string]int {
	t.Helper()
	data, err := os.ReadFile(s.audit)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e map[string]string
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if e["remote"] == "" || e["time"] == "" {
			t.Errorf("audit line without time or address: %s", line)
		}
		out[e["event"]+" "+e["user"]+" "+e["repo"]]++
	}
	return out
}

// clientRun runs a tool in its own empty HOME (so logins do not leak
// between clients or from the machine).
func clientRun(t *testing.T) tool.Runner {
	return tool.Runner{Env: tool.Env(t), Dir: t.TempDir()}
}

// TestCraneAndOras: login with a user of the file, push; a reader is
// refused push (403 DENIED) and delete; anonymous pull works and
// anonymous push is asked to log in (401).
func TestCraneAndOras(t *testing.T) {
	s := startSite(t)
	host := s.srv.Addr
	image := testimage.NewImage("auth-crane", 2, amd64)
	layout := t.TempDir()
	if err := testimage.WriteLayout(layout, map[string]testimage.Content{"v1": image}); err != nil {
		t.Fatal(err)
	}

	ci := clientRun(t)
	ci.Run(t, "crane", "auth", "login", host, "-u", "ci", "-p", users["ci"])
	ci.Run(t, "crane", "push", "--insecure", layout, host+"/crane/app:v1")
	if got := strings.TrimSpace(string(ci.Run(t, "crane", "digest", "--insecure", host+"/crane/app:v1"))); got != image.Manifest.Digest() {
		t.Errorf("crane digest %s, want %s", got, image.Manifest.Digest())
	}

	anon := clientRun(t)
	if got := strings.TrimSpace(string(anon.Run(t, "crane", "digest", "--insecure", host+"/crane/app:v1"))); got != image.Manifest.Digest() {
		t.Errorf("anonymous pull: digest %s", got)
	}
	res := anon.Try(t, "crane", "push", "--insecure", layout, host+"/crane/anon:v1")
	if res.Err == nil || !strings.Contains(string(res.Stderr), "UNAUTHORIZED") {
		t.Errorf("anonymous push: %s", res)
	}
	wantError(t, "anonymous upload", s.do(t, "POST", "/v2/crane/anon/blobs/uploads/", "", nil), http.StatusUnauthorized, "UNAUTHORIZED")
	if c := s.do(t, "POST", "/v2/crane/anon/blobs/uploads/", "", nil).Header.Get("WWW-Authenticate"); c != `Basic realm="pier-test"` {
		t.Errorf("anonymous push challenge %q", c)
	}

	reader := clientRun(t)
	reader.Run(t, "crane", "auth", "login", host, "-u", "reader", "-p", users["reader"])
	res = reader.Try(t, "crane", "push", "--insecure", layout, host+"/crane/reader:v1")
	if res.Err == nil || !strings.Contains(string(res.Stderr), "DENIED") {
		t.Errorf("reader push: %s", res)
	}
	res = reader.Try(t, "crane", "delete", "--insecure", host+"/crane/app@"+image.Manifest.Digest())
	if res.Err == nil || !strings.Contains(string(res.Stderr), "DENIED") {
		t.Errorf("reader delete: %s", res)
	}
	wantError(t, "reader deletes a blob", s.do(t, "DELETE", "/v2/crane/app/blobs/"+image.Layers[0].Digest(), "reader", nil), http.StatusForbidden, "DENIED")

	// oras checks the password when it logs in; a wrong one fails there.
	o := clientRun(t)
	if res := o.Try(t, "oras", "login", "--plain-http", "-u", "ci", "-p", "wrong", host); res.Err == nil {
		t.Errorf("oras login with a wrong password succeeded: %s", res)
	}
	o.Run(t, "oras", "login", "--plain-http", "-u", "ci", "-p", users["ci"], host)
	file := filepath.Join(o.Dir, "manual.txt")
	os.WriteFile(file, []byte("read me"), 0o644)
	o.Run(t, "oras", "push", "--plain-http", host+"/oras/docs:v1", "--artifact-type", "application/vnd.example.docs", "manual.txt")
	o.Run(t, "oras", "attach", "--plain-http", host+"/oras/docs:v1", "--artifact-type", "application/vnd.example.sbom", "manual.txt")
	if out := anon.Run(t, "oras", "discover", "--plain-http", "--format", "json", host+"/oras/docs:v1"); !strings.Contains(string(out), "application/vnd.example.sbom") {
		t.Errorf("anonymous oras discover: %s", out)
	}

	// ci deletes; every push, delete and refused write is audited.
	ci.Run(t, "crane", "delete", "--insecure", host+"/crane/app@"+image.Manifest.Digest())
	events := s.auditEvents(t)
	for _, want := range []string{"push ci crane/app", "push ci oras/docs", "delete ci crane/app", "denied anonymous crane/anon", "denied reader crane/reader", "denied reader crane/app"} {
		if events[want] == 0 {
			t.Errorf("no audit line %q in %v", want, events)
		}
	}
}

// TestSkopeoAndPodman: both log in (and check the password there), push,
// pull anonymously; a tag move needs update access.
func TestSkopeoAndPodman(t *testing.T) {
	s := startSite(t)
	host := s.srv.Addr
	v1 := testimage.NewImage("auth-skopeo-1", 1, amd64)
	v2 := testimage.NewImage("auth-skopeo-2", 1, amd64)
	layout := t.TempDir()
	if err := testimage.WriteLayout(layout, map[string]testimage.Content{"v1": v1, "v2": v2}); err != nil {
		t.Fatal(err)
	}

	sk := clientRun(t)
	if res := sk.Try(t, "skopeo", "login", "--tls-verify=false", "-u", "ci", "-p", "wrong", host); res.Err == nil {
		t.Errorf("skopeo login with a wrong password succeeded")
	}
	sk.Run(t, "skopeo", "login", "--tls-verify=false", "-u", "pusher", "-p", users["pusher"], host)
	sk.Run(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+host+"/skopeo/app:v1")
	// pusher may create, not move a tag to other content.
	res := sk.Try(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+layout+":v2", "docker://"+host+"/skopeo/app:v1")
	if res.Err == nil || !strings.Contains(strings.ToLower(string(res.Stderr)), "denied") {
		t.Errorf("pusher moves a tag: %s", res)
	}
	sk.Run(t, "skopeo", "login", "--tls-verify=false", "-u", "ci", "-p", users["ci"], host)
	sk.Run(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+layout+":v2", "docker://"+host+"/skopeo/app:v1")
	anon := clientRun(t)
	anon.Run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+host+"/skopeo/app:v1", "oci:"+filepath.Join(anon.Dir, "copy")+":v1")
	got, err := testimage.Layout{Dir: filepath.Join(anon.Dir, "copy")}.Tag("v1")
	if err != nil || got.Digest != v2.Manifest.Digest() {
		t.Errorf("anonymous pull after the move: %+v %v, want %s", got, err, v2.Manifest.Digest())
	}
	if s.auditEvents(t)["tag-move ci skopeo/app"] != 1 {
		t.Errorf("the tag move is not audited once: %v", s.auditEvents(t))
	}

	// podman as root with vfs storage needs no daemon.
	pd := clientRun(t)
	for _, kv := range pd.Env { // podman insists on a config.json where DOCKER_CONFIG points
		if dir, ok := strings.CutPrefix(kv, "DOCKER_CONFIG="); ok {
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o600)
		}
	}
	podman := func(args ...string) tool.Result {
		base := []string{"--root", filepath.Join(pd.Dir, "root"), "--runroot", filepath.Join(pd.Dir, "run"), "--storage-driver", "vfs",
			"--cgroup-manager", "cgroupfs", "--events-backend", "none"}
		return pd.Try(t, "podman", append(base, args...)...)
	}
	if res := podman("pull", "--tls-verify=false", host+"/skopeo/app:v1"); res.Err != nil {
		t.Fatalf("podman anonymous pull: %s", res)
	}
	if res := podman("login", "--tls-verify=false", "-u", "ci", "-p", "wrong", host); res.Err == nil {
		t.Errorf("podman login with a wrong password succeeded")
	}
	if res := podman("login", "--tls-verify=false", "-u", "reader", "-p", users["reader"], host); res.Err != nil {
		t.Fatalf("podman login: %s", res)
	}
	if res := podman("push", "--tls-verify=false", host+"/skopeo/app:v1", host+"/podman/app:v1"); res.Err == nil {
		t.Errorf("podman push as reader succeeded")
	}
	if res := podman("login", "--tls-verify=false", "-u", "ci", "-p", users["ci"], host); res.Err != nil {
		t.Fatalf("podman login: %s", res)
	}
	if res := podman("push", "--tls-verify=false", host+"/skopeo/app:v1", host+"/podman/app:v1"); res.Err != nil {
		t.Fatalf("podman push: %s", res)
	}
	resp := s.do(t, "GET", "/v2/podman/app/tags/list", "", nil)
	var tags struct{ Tags []string }
	json.NewDecoder(resp.Body).Decode(&tags)
	if !slices.Equal(tags.Tags, []string{"v1"}) {
		t.Errorf("podman/app tags %v", tags.Tags)
	}
}

// TestCatalogAndMounts: the catalog shows each client only what it may
// read, and a mount from a repository it cannot read is an upload.
func TestCatalogAndMounts(t *testing.T) {
	s := startSite(t)
	ci := clientRun(t)
	ci.Run(t, "crane", "auth", "login", s.srv.Addr, "-u", "ci", "-p", users["ci"])
	layout := t.TempDir()
	image := testimage.NewImage("auth-catalog", 1, amd64)
	testimage.WriteLayout(layout, map[string]testimage.Content{"v1": image})
	for _, repo := range []string{"public/app", "secret/app"} {
		ci.Run(t, "crane", "push", "--insecure", layout, s.srv.Addr+"/"+repo+":v1")
	}
	for user, want := range map[string][]string{"ci": {"public/app", "secret/app"}, "reader": {"public/app"}, "": {"public/app"}} {
		resp := s.do(t, "GET", "/v2/_catalog", user, nil)
		var cat struct{ Repositories []string }
		json.NewDecoder(resp.Body).Decode(&cat)
		if !slices.Equal(cat.Repositories, want) {
			t.Errorf("catalog of %q: %v, want %v", user, cat.Repositories, want)
		}
	}
	wantError(t, "reader lists secret tags", s.do(t, "GET", "/v2/secret/app/tags/list", "reader", nil), http.StatusForbidden, "DENIED")
	wantError(t, "anonymous lists secret tags", s.do(t, "GET", "/v2/secret/app/tags/list", "", nil), http.StatusUnauthorized, "UNAUTHORIZED")
	wantError(t, "reader reads secret referrers", s.do(t, "GET", "/v2/secret/app/referrers/"+image.Manifest.Digest(), "reader", nil), http.StatusForbidden, "DENIED")

	layer := image.Layers[0].Digest()
	for from, want := range map[string]int{"secret/app": http.StatusAccepted, "public/app": http.StatusCreated} {
		resp := s.do(t, "POST", "/v2/pusher/app/blobs/uploads/?mount="+layer+"&from="+from, "pusher", nil)
		if resp.StatusCode != want {
			t.Errorf("pusher mounts from %s: %d, want %d", from, resp.StatusCode, want)
		}
	}
	resp := s.do(t, "POST", "/v2/pusher/other/blobs/uploads/?mount="+layer+"&from=secret/app", "pusher", nil)
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(resp.Header.Get("Location"), "/blobs/uploads/") {
		t.Errorf("mount from an unreadable repository: %d %s, want 202 and an upload", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := s.do(t, "HEAD", "/v2/pusher/other/blobs/"+layer, "ci", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the unreadable blob reached pusher/other: %d", resp.StatusCode)
	}
}

// TestHtpasswdChangesWithoutRestart: a user added to the file while pier
// serves can log in a moment later; one removed cannot.
func TestHtpasswdChangesWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	path := htpasswd(t, dir, map[string]string{"ci": users["ci"]})
	srv := pierproc.Start(t, pierproc.Options{HTTP: map[string]any{"auth": map[string]any{"htpasswd": map[string]any{"path": path}}}})
	get := func(user, pw string) int {
		req, _ := http.NewRequest("GET", srv.URL("/v2/"), nil)
		req.SetBasicAuth(user, pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("late", "late-pw") != http.StatusUnauthorized || get("ci", users["ci"]) != http.StatusOK {
		t.Fatal("before the change")
	}
	htpasswd(t, dir, map[string]string{"late": "late-pw"})
	ok := false
	for range 40 {
		if get("late", "late-pw") == http.StatusOK {
			ok = true
			break
		}
		sleep(100)
	}
	if !ok {
		t.Error("a user added to the htpasswd file cannot log in without a restart")
	}
	// A broken edit (a non-bcrypt line) keeps the users that worked and
	// is logged.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(data, []byte("bad:$apr1$x$y\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	sleep(1500)
	if get("late", "late-pw") != http.StatusOK {
		t.Error("a broken htpasswd edit locked a user out")
	}
	for i := 0; i < 20 && !strings.Contains(srv.Stderr(), "apr1"); i++ {
		sleep(50) // the log reaches us through a pipe
	}
	if !strings.Contains(srv.Stderr(), "apr1") {
		t.Errorf("the broken line is not logged:\n%s", srv.Stderr())
	}
}

func sleep(ms int) { time.Sleep(time.Duration(ms) * time.Millisecond) }
