package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	_ "crypto/sha256" // the hashes of RS256, ES384, PS512, ...
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"
)

// Bearer tokens as distribution's token authentication defines them and
// zot reads them: a JWS (compact form) signed by the token server's key,
// whose claims carry "access": [{"type": "repository", "name": NAME,
// "actions": ["pull", "push", "delete"]}] (and {"type": "registry", "name":
// "catalog", "actions": ["*"]} for the catalog). pier checks the signature
// with the key of http.auth.bearer.cert (a certificate or a public key,
// several for a rotation), with the algorithms zot allows (RS*, PS*, ES*,
// EdDSA; never "none" or HMAC), and the claims as distribution does:
// expiry and not-before with a minute of leeway, issued-at not in the
// future, and the audience naming this service.

// leeway absorbs clock skew between the token server and pier.
const leeway = time.Minute

// maxTokenSize bounds what is decoded: real tokens are a few KiB.
const maxTokenSize = 16 << 10

// Errors of token verification; all are an "invalid_token" to the client.
var (
	ErrTokenMalformed = errors.New("malformed token")
	ErrTokenInvalid   = errors.New("invalid token")
)

// tokenAccess is one entry of a token's access claim.
type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
	Expires *float64 `json:"exp,omitempty"` // zot's extension: this entry alone expires
}

// claims are the claims pier reads.
type claims struct {
	Subject   string        `json:"sub"`
	Audience  audience      `json:"aud"`
	Expires   *float64      `json:"exp"`
	NotBefore *float64      `json:"nbf"`
	IssuedAt  *float64      `json:"iat"`
	Access    []tokenAccess `json:"access"`
}

// audience is "aud": a string or a list of them (RFC 7519).
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// verifyToken checks a compact JWS against keys and the claims against
// service and now, and returns its claims.
func verifyToken(raw string, keys []crypto.PublicKey, service string, now time.Time) (*claims, error) {
	if len(raw) > maxTokenSize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrTokenMalformed, maxTokenSize)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not three dot-separated parts", ErrTokenMalformed)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrTokenMalformed, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrTokenMalformed, err)
	}
	signed := []byte(parts[0] + "." + parts[1])
	verified := false
	for _, k := range keys {
		if verifySignature(header.Alg, k, signed, sig) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, fmt.Errorf("%w: no configured key verifies its %q signature", ErrTokenInvalid, header.Alg)
	}
	var c claims
	if err := decodeSegment(parts[1], &c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrTokenMalformed, err)
	}
	if err := c.valid(service, now); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	return &c, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func unix(f float64) time.Time { return time.Unix(0, int64(f*1e9)) }

func (c *claims) valid(service string, now time.Time) error {
	if c.Expires == nil {
		return errors.New("no expiry (exp)")
	}
	if now.After(unix(*c.Expires).Add(leeway)) {
		return fmt.Errorf("expired at %s", unix(*c.Expires).UTC().Format(time.RFC3339))
	}
	if c.NotBefore != nil && now.Before(unix(*c.NotBefore).Add(-leeway)) {
		return fmt.Errorf("not valid before %s", unix(*c.NotBefore).UTC().Format(time.RFC3339))
	}
	if c.IssuedAt != nil && now.Before(unix(*c.IssuedAt).Add(-leeway)) {
		return errors.New("issued in the future")
	}
	if !slices.Contains(c.Audience, service) {
		return fmt.Errorf("audience %q does not name this registry's service %q", []string(c.Audience), service)
	}
	return nil
}

// allows reports whether the token grants action ("pull", "push",
// "delete") on the resource typ/name; "*" grants every action.
func (c *claims) allows(typ, name, action string, now time.Time) bool {
	for _, a := range c.Access {
		if a.Type != typ || a.Name != name {
			continue
		}
		if a.Expires != nil && now.After(unix(*a.Expires).Add(leeway)) {
			continue
		}
		if slices.Contains(a.Actions, action) || slices.Contains(a.Actions, "*") {
			return true
		}
	}
	return false
}

// hashes of the RSA and ECDSA algorithms.
var algHash = map[string]crypto.Hash{
	"RS256": crypto.SHA256, "RS384": crypto.SHA384, "RS512": crypto.SHA512,
	"PS256": crypto.SHA256, "PS384": crypto.SHA384, "PS512": crypto.SHA512,
	"ES256": crypto.SHA256, "ES384": crypto.SHA384, "ES512": crypto.SHA512,
}

// verifySignature checks sig over signed with key, for alg only: the
// algorithm must fit the key (an RSA key never verifies an ES256 token,
// and nothing verifies "none" or HMAC).
func verifySignature(alg string, key crypto.PublicKey, signed, sig []byte) error {
	if alg == "EdDSA" {
		k, ok := key.(ed25519.PublicKey)
		if !ok || !ed25519.Verify(k, signed, sig) {
			return ErrTokenInvalid
		}
		return nil
	}
	h, ok := algHash[alg]
	if !ok {
		return fmt.Errorf("%w: algorithm %q is not accepted", ErrTokenInvalid, alg)
	}
	d := h.New()
	d.Write(signed)
	sum := d.Sum(nil)
	switch k := key.(type) {
	case *rsa.PublicKey:
		switch alg[:2] {
		case "RS":
			return rsa.VerifyPKCS1v15(k, h, sum, sig)
		case "PS":
			return rsa.VerifyPSS(k, h, sum, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		want := map[string]int{"ES256": 256, "ES384": 384, "ES512": 521}[alg]
		if alg[:2] != "ES" || k.Curve.Params().BitSize != want || len(sig) != 2*size {
			return ErrTokenInvalid
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if ecdsa.Verify(k, sum, r, s) {
			return nil
		}
	}
	return ErrTokenInvalid
}

// loadTokenKeys reads the public keys of a PEM file: certificates
// (distribution's rootcertbundle, zot's cert) or bare public keys.
func loadTokenKeys(path string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			keys = append(keys, cert.PublicKey)
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate or public key", path)
	}
	return keys, nil
}
