package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/pier-oci/pier/configs"
)

// selfCheck is what the watchdog asks before each ping: the storage root
// answers a stat, and the HTTP server answers GET /v2/ through its own
// listener (so a wedged accept loop is caught, not just a wedged handler).
// With client certificates required (mutual TLS) pier has none to present,
// so the handler is asked in process instead.
func selfCheck(root string, ln net.Listener, tlsCfg *configs.TLSConfig, handler http.Handler) func(context.Context) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	url := ""
	if tlsCfg == nil || tlsCfg.CACert == "" {
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
			client.Transport.(*http.Transport).TLSClientConfig = insecureTLS()
		}
		url = scheme + "://" + dialable(ln.Addr()) + "/v2/"
	}
	return func(ctx context.Context) error {
		if _, err := os.Stat(root); err != nil {
			return fmt.Errorf("storage root: %w", err)
		}
		if url == "" {
			rec := httptest.NewRecorder()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/v2/", nil)
			handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				return fmt.Errorf("self-check: /v2/ answered %d", rec.Code)
			}
			return nil
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("self-check: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New("self-check: /v2/ answered " + resp.Status)
		}
		return nil
	}
}

// dialable turns a listening address into one to connect to: a wildcard
// address (0.0.0.0, ::) is reached through loopback.
func dialable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if strings.Contains(host, ":") {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}
