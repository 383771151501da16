package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// ca is a test certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pier test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate for cn (a server for 127.0.0.1, or a client)
// and returns its PEM certificate and key.
func (c *ca) issue(t *testing.T, cn string, serial int64, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// writeAtomic replaces path as certificate renewal tools do.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// TestCertificateRenewedOnDisk: a certificate replaced on disk is served
// from the next connection, without a restart; TLS below 1.2 is refused.
func TestCertificateRenewedOnDisk(t *testing.T) {
	authority := newCA(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	c1, k1 := authority.issue(t, "pier", 101, true)
	writeAtomic(t, certPath, c1)
	writeAtomic(t, keyPath, k1)
	srv := pierproc.Start(t, pierproc.Options{NoWait: true, HTTP: map[string]any{"tls": map[string]any{"cert": certPath, "key": keyPath}}})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(authority.pem)
	serial := func() int64 {
		var conn *tls.Conn
		var err error
		for range 100 { // until pier listens
			if conn, err = tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: pool}); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("TLS dial: %v\n%s", err, srv.Stderr())
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 101 {
		t.Fatalf("serving certificate %d, want 101", got)
	}
	c2, k2 := authority.issue(t, "pier", 202, true)
	writeAtomic(t, keyPath, k2) // a renewal lands file by file
	writeAtomic(t, certPath, c2)
	time.Sleep(1100 * time.Millisecond) // pier looks at most once a second
	if got := serial(); got != 202 {
		t.Errorf("after the renewal the next connection gets certificate %d, want 202", got)
	}
	if _, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
}

// TestClientCertificateUsers: with cacert, a client without a certificate
// cannot connect, and a certificate's CommonName is a user in the
// policies.
func TestClientCertificateUsers(t *testing.T) {
	authority := newCA(t)
	dir := t.TempDir()
	sc, sk := authority.issue(t, "pier", 1, true)
	for name, data := range map[string][]byte{"server.crt": sc, "server.key": sk, "ca.crt": authority.pem} {
		writeAtomic(t, filepath.Join(dir, name), data)
	}
	srv := pierproc.Start(t, pierproc.Options{NoWait: true, HTTP: map[string]any{
		"tls": map[string]any{"cert": filepath.Join(dir, "server.crt"), "key": filepath.Join(dir, "server.key"), "cacert": filepath.Join(dir, "ca.crt")},
		"accessControl": map[string]any{"repositories": map[string]any{"**": map[string]any{
			"policies":      []any{map[string]any{"users": []string{"builder"}, "actions": []string{"read", "create"}}},
			"defaultPolicy": []string{"read"},
		}}},
	}})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(authority.pem)
	client := func(cn string) *http.Client {
		cfg := &tls.Config{RootCAs: pool}
		if cn != "" {
			c, k := authority.issue(t, cn, time.Now().UnixNano(), false)
			pair, err := tls.X509KeyPair(c, k)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	post := func(c *http.Client) (int, error) {
		var resp *http.Response
		var err error
		for range 100 {
			if resp, err = c.Post("https://"+srv.Addr+"/v2/app/blobs/uploads/", "", nil); err == nil {
				resp.Body.Close()
				return resp.StatusCode, nil
			}
			if c == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		return 0, err
	}
	if code, err := post(client("builder")); err != nil || code != http.StatusAccepted {
		t.Errorf("builder starts an upload: %d %v, want 202\n%s", code, err, srv.Stderr())
	}
	if code, err := post(client("viewer")); err != nil || code != http.StatusForbidden {
		t.Errorf("viewer starts an upload: %d %v, want 403", code, err)
	}
	if resp, err := client("").Get("https://" + srv.Addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate got %s", resp.Status)
	}
}
