package auth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/testimage"
)

// tokenServer is a small token server as distribution's token
// authentication describes it: GET ?service=&scope=... with Basic
// credentials answers {"token": JWT} granting, of the scopes asked, those
// its rules allow the user. Tokens are RS256 with a test key whose
// certificate pier is given.
type tokenServer struct {
	*httptest.Server
	key      *rsa.PrivateKey
	certPath string
	// rules: user -> repository -> actions granted.
	rules map[string]map[string][]string
}

func startTokenServer(t *testing.T, rules map[string]map[string][]string) *tokenServer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test token signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenServer{key: key, rules: rules, certPath: filepath.Join(t.TempDir(), "token.crt")}
	os.WriteFile(ts.certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	user, _, _ := r.BasicAuth()
	var granted []access
	for _, scope := range r.URL.Query()["scope"] {
		for _, s := range strings.Fields(scope) {
			parts := strings.Split(s, ":")
			if len(parts) != 3 || parts[0] != "repository" {
				continue
			}
			var actions []string
			for _, a := range strings.Split(parts[2], ",") {
				for _, allowed := range ts.rules[user][parts[1]] {
					if a == allowed {
						actions = append(actions, a)
					}
				}
			}
			if len(actions) > 0 {
				granted = append(granted, access{"repository", parts[1], actions})
			}
		}
	}
	json.NewEncoder(w).Encode(map[string]string{"token": ts.sign(r.URL.Query().Get("service"), user, granted)})
}

func (ts *tokenServer) sign(service, subject string, granted []access) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now()
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": "test-token-server", "sub": subject, "aud": service, "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(5 * time.Minute).Unix(), "access": granted,
	})
	sum := sha256.Sum256([]byte(signed))
	sig, _ := rsa.SignPKCS1v15(rand.Reader, ts.key, crypto.SHA256, sum[:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestBearerTokens: pier sends clients to the token server with the scope
// they need, takes its tokens for that scope and refuses them outside it.
func TestBearerTokens(t *testing.T) {
	ts := startTokenServer(t, map[string]map[string][]string{"robot": {"granted/app": {"pull", "push"}, "readonly/app": {"pull"}}})
	srv := pierproc.Start(t, pierproc.Options{HTTP: map[string]any{
		"auth": map[string]any{"bearer": map[string]any{"realm": ts.realm(), "service": "pier-test", "cert": ts.certPath}},
	}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pier stderr:\n%s", srv.Stderr())
		}
	})

	// Without a token: 401 and the challenge distribution clients read.
	resp, err := http.Post(srv.URL("/v2/granted/app/blobs/uploads/"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := `Bearer realm="` + ts.realm() + `",service="pier-test",scope="repository:granted/app:pull,push"`
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != want {
		t.Errorf("no token: %s %q, want 401 %q", resp.Status, resp.Header.Get("WWW-Authenticate"), want)
	}

	// crane follows the challenge to the token server.
	run := clientRun(t)
	run.Run(t, "crane", "auth", "login", ts.Listener.Addr().String(), "-u", "robot", "-p", "any")
	run.Run(t, "crane", "auth", "login", srv.Addr, "-u", "robot", "-p", "any")
	layout := t.TempDir()
	image := testimage.NewImage("auth-bearer", 1, amd64)
	testimage.WriteLayout(layout, map[string]testimage.Content{"v1": image})
	run.Run(t, "crane", "push", "--insecure", layout, srv.Addr+"/granted/app:v1")
	if res := run.Try(t, "crane", "push", "--insecure", layout, srv.Addr+"/other/app:v1"); res.Err == nil {
		t.Errorf("push outside the token's scope succeeded")
	}
	if res := run.Try(t, "crane", "push", "--insecure", layout, srv.Addr+"/readonly/app:v1"); res.Err == nil {
		t.Errorf("push with a pull-only token succeeded")
	}

	// Raw: a pull token for granted/app pulls it, and nothing else.
	token := ts.sign("pier-test", "robot", []access{{"repository", "granted/app", []string{"pull"}}})
	get := func(path, tok string) int {
		req, _ := http.NewRequest("GET", srv.URL(path), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", testimage.MediaTypeManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/v2/granted/app/manifests/v1", token); code != http.StatusOK {
		t.Errorf("pull in scope: %d", code)
	}
	if code := get("/v2/other/app/tags/list", token); code != http.StatusForbidden {
		t.Errorf("pull outside scope: %d, want 403", code)
	}
	forOther := ts.sign("another-registry", "robot", []access{{"repository", "granted/app", []string{"pull"}}})
	if code := get("/v2/granted/app/manifests/v1", forOther); code != http.StatusUnauthorized {
		t.Errorf("a token for another service: %d, want 401", code)
	}
	forged := token[:strings.LastIndex(token, ".")] + "." + base64.RawURLEncoding.EncodeToString([]byte("not a signature"))
	if code := get("/v2/granted/app/manifests/v1", forged); code != http.StatusUnauthorized {
		t.Errorf("a forged token: %d, want 401", code)
	}
}

// realm is the token server's URL by name: some clients (crane) refuse
// a realm at a private IP address, to keep tokens from being sent where a
// registry points them.
func (ts *tokenServer) realm() string {
	return "http://localhost:" + ts.URL[strings.LastIndex(ts.URL, ":")+1:] + "/token"
}
