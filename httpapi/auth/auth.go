// Package auth decides who a client is and what it may do, as zot's
// http.auth and http.accessControl describe it: users of an htpasswd file
// (HTTP Basic), bearer tokens from an external token server, the
// CommonName of a verified client certificate, and zot's repository
// policies. It implements httpapi.Authorizer; httpapi asks it once per
// request and checks every access the request needs.
package auth

import (
	"crypto"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/httpapi"
)

// Authorizer implements httpapi.Authorizer.
type Authorizer struct {
	realm        string
	passwords    *passwords                    // nil without htpasswd
	bearer       *configs.BearerConfig         // nil without bearer tokens
	keys         *reloader[[]crypto.PublicKey] // the token signing keys
	policies     *policies                     // nil without accessControl
	certIdentity bool
	failDelay    time.Duration
	backoff      *backoff
	log          *slog.Logger
	now          func() time.Time
}

// New builds the Authorizer of an http section, or returns nil when the
// section asks for no authentication and no access control: every client
// may then do anything (pier without http.auth, as zot). Files it names
// (htpasswd, token certificate) must be readable and valid now; later
// changes to them are picked up without a restart.
func New(h configs.HTTPConfig, log *slog.Logger) (*Authorizer, error) {
	if h.Auth == nil && h.AccessControl == nil {
		return nil, nil
	}
	a := &Authorizer{realm: h.Realm, certIdentity: h.CertIdentity, backoff: newBackoff(time.Now), log: log, now: time.Now}
	if a.realm == "" {
		a.realm = "pier"
	}
	if h.AccessControl != nil {
		a.policies = newPolicies(h.AccessControl)
	}
	if c := h.Auth; c != nil {
		a.failDelay = c.FailDelay
		if c.HTPasswd != "" {
			pw, err := newPasswords(c.HTPasswd, func(err error) {
				log.Error("htpasswd file changed but cannot be used; the users read before stay", "file", c.HTPasswd, "err", err)
			})
			if err != nil {
				return nil, err
			}
			a.passwords = pw
		}
		if b := c.Bearer; b != nil {
			keys, err := newReloader(func() ([]crypto.PublicKey, error) { return loadTokenKeys(b.Cert) }, func(err error) {
				log.Error("token signing certificate changed but cannot be used; the keys read before stay", "file", b.Cert, "err", err)
			}, b.Cert)
			if err != nil {
				return nil, fmt.Errorf("http.auth.bearer.cert: %w", err)
			}
			a.bearer, a.keys = b, keys
		}
	}
	return a, nil
}

// login reports whether clients can log in at all.
func (a *Authorizer) login() bool { return a.passwords != nil || a.bearer != nil }

// Authenticate implements httpapi.Authorizer.
func (a *Authorizer) Authenticate(r *http.Request) (httpapi.Principal, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return user{a, a.certName(r)}, nil
	}
	if len(values) > 1 {
		return nil, unauthorized("send one Authorization header")
	}
	scheme, credentials, _ := strings.Cut(values[0], " ")
	if name, password, ok := r.BasicAuth(); ok && name == "" && password == "" {
		// containers/image answers a Basic challenge with empty
		// credentials when it has none: that is no login.
		return user{a, a.certName(r)}, nil
	}
	switch strings.ToLower(scheme) {
	case "basic":
		if a.passwords == nil {
			return nil, unauthorized("this registry takes no passwords")
		}
		return a.basic(r)
	case "bearer":
		if a.bearer == nil {
			return nil, unauthorized("this registry takes no bearer tokens")
		}
		c, err := verifyToken(strings.TrimSpace(credentials), a.keys.get(), a.bearer.Service, a.now())
		if err != nil {
			a.log.Info("bearer token refused", "remote", r.RemoteAddr, "err", err)
			return nil, unauthorized(err.Error())
		}
		return token{c, a.now}, nil
	}
	return nil, unauthorized(fmt.Sprintf("the %q authorization scheme is not supported", scheme))
}

// basic checks HTTP Basic credentials, under the client's back-off.
func (a *Authorizer) basic(r *http.Request) (httpapi.Principal, error) {
	client := httpapi.ClientAddress(r)
	if wait := a.backoff.barred(client); wait > 0 {
		return nil, &httpapi.Refusal{Status: http.StatusTooManyRequests, Code: "TOOMANYREQUESTS",
			Message: "too many failed logins from " + client + "; wait before trying again", RetryAfter: wait}
	}
	name, password, ok := r.BasicAuth()
	if !ok {
		return nil, unauthorized("malformed Basic credentials")
	}
	if a.passwords.check(name, password) {
		a.backoff.succeeded(client)
		return user{a, name}, nil
	}
	a.backoff.failed(client)
	a.log.Warn("login failed", "user", name, "remote", r.RemoteAddr)
	if a.failDelay > 0 {
		t := time.NewTimer(a.failDelay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	return nil, unauthorized("wrong user name or password")
}

// certName is the CommonName of the client's verified certificate, when
// client certificates identify users.
func (a *Authorizer) certName(r *http.Request) string {
	if !a.certIdentity || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName
}

// Challenge implements httpapi.Authorizer: the bearer challenge with the
// scope a token must grant (as distribution sends it), else the Basic one.
func (a *Authorizer) Challenge(repo string, act httpapi.Action) string {
	switch {
	case a.bearer != nil:
		c := fmt.Sprintf("Bearer realm=%q,service=%q", a.bearer.Realm, a.bearer.Service)
		if s := scope(repo, act); s != "" {
			c += fmt.Sprintf(",scope=%q", s)
		}
		return c
	case a.passwords != nil:
		return fmt.Sprintf("Basic realm=%q", a.realm)
	}
	return ""
}

// scope is the token scope that allows act on repo.
func scope(repo string, act httpapi.Action) string {
	switch {
	case act == httpapi.List:
		return "registry:catalog:*"
	case repo == "":
		return ""
	case act == httpapi.Read:
		return "repository:" + repo + ":pull"
	case act == httpapi.Delete:
		return "repository:" + repo + ":delete"
	}
	return "repository:" + repo + ":pull,push"
}

func unauthorized(msg string) *httpapi.Refusal {
	return &httpapi.Refusal{Status: http.StatusUnauthorized, Code: "UNAUTHORIZED", Message: msg}
}

// user is a client named by a password or a certificate, or anonymous
// (name ""), whose rights come from the access-control policies.
type user struct {
	a    *Authorizer
	name string
}

func (u user) Name() string { return u.name }

func (u user) Can(repo string, act httpapi.Action) bool {
	switch {
	case act == httpapi.Use:
		return u.name != "" || !u.a.login()
	case act == httpapi.List && repo == "":
		return u.name != "" || !u.a.login() || u.a.policies != nil && u.a.policies.anonymousReads()
	case act == httpapi.List:
		act = httpapi.Read
	case act == httpapi.Metrics && u.a.policies != nil:
		return u.a.policies.readsMetrics(u.name)
	}
	if u.a.policies == nil {
		// Logins without policies: every user may do anything, no one
		// else anything (as in zot).
		return u.name != ""
	}
	return u.a.policies.allows(u.name, repo, string(act))
}

// token is a client with a verified bearer token: its rights are the
// token's access claim.
type token struct {
	c   *claims
	now func() time.Time
}

func (t token) Name() string {
	if t.c.Subject == "" {
		return "(token)"
	}
	return t.c.Subject
}

func (t token) Can(repo string, act httpapi.Action) bool {
	now := t.now()
	switch act {
	case httpapi.Use:
		return true
	case httpapi.List:
		return repo == "" || t.c.allows("registry", "catalog", "*", now) || t.c.allows("repository", repo, "pull", now)
	case httpapi.Read:
		return t.c.allows("repository", repo, "pull", now)
	case httpapi.Create, httpapi.Update:
		return t.c.allows("repository", repo, "push", now)
	case httpapi.Delete:
		return t.c.allows("repository", repo, "delete", now)
	}
	return false
}

var _ httpapi.Authorizer = (*Authorizer)(nil)
