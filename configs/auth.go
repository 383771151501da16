package configs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// http.auth as zot reads it (pkg/api/config AuthConfig). pier authenticates
// with an htpasswd file, bearer tokens from an external token server, and
// client certificates; zot's other methods (LDAP, OpenID, API keys) are
// free-form here and refused or warned about by the table in unsupported.go.
type fileAuth struct {
	HTPasswd  *fileHTPasswd `json:"htpasswd"`
	FailDelay *seconds      `json:"failDelay"`
	Bearer    *fileBearer   `json:"bearer"`
	MTLS      *fileMTLS     `json:"mtls"`

	LDAP            json.RawMessage `json:"ldap"`
	OpenID          json.RawMessage `json:"openid"`
	APIKey          json.RawMessage `json:"apikey"`
	SessionKeysFile json.RawMessage `json:"sessionKeysFile"`
	SessionDriver   json.RawMessage `json:"sessionDriver"`
	SecureSession   json.RawMessage `json:"secureSession"`
}

type fileHTPasswd struct {
	Path *string `json:"path"`
}

type fileBearer struct {
	Realm   *string `json:"realm"`
	Service *string `json:"service"`
	Cert    *string `json:"cert"`

	OIDC                  json.RawMessage `json:"oidc"`
	AWSSecretsManager     json.RawMessage `json:"awsSecretsManager"`
	UpstreamTokenEndpoint json.RawMessage `json:"upstreamTokenEndpoint"`
}

type fileMTLS struct {
	IdentityAttributes []string `json:"identityAttributes"`
}

// seconds is zot's failDelay: an integer count of seconds (zot's type is
// int), or, in pier, a Go duration string.
type seconds time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (s *seconds) UnmarshalJSON(b []byte) error {
	if b[0] == '"' {
		var d duration
		if err := d.UnmarshalJSON(b); err != nil {
			return err
		}
		*s = seconds(d)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 || n > 3600 {
		return fmt.Errorf("%s is not a number of seconds from 0 to 3600 (or a Go duration like \"2s\")", b)
	}
	*s = seconds(time.Duration(n) * time.Second)
	return nil
}

// AuthConfig is http.auth: how pier learns who a client is. Nil in
// HTTPConfig when the file configures no authentication.
type AuthConfig struct {
	// HTPasswd is the path of an htpasswd file of bcrypt entries (made
	// absolute). It is re-read when it changes. "" when not configured.
	HTPasswd string

	// FailDelay is how long a failed login waits before its answer
	// (zot's failDelay, in seconds in the file). A client that keeps
	// failing is also refused for a growing time (see httpapi/auth).
	FailDelay time.Duration

	// Bearer, when set, makes clients authenticate with tokens from an
	// external token server (distribution's token authentication). It
	// takes precedence over HTPasswd, as in zot.
	Bearer *BearerConfig
}

// BearerConfig is http.auth.bearer.
type BearerConfig struct {
	// Realm is the URL of the token server, sent in the challenge.
	Realm string
	// Service is the name of this registry to the token server: sent in
	// the challenge, and required in a token's audience.
	Service string
	// Cert is the path of the PEM certificate (or public key) whose key
	// signs the tokens.
	Cert string
}

func (v *validation) auth(a *fileAuth) {
	if a == nil {
		return
	}
	if a.HTPasswd != nil && deref(a.HTPasswd.Path) == "" {
		v.fail("http.auth.htpasswd.path", "required: the htpasswd file of users (create it with `pier htpasswd FILE USER`)")
	}
	// A bearer section for zot's OIDC or AWS keys is refused by name
	// (unsupported.go), not for lacking cert.
	if b := a.Bearer; b != nil && (b.Cert != nil || b.OIDC == nil && b.AWSSecretsManager == nil) {
		for key, val := range map[string]*string{"realm": b.Realm, "service": b.Service, "cert": b.Cert} {
			if deref(val) == "" {
				v.fail("http.auth.bearer."+key, "required with bearer tokens: realm (the token server's URL), service (this registry's name) and cert (the token signing certificate)")
			}
		}
	}
	if m := a.MTLS; m != nil {
		for _, attr := range m.IdentityAttributes {
			if !strings.EqualFold(attr, "CommonName") {
				v.fail("http.auth.mtls.identityAttributes", "%q is not supported: pier takes a client's identity from its certificate's CommonName", attr)
			}
		}
	}
}

func resolveAuth(a *fileAuth) *AuthConfig {
	if a == nil {
		return nil
	}
	cfg := &AuthConfig{FailDelay: time.Duration(value(a.FailDelay, 0))}
	if a.HTPasswd != nil && deref(a.HTPasswd.Path) != "" {
		cfg.HTPasswd = absClean(*a.HTPasswd.Path)
	}
	if b := a.Bearer; b != nil && deref(b.Cert) != "" {
		cfg.Bearer = &BearerConfig{Realm: deref(b.Realm), Service: deref(b.Service), Cert: absClean(*b.Cert)}
	}
	if cfg.HTPasswd == "" && cfg.Bearer == nil {
		// failDelay or mtls alone: nothing to log in with.
		return nil
	}
	return cfg
}
