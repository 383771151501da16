package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/httpapi"
)

// sign makes a compact JWS of claims with alg and key, as a token server
// would.
func sign(t testing.TB, alg string, key crypto.Signer, claims any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": alg, "typ": "JWT"}) + "." + enc(claims)
	var sig []byte
	var err error
	switch k := key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(signed))
	case *rsa.PrivateKey:
		sum := sha256.Sum256([]byte(signed))
		if strings.HasPrefix(alg, "PS") {
			sig, err = rsa.SignPSS(rand.Reader, k, crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
		}
	case *ecdsa.PrivateKey:
		sum := sha256.Sum256([]byte(signed))
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, sum[:])
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func tokenClaims(now time.Time, access ...tokenAccess) map[string]any {
	return map[string]any{"iss": "test", "sub": "robot", "aud": "pier", "exp": now.Add(5 * time.Minute).Unix(),
		"nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(), "access": access}
}

func TestVerifyToken(t *testing.T) {
	now := time.Now()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	keys := []crypto.PublicKey{rsaKey.Public(), ecKey.Public(), edKey.Public()}
	pull := tokenAccess{Type: "repository", Name: "app", Actions: []string{"pull"}}

	for _, alg := range []struct {
		name string
		key  crypto.Signer
	}{{"RS256", rsaKey}, {"PS256", rsaKey}, {"ES256", ecKey}, {"EdDSA", edKey}} {
		c, err := verifyToken(sign(t, alg.name, alg.key, tokenClaims(now, pull)), keys, "pier", now)
		if err != nil {
			t.Errorf("%s: %v", alg.name, err)
			continue
		}
		if !c.allows("repository", "app", "pull", now) || c.allows("repository", "app", "push", now) || c.allows("repository", "other", "pull", now) {
			t.Errorf("%s: access %+v does not match the token's scope", alg.name, c.Access)
		}
	}

	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	expired := tokenClaims(now.Add(-time.Hour), pull)
	wrongAud := tokenClaims(now, pull)
	wrongAud["aud"] = []string{"another-registry"}
	noExp := tokenClaims(now, pull)
	delete(noExp, "exp")
	good := sign(t, "RS256", rsaKey, tokenClaims(now, pull))
	parts := strings.Split(good, ".")
	for name, tok := range map[string]string{
		"signed by another key":   sign(t, "RS256", otherKey, tokenClaims(now, pull)),
		"expired":                 sign(t, "RS256", rsaKey, expired),
		"for another service":     sign(t, "RS256", rsaKey, wrongAud),
		"without expiry":          sign(t, "RS256", rsaKey, noExp),
		"alg none":                base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".",
		"HS256 with the key":      base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256"}`)) + "." + parts[1] + "." + parts[2],
		"ES256 header on RSA sig": base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256"}`)) + "." + parts[1] + "." + parts[2],
		"claims changed":          parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"aud":"pier","exp":9999999999,"access":[{"type":"repository","name":"app","actions":["push"]}]}`)) + "." + parts[2],
		"two parts":               parts[0] + "." + parts[1],
		"huge":                    strings.Repeat("a", maxTokenSize+1),
	} {
		if _, err := verifyToken(tok, keys, "pier", now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestHtpasswdFile(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	good := "# users\n\nci:" + string(hash) + "\n"
	if u, err := parseHtpasswd([]byte(good)); err != nil || len(u) != 1 {
		t.Fatalf("parse %q: %v %v", good, u, err)
	}
	for data, want := range map[string]string{
		"ci:" + string(hash) + "\nold:$apr1$abc$def\n": "line 2: user \"old\" has an MD5 (apr1) hash; pier accepts bcrypt only",
		"ci:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n":       "line 1: user \"ci\" has a SHA-1 hash",
		"ci:$6$salt$hash\n":                            "has a SHA-crypt hash",
		"ci:plaintext\n":                               "has a plain-text (or unknown) hash",
		"ci\n":                                         "line 1: not user:hash",
		"ci:" + string(hash) + "\nci:" + string(hash):  "line 2: user \"ci\" is on line 1 already",
		"ci:$2y$10$short\n":                            "not a valid bcrypt hash",
	} {
		_, err := parseHtpasswd([]byte(data))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse %q: error %v, want %q", data, err, want)
		}
	}
}

// A password set with SetPassword checks out, a changed file is seen
// without a restart, and a broken edit keeps the users that worked.
func TestPasswordsFollowTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := SetPassword(path, "ci", "first"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("new htpasswd file has mode %v, want 0600", fi.Mode().Perm())
	}
	var reported []error
	pw, err := newPasswords(path, func(err error) { reported = append(reported, err) })
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	pw.file.now = func() time.Time { return clock }
	if !pw.check("ci", "first") || pw.check("ci", "wrong") || pw.check("nobody", "first") {
		t.Fatal("check does not follow the file")
	}

	if err := SetPassword(path, "ci", "second"); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "other", "third"); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * checkEvery)
	if pw.check("ci", "first") || !pw.check("ci", "second") || !pw.check("other", "third") {
		t.Error("a changed file is not seen: the old password works or the new ones do not")
	}

	os.WriteFile(path, []byte("ci:$apr1$x$y\n"), 0o600)
	clock = clock.Add(2 * checkEvery)
	if !pw.check("ci", "second") {
		t.Error("a broken file replaced the users that worked")
	}
	if len(reported) != 1 || !strings.Contains(reported[0].Error(), "apr1") {
		t.Errorf("reported %v, want one error naming the apr1 line", reported)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"**", "a/b/c", true},
		{"infra/**", "infra", true},
		{"infra/**", "infra/x/y", true},
		{"infra/**", "infrastructure", false},
		{"team/*", "team/app", true},
		{"team/*", "team/app/x", false},
		{"a/**/b", "a/b", true},
		{"a/**/b", "a/x/y/b", true},
		{"a?c", "abc", true},
		{"repos2/repo", "repos2/repo", true},
		{"repos2/repo", "repos2/repo2", false},
	} {
		if got := globMatch(tc.pattern, tc.name); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// zot's config-policy.json example, as zot decides it.
func TestPolicies(t *testing.T) {
	cfg, _, err := configs.Load("../../configs/testdata/zot/config-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	p := newPolicies(cfg.HTTP.AccessControl)
	for _, tc := range []struct {
		user, repo, action string
		want               bool
	}{
		{"charlie", "app", "update", true},
		{"someone", "app", "create", true},   // defaultPolicy of **
		{"someone", "app", "update", false},  // not in defaultPolicy
		{"", "app", "read", false},           // no anonymousPolicy
		{"charlie", "infra/x", "read", true}, // infra/** governs: its default
		{"charlie", "infra/x", "create", false},
		{"mallory", "infra/x", "create", true},
		{"bob", "infra/x", "delete", true},
		{"admin", "infra/x", "delete", true}, // adminPolicy
		{"admin", "tmp/a", "delete", true},
		{"someone", "tmp/a", "update", true},
		{"charlie", "repos2/repo", "update", false},
	} {
		if got := p.allows(tc.user, tc.repo, tc.action); got != tc.want {
			t.Errorf("%q %s %s = %v, want %v", tc.user, tc.action, tc.repo, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	clock := time.Now()
	b := newBackoff(func() time.Time { return clock })
	for range freeFailures {
		b.failed("10.0.0.1")
	}
	if b.barred("10.0.0.1") != 0 {
		t.Fatal("barred within the free failures")
	}
	var bars []time.Duration
	for range 4 {
		b.failed("10.0.0.1")
		bars = append(bars, b.barred("10.0.0.1"))
	}
	if bars[0] != time.Second || bars[3] != 8*time.Second {
		t.Errorf("bars %v, want 1s doubling", bars)
	}
	if b.barred("10.0.0.2") != 0 {
		t.Error("another client is barred")
	}
	for range 30 {
		b.failed("10.0.0.1")
	}
	if got := b.barred("10.0.0.1"); got != maxBar {
		t.Errorf("bar after many failures = %v, want the cap %v", got, maxBar)
	}
	b.succeeded("10.0.0.1")
	if b.barred("10.0.0.1") != 0 {
		t.Error("still barred after a success")
	}
}

// The Authorizer end to end over requests: anonymous pull, a reader, a
// writer, a guesser.
func TestAuthorizer(t *testing.T) {
	dir := t.TempDir()
	htp := filepath.Join(dir, "htpasswd")
	SetPassword(htp, "ci", "ci-pw")
	SetPassword(htp, "reader", "reader-pw")
	cfg, _, err := configs.Parse([]byte(`{"storage": {"rootDirectory": "/r"}, "http": {"realm": "site", "auth": {"htpasswd": {"path": "` + htp + `"}},
		"accessControl": {"repositories": {"**": {"policies": [{"users": ["ci"], "actions": ["read", "create", "update", "delete"]}],
			"defaultPolicy": ["read"], "anonymousPolicy": ["read"]}, "private/**": {"policies": [{"users": ["ci"], "actions": ["read"]}]}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg.HTTP, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	req := func(user, pw string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "/v2/", nil)
		r.RemoteAddr = "192.0.2.7:4000"
		if user != "" {
			r.SetBasicAuth(user, pw)
		}
		return r
	}
	anon, _ := a.Authenticate(req("", ""))
	ci, _ := a.Authenticate(req("ci", "ci-pw"))
	reader, _ := a.Authenticate(req("reader", "reader-pw"))
	for _, tc := range []struct {
		who  httpapi.Principal
		repo string
		act  httpapi.Action
		want bool
	}{
		{anon, "", httpapi.Use, false}, // /v2/ asks for a login, so that login checks it
		{anon, "app", httpapi.Read, true},
		{anon, "app", httpapi.Create, false},
		{anon, "", httpapi.List, true},
		{anon, "private/x", httpapi.List, false},
		{reader, "app", httpapi.Read, true},
		{reader, "app", httpapi.Create, false},
		{reader, "app", httpapi.Delete, false},
		{reader, "private/x", httpapi.Read, false},
		{ci, "app", httpapi.Update, true},
		{ci, "private/x", httpapi.Create, false},
		{ci, "", httpapi.Use, true},
	} {
		if got := tc.who.Can(tc.repo, tc.act); got != tc.want {
			t.Errorf("%q may %s %q = %v, want %v", tc.who.Name(), tc.act, tc.repo, got, tc.want)
		}
	}
	if got := a.Challenge("app", httpapi.Create); got != `Basic realm="site"` {
		t.Errorf("challenge %q", got)
	}

	// Guessing: wrong passwords are 401 until the back-off bars the
	// address, which then gets 429 even with the right password.
	var last error
	for range freeFailures + 1 {
		_, last = a.Authenticate(req("ci", "guess"))
	}
	if ref, ok := last.(*httpapi.Refusal); !ok || ref.Status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %v, want a 401 refusal", last)
	}
	_, err = a.Authenticate(req("ci", "ci-pw"))
	if ref, ok := err.(*httpapi.Refusal); !ok || ref.Status != http.StatusTooManyRequests || ref.RetryAfter <= 0 {
		t.Errorf("a barred client: %v, want 429 with Retry-After", err)
	}
}

// An unknown user costs a bcrypt check at the file's cost, like a known
// one: the answer's time tells no user names.
func TestUnknownUsersCostTheSame(t *testing.T) {
	low, _ := bcrypt.GenerateFromPassword([]byte("pw"), 5)
	u := users{"ci": low}
	if c, _ := bcrypt.Cost(dummyHash(u)); c != 5 {
		t.Errorf("dummy hash cost %d for a file of cost 5", c)
	}
	high, _ := bcrypt.GenerateFromPassword([]byte("pw"), 11)
	u["admin"] = high
	if c, _ := bcrypt.Cost(dummyHash(u)); c != 11 {
		t.Errorf("dummy hash cost %d for a file of costs 5 and 11", c)
	}
}

// Many "**" against a long name: a backtracking matcher takes n^k steps
// (here 127^8); pier's takes k*n.
func TestGlobMatchIsLinear(t *testing.T) {
	name := strings.Repeat("a/", 127) + "b"
	start := time.Now()
	if globMatch("**/**/**/**/**/**/**/**/c", name) {
		t.Error("matched a name without c")
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("took %v", took)
	}
}
