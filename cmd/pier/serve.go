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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/httpapi"
	"github.com/pier-oci/pier/store/disk"
	"github.com/pier-oci/pier/store/gc"
	"github.com/pier-oci/pier/sysd"
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
	level := new(slog.LevelVar)
	log, closeLog, err := newLogger(cfg.Log, level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return 1
	}
	defer closeLog()
	for _, w := range warnings {
		log.Warn("config: "+w.Message, "key", w.Key)
	}
	if disk.SyncDisabled() {
		log.Error("TEST BUILD (pier_nosync): writes are never fsynced; acknowledged data is lost on power loss")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP is caught from the start: its default action would kill a
	// pier that a reload reaches while it is still opening its stores.
	// One that arrives then is acted on once serving.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	srv := &server{path: path, cfg: cfg, log: log, level: level, notify: sysd.NewNotifier(log), hup: hup}
	if err := srv.run(ctx); err != nil {
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

// server is a serving pier: its config (replaced on reload), store, HTTP
// servers and background jobs.
type server struct {
	path   string // config file; "" for the embedded default
	cfg    *configs.Config
	roots  []root
	log    *slog.Logger
	level  *slog.LevelVar
	notify *sysd.Notifier
	api    *httpapi.API
	status *status
	jobs   *jobs
	probe  func(context.Context) error // the watchdog's self-check
	hup    <-chan os.Signal            // SIGHUP, caught since start
}

// run serves until ctx ends, then drains in-flight requests for at most
// shutdownGrace.
func (s *server) run(ctx context.Context) error {
	started := s.watchStart(ctx)
	defer started()
	rs, ctl, closeStores, err := openStores(s.cfg, s.log, false)
	if err != nil {
		return err
	}
	defer closeStores()
	s.roots = rs
	lns, err := s.listeners()
	if err != nil {
		return err
	}
	st := rs[0].st
	s.api = httpapi.New(ctl, s.log)
	s.api.SetLimits(httpapi.Limits{BodyIdleTimeout: s.cfg.HTTP.BodyIdleTimeout, MaxUploads: s.cfg.HTTP.MaxConcurrentUploads})
	s.status = &status{ctl: ctl, root: st.Root()}
	s.jobs = startJobs(rs, s.log)
	defer s.jobs.stop()
	s.applyJobs()
	s.probe = selfCheck(st.Root(), lns[0], s.cfg.HTTP.TLS, s.api)

	servers := make([]*http.Server, len(lns))
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		servers[i] = &http.Server{
			Handler:           s.api,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
		go func() { errc <- servers[i].Serve(ln) }()
		s.log.Info("pier serving", "version", version, "addr", ln.Addr().String(), "tls", s.cfg.HTTP.TLS != nil)
	}
	for _, r := range rs {
		s.log.Info("storage root", "root", rootName(r.key), "dir", r.st.Root(), "read_only", r.st.ReadOnly(),
			"commit", r.cfg.Commit, "dedupe", r.cfg.Dedupe, "gc", r.cfg.GC)
	}
	s.status.countRepos(ctx)
	started()
	s.notify.Ready(s.status.line())

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	go s.notify.Watchdog(bg, func(ctx context.Context) error {
		err := s.probe(ctx)
		if err == nil {
			s.notify.Status(s.status.line())
		}
		return err
	})
	reloads := s.watchConfig(bg)

	for {
		select {
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		case <-reloads:
			s.reload()
			continue
		case <-ctx.Done():
		}
		break
	}
	s.notify.Stopping()
	s.log.Info("shutting down: draining in-flight requests", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			s.log.Warn("in-flight requests cut off at the end of the grace period", "err", err)
			hs.Close()
		}
	}
	for range servers {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	// Handlers cut off above may still be running (Close does not wait for
	// them); the stores close only after they return, briefly waited for.
	for deadline := time.Now().Add(handlerExitWait); s.api.InFlight() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	s.log.Info("pier stopped")
	return nil
}

// handlerExitWait bounds the wait for handlers cut off at the end of the
// grace period to return before the stores close.
const handlerExitWait = 5 * time.Second

// slowStart is how long start-up may take before pier asks systemd for
// more time; opening the stores and the listeners normally takes
// milliseconds, but a cache or a lock on a sick SD card can hang.
const slowStart = 5 * time.Second

// maxStartExtension bounds the extra start-up time pier asks for: a start
// that hangs longer is left to systemd's TimeoutStartSec, whose restart
// may find the disk well again.
const maxStartExtension = 5 * time.Minute

// watchStart runs while pier starts, until the returned function says it
// is done. Every slowStart it asks systemd for more time, up to
// maxStartExtension. A stop asked for meanwhile ends the process at once:
// nothing has been acknowledged yet, and start-up work blocked in the
// kernel would otherwise keep SIGTERM waiting (and, through the
// extensions, systemd's stop timeout too).
func (s *server) watchStart(ctx context.Context) (done func()) {
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(slowStart)
		defer t.Stop()
		begun := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				s.log.Warn("stopped before start-up finished; exiting")
				os.Exit(0)
			case <-t.C:
				if time.Since(begun) >= maxStartExtension {
					s.log.Error("start-up has hung; no more time asked of systemd", "for", time.Since(begun).Round(time.Second))
					t.Stop()
					continue
				}
				s.log.Warn("start-up is slow; asking systemd for more time")
				s.notify.ExtendTimeout(3 * slowStart)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stop) }) }
}

// applyJobs (re)starts gc and scrub of every root from the current config.
func (s *server) applyJobs() {
	sc, on := scrubConfig(s.cfg)
	sc.Busy = func() bool { return s.api.InFlight() > 0 }
	current := map[string]configs.StoreConfig{}
	for _, r := range roots(s.cfg) {
		current[r.key] = r.cfg
	}
	for _, r := range s.roots { // the roots that are open; a new one needs a restart
		cfg, ok := current[r.key]
		if !ok {
			cfg = r.cfg
		}
		if r.st.ReadOnly() {
			cfg.GC = false // nothing is ever removed from a read-only root
		}
		sched := gcSchedule(cfg)
		sched.Observe = func(running bool, t gc.Totals) {
			s.status.observeGC(running, t)
			s.notify.Status(s.status.line())
		}
		s.jobs.setGC(r.key, sched)
		s.jobs.setScrub(r.key, sc, on)
	}
}

// listeners are the sockets systemd handed over (socket activation), or
// else one bound to http.address:port; wrapped in TLS when configured.
func (s *server) listeners() ([]net.Listener, error) {
	lns, err := sysd.Listeners()
	if err != nil {
		return nil, err
	}
	if len(lns) == 0 {
		addr := net.JoinHostPort(s.cfg.HTTP.Address, s.cfg.HTTP.Port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		lns = []net.Listener{ln}
	} else {
		s.log.Info("socket activation: serving the sockets systemd passed; http.address and http.port are not used", "sockets", len(lns))
	}
	if s.cfg.HTTP.TLS != nil {
		tc, err := tlsConfig(s.cfg.HTTP.TLS)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, err
		}
		for i := range lns {
			lns[i] = tls.NewListener(lns[i], tc)
		}
	}
	return lns, nil
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
func newLogger(c configs.LogConfig, level *slog.LevelVar, stderr io.Writer) (*slog.Logger, func(), error) {
	level.Set(c.SlogLevel())
	out, closeOut := stderr, func() {}
	if c.Output != "" {
		f, err := os.OpenFile(c.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("log.output: %w", err)
		}
		out, closeOut = f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})), closeOut, nil
}

// insecureTLS is for pier calling itself: it checks liveness, not identity.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// refusalError joins refusals into one error.
func refusalError(refusals []configs.Warning) error {
	msgs := make([]string, len(refusals))
	for i, r := range refusals {
		msgs[i] = r.String()
	}
	return errors.New(strings.Join(msgs, "; "))
}
