package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/httpapi"
	"github.com/pier-oci/pier/store/gc"
	"github.com/pier-oci/pier/store/scrub"
)

// shutdownGrace bounds how long in-flight requests may run after SIGTERM.
const shutdownGrace = 30 * time.Second

// serve runs the registry until SIGTERM or SIGINT; it returns the exit code.
func serve(path string, stderr io.Writer) int {
	cfg, warnings, err := loadConfig(path)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return 1
	}
	if refusals := cfg.Refusals(); len(refusals) > 0 {
		for _, r := range refusals {
			fmt.Fprintf(stderr, "pier: %s\n", r)
		}
		return 1
	}
	log, closeLog, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return 1
	}
	defer closeLog()
	for _, w := range warnings {
		log.Warn("config: "+w.Message, "key", w.Key)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runServer(ctx, cfg, log); err != nil {
		log.Error("pier stopped", "err", err)
		return 1
	}
	return 0
}

func loadConfig(path string) (*configs.Config, []configs.Warning, error) {
	if path == "" {
		return configs.Default(), nil, nil
	}
	return configs.Load(path)
}

// runServer serves until ctx ends, then drains in-flight requests for at
// most shutdownGrace.
func runServer(ctx context.Context, cfg *configs.Config, log *slog.Logger) error {
	st, closeStore, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer closeStore()
	addr := net.JoinHostPort(cfg.HTTP.Address, cfg.HTTP.Port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	api := httpapi.New(st, log)
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.HTTP.TLS != nil {
		tc, err := tlsConfig(cfg.HTTP.TLS)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = tc
		ln = tls.NewListener(ln, tc)
	}
	// Background jobs stop with bg, after the server has drained.
	bg, stopJobs := context.WithCancel(context.Background())
	var jobs sync.WaitGroup
	defer func() { stopJobs(); jobs.Wait() }()
	jobs.Go(func() { st.RunDedupe(bg) })
	jobs.Go(func() { gc.Run(bg, st, gcSchedule(cfg.Storage.StoreConfig), log) })
	if sc, ok := scrubConfig(cfg); ok {
		sc.Busy = func() bool { return api.InFlight() > 0 }
		jobs.Go(func() { scrub.Run(bg, st, sc, log) })
	}

	log.Info("pier serving", "version", version, "addr", ln.Addr().String(), "root", st.Root(),
		"commit", cfg.Storage.Commit, "dedupe", cfg.Storage.Dedupe, "gc", cfg.Storage.GC, "tls", cfg.HTTP.TLS != nil)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut off at the end of the grace period", "err", err)
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("pier stopped")
	return nil
}

// tlsConfig loads the server certificate and, with cacert, requires
// client certificates signed by that CA (zot's mutual TLS).
func tlsConfig(c *configs.TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("http.tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, fmt.Errorf("http.tls.cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http.tls.cacert: %s holds no PEM certificate", c.CACert)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// newLogger builds the process logger from the log section: text lines to
// stderr (the journal under systemd) or appended to log.output.
func newLogger(c configs.LogConfig, stderr io.Writer) (*slog.Logger, func(), error) {
	out, closeOut := stderr, func() {}
	if c.Output != "" {
		f, err := os.OpenFile(c.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("log.output: %w", err)
		}
		out, closeOut = f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: c.SlogLevel()})), closeOut, nil
}
