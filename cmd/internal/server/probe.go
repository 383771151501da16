package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/httpapi"
	"github.com/pier-oci/pier/store"
)

// selfCheck is what the watchdog asks before each ping: the storage root
// answers a stat, and the HTTP server answers GET /v2/ through its own
// listener (so a wedged accept loop is caught, not just a wedged handler).
// With client certificates required (mutual TLS) pier has none to present,
// so the handler is asked in process instead.
func selfCheck(st *store.Store, ln net.Listener, tlsCfg *configs.TLSConfig, handler http.Handler) func(context.Context) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var urls []string // where to reach the listener, the one that answered last first
	if tlsCfg == nil || tlsCfg.CACert == "" {
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
			client.Transport.(*http.Transport).TLSClientConfig = insecureTLS()
		}
		urls = dialable(ln.Addr())
		for i, host := range urls {
			urls[i] = scheme + "://" + host + "/v2/"
		}
	}
	return func(ctx context.Context) error {
		if err := st.Ping(ctx); err != nil {
			return fmt.Errorf("storage root: %w", err)
		}
		if urls == nil {
			rec := httptest.NewRecorder()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/v2/", nil)
			req.Header.Set("User-Agent", httpapi.SelfCheckAgent)
			handler.ServeHTTP(rec, req)
			if !answered(rec.Code) {
				return fmt.Errorf("self-check: /v2/ answered %d", rec.Code)
			}
			return nil
		}
		var errs []error
		for i, url := range urls {
			err := get(ctx, client, url)
			if err == nil {
				urls[0], urls[i] = urls[i], urls[0]
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
}

func get(ctx context.Context, client *http.Client, url string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("User-Agent", httpapi.SelfCheckAgent)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("self-check: %w", err)
	}
	resp.Body.Close()
	if !answered(resp.StatusCode) {
		return errors.New("self-check: /v2/ answered " + resp.Status)
	}
	return nil
}

// dialable turns a listening address into the addresses to connect to. A
// wildcard is reached through loopback: IPv4 first, since a dual-stack
// socket (Go's for 0.0.0.0, systemd's for ListenStream=PORT) answers it
// even on a Pi with IPv6 turned off, then ::1 for an IPv6-only socket.
func dialable(a net.Addr) []string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return []string{a.String()}
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return []string{net.JoinHostPort(host, port)}
	case ip.IsUnspecified() && ip.To4() == nil:
		return []string{net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port)}
	case ip.IsUnspecified():
		return []string{net.JoinHostPort("127.0.0.1", port)}
	}
	return []string{net.JoinHostPort(host, port)}
}

// answered reports whether /v2/ answered as a live registry does: 200, or
// 401 when it wants a login (http.auth), or 429 when the rate limit of the
// loopback address is spent (http.ratelimit): a busy pier is not a wedged
// one, and must not be restarted for it.
func answered(status int) bool {
	return status == http.StatusOK || status == http.StatusUnauthorized || status == http.StatusTooManyRequests
}
