package auth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"reflect"
	"testing"
	"time"
)

// Bearer tokens come from the network: verifyToken must never panic, and
// nothing but the token the key signed may verify, or carry its claims.
func FuzzVerifyToken(f *testing.F) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now()
	good := sign(f, "RS256", key, tokenClaims(now, tokenAccess{Type: "repository", Name: "app", Actions: []string{"pull"}}))
	want, err := verifyToken(good, []crypto.PublicKey{key.Public()}, "pier", now)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{good, "a.b.c", "", "..", "eyJhbGciOiJub25lIn0.e30.", good + "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := verifyToken(tok, []crypto.PublicKey{key.Public()}, "pier", now)
		if err != nil {
			return
		}
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("a token other than the signed one verified with claims %+v", c)
		}
	})
}

// htpasswd files: never a panic; what is accepted is bcrypt users only.
func FuzzParseHtpasswd(f *testing.F) {
	f.Add([]byte("ci:$2y$05$CbBHW3l2Ldw1fCMRGLk8ue1bR0hLP6e6h8f2h3Ku0ZVYjWJFRxk4y\n"))
	f.Add([]byte("# comment\n\nx:$apr1$a$b\n"))
	f.Add([]byte("a:b:c\n:nouser\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := parseHtpasswd(data)
		if err != nil {
			return
		}
		for name, hash := range u {
			if checkUser(name) != nil || hashKind(string(hash)) != "" {
				t.Fatalf("accepted user %q with hash %q", name, hash)
			}
		}
	})
}

// Access-control patterns against repository names: never a panic, and
// "**" matches every name.
func FuzzGlobMatch(f *testing.F) {
	f.Add("infra/**", "infra/a/b")
	f.Add("a/*/[bc]", "a/x/b")
	f.Add("**/**/**", "../..")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		globMatch(pattern, name)
		if !globMatch("**", name) {
			t.Fatalf("** does not match %q", name)
		}
	})
}
