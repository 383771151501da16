package auth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/pier-oci/pier/configs"
)

// ServerTLS is the TLS configuration of http.tls: TLS 1.2 at least, with
// only forward-secret AEAD suites below 1.3; the certificate and key are
// re-read when they change on disk (a renewed certificate is served from
// the next handshake, a second at most after it lands), and with cacert
// every client must present a certificate signed by that CA (re-read as
// well). A renewal caught half-written (a new certificate beside the old
// key) keeps the pair that worked until the other file follows.
func ServerTLS(c *configs.TLSConfig, log *slog.Logger) (*tls.Config, error) {
	certs, err := newReloader(func() (*tls.Certificate, error) {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		return &cert, err
	}, func(err error) {
		log.Error("TLS certificate or key changed but cannot be used; serving the previous pair", "cert", c.Cert, "key", c.Key, "err", err)
	}, c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("http.tls: %w", err)
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
	if c.CACert == "" {
		base.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return certs.get(), nil }
		return base, nil
	}
	cas, err := newReloader(func() (*x509.CertPool, error) {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", c.CACert)
		}
		return pool, nil
	}, func(err error) {
		log.Error("client CA file changed but cannot be used; the previous CAs stay", "cacert", c.CACert, "err", err)
	}, c.CACert)
	if err != nil {
		return nil, fmt.Errorf("http.tls.cacert: %w", err)
	}
	// The client CAs live in the Config itself, so each handshake gets a
	// Config built from the current files, rebuilt only when one changed.
	var (
		mu      sync.Mutex
		built   *tls.Config
		forCert *tls.Certificate
		forCAs  *x509.CertPool
	)
	base.ClientAuth = tls.RequireAndVerifyClientCert
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := certs.get(), cas.get()
		mu.Lock()
		defer mu.Unlock()
		if built == nil || cert != forCert || pool != forCAs {
			built = base.Clone()
			built.Certificates = []tls.Certificate{*cert}
			built.ClientCAs = pool
			forCert, forCAs = cert, pool
		}
		return built, nil
	}
	return cfg, nil
}
