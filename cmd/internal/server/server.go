// Package server is a serving pier: it opens the roots, listens (or takes
// systemd's sockets), serves the Distribution API, runs the background
// jobs of every root, tells systemd how it is doing (readiness, status,
// watchdog), reloads its config on SIGHUP or when the file changes, and
// drains in-flight requests when it stops. cmd/pier gives it the config,
// the log and the signals.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pier-oci/pier/cmd/internal/roots"
	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/httpapi"
	"github.com/pier-oci/pier/httpapi/auth"
	"github.com/pier-oci/pier/metrics"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/jobs"
	"github.com/pier-oci/pier/sysd"
)

// shutdownGrace bounds how long in-flight requests may run after SIGTERM.
const shutdownGrace = 30 * time.Second

// Options are what a serving pier is given by the process that runs it.
type Options struct {
	Path    string // the config file; "" for the embedded default
	Config  *configs.Config
	Log     *slog.Logger
	Level   *slog.LevelVar   // the log's level, set again on reload
	Hup     <-chan os.Signal // SIGHUP, caught since the process started
	Version string           // for the log
}

// ErrStoppedStarting is Run's answer to a stop that came before start-up
// finished: nothing was acknowledged yet, and start-up work blocked in the
// kernel (a lock, a cache on a sick SD card) is left behind; the process
// should exit at once, successfully.
var ErrStoppedStarting = errors.New("stopped before start-up finished")

// Run serves until ctx ends, then drains in-flight requests for at most
// shutdownGrace.
func Run(ctx context.Context, o Options) error {
	s := &server{path: o.Path, cfg: o.Config, log: o.Log, level: o.Level, notify: sysd.NewNotifier(o.Log), hup: o.Hup, version: o.Version}
	return s.run(ctx)
}

// server is a serving pier: its config (replaced on reload), store, HTTP
// servers and background jobs.
type server struct {
	path    string // config file; "" for the embedded default
	cfg     *configs.Config
	roots   []roots.Root
	log     *slog.Logger
	level   *slog.LevelVar
	notify  *sysd.Notifier
	api     *httpapi.API
	status  *status
	jobs    *supervisor
	probe   func(context.Context) error // the watchdog's self-check
	hup     <-chan os.Signal            // SIGHUP, caught since start
	version string
	metrics *metrics.Metrics         // nil unless extensions.metrics is on
	kicks   map[string]chan struct{} // by root: an early collection, free space being low
}

// run serves until ctx ends, then drains in-flight requests for at most
// shutdownGrace.
func (s *server) run(ctx context.Context) error {
	// Start-up runs on its own goroutine: a stop asked for while it hangs
	// in the kernel (a lock or a cache on a sick SD card) is answered at
	// once, and the process exits; nothing was acknowledged yet.
	started := s.watchStart()
	up := make(chan error, 1)
	var res startup
	go func() { up <- s.start(&res) }()
	select {
	case err := <-up:
		started()
		if err != nil {
			res.close()
			return err
		}
	case <-ctx.Done():
		started()
		return ErrStoppedStarting
	}
	defer res.close()
	lns, st := res.listeners, res.roots[0].Store
	s.roots = res.roots
	s.api = httpapi.New(res.ctl, s.log, res.opts...)
	s.status = &status{ctl: res.ctl, st: st}
	s.jobs = startJobs(res.roots, s.log)
	defer s.jobs.stop()
	s.applyJobs()
	s.probe = selfCheck(st, lns[0], s.cfg.HTTP.TLS, s.api)

	servers := make([]*http.Server, len(lns))
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		servers[i] = &http.Server{
			Handler:           s.api,
			ReadHeaderTimeout: s.cfg.HTTP.Limits.ReadHeaderTimeout,
			IdleTimeout:       s.cfg.HTTP.Limits.IdleTimeout,
			MaxHeaderBytes:    64 << 10, // bearer tokens are a few KiB
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
		go func() { errc <- servers[i].Serve(ln) }()
		s.log.Info("pier serving", "version", s.version, "addr", ln.Addr().String(), "tls", s.cfg.HTTP.TLS != nil)
	}
	for _, r := range res.roots {
		s.log.Info("storage root", "root", roots.Name(r.Key), "storage", r.Store.String(), "read_only", r.Store.ReadOnly(),
			"commit", r.Cfg.Commit, "dedupe", r.Cfg.Dedupe, "gc", r.Cfg.GC)
	}
	s.status.countRepos(ctx)
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

// startup is what start-up opened: released by close, in reverse order.
type startup struct {
	opts      []httpapi.Option
	roots     []roots.Root
	ctl       *store.Controller
	listeners []net.Listener
	closers   []func()
}

func (r *startup) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// start opens what serving needs, into r.
func (s *server) start(r *startup) error {
	// Access control first: a missing htpasswd file stops pier before it
	// opens a store or a port.
	opts, closeAudit, err := apiOptions(s.cfg, s.log)
	if err != nil {
		return err
	}
	r.opts, r.closers = opts, append(r.closers, closeAudit)
	rs, ctl, closeStores, err := roots.Open(s.cfg, s.log, false)
	if err != nil {
		return err
	}
	r.roots, r.ctl, r.closers = rs, ctl, append(r.closers, closeStores)
	if m := s.cfg.Extensions.Metrics; m != nil && m.Enable {
		var mr []metrics.Root
		for _, root := range rs {
			mr = append(mr, metrics.Root{Name: roots.Name(root.Key), Store: root.Store})
		}
		s.metrics = metrics.New(mr, func() int { return s.api.UploadsInProgress() })
		r.opts = append(r.opts, httpapi.WithObserver(s.metrics), httpapi.WithMetrics(m.Path, s.metrics))
	}
	lns, err := s.listeners()
	if err != nil {
		return err
	}
	r.listeners = lns
	return nil
}

// watchStart runs while pier starts, until the returned function says it
// is done: every slowStart it asks systemd for more time, up to
// maxStartExtension.
func (s *server) watchStart() (done func()) {
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(slowStart)
		defer t.Stop()
		begun := time.Now()
		for {
			select {
			case <-stop:
				return
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
	sc, on := roots.ScrubConfig(s.cfg)
	sc.Busy = func() bool { return s.api.InFlight() > 0 }
	current := map[string]configs.StoreConfig{}
	for _, r := range roots.List(s.cfg) {
		current[r.Key] = r.Cfg
	}
	for _, r := range s.roots { // the roots that are open; a new one needs a restart
		cfg, ok := current[r.Key]
		if !ok {
			cfg = r.Cfg
		}
		if r.Store.ReadOnly() {
			cfg.GC = false // nothing is ever removed from a read-only root
		}
		sched := roots.GCSchedule(cfg)
		name := roots.Name(r.Key)
		sched.Observe = func(running bool, t jobs.GCTotals) {
			s.status.observeGC(running, t)
			s.notify.Status(s.status.line())
			if !running && s.metrics != nil {
				s.metrics.GCPass(name, t)
			}
		}
		kick := s.kick(r.Key)
		sched.Kick = kick
		roots.Limit(r.Store, r.Key, cfg, func() {
			select {
			case kick <- struct{}{}:
			default: // one is pending already
			}
		})
		rsc := sc
		if s.metrics != nil {
			rsc.Observe = func(res jobs.ScrubResult) { s.metrics.ScrubPass(name, res) }
		}
		s.jobs.setGC(r.Key, sched)
		s.jobs.setScrub(r.Key, rsc, on)
	}
}

// kick is root key's channel for an early collection, the same across
// reloads.
func (s *server) kick(key string) chan struct{} {
	if s.kicks == nil {
		s.kicks = map[string]chan struct{}{}
	}
	if s.kicks[key] == nil {
		s.kicks[key] = make(chan struct{}, 1)
	}
	return s.kicks[key]
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
		tc, err := auth.ServerTLS(s.cfg.HTTP.TLS, s.log)
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
