// Package sysd is pier's side of systemd: readiness, status, reload and
// stop notifications (sd_notify), the watchdog, and listening sockets
// handed over by socket activation. Outside systemd (no NOTIFY_SOCKET, no
// LISTEN_FDS, no WATCHDOG_USEC) every call is a silent no-op, so the same
// binary runs anywhere.
package sysd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify messages to the service manager.
type Notifier struct {
	enabled bool
	log     *slog.Logger
	mu      sync.Mutex
	status  string
}

// NewNotifier reads NOTIFY_SOCKET; without it the notifier does nothing.
func NewNotifier(log *slog.Logger) *Notifier {
	return &Notifier{enabled: os.Getenv("NOTIFY_SOCKET") != "", log: log}
}

func (n *Notifier) send(lines ...string) {
	if !n.enabled {
		return
	}
	if _, err := daemon.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		n.log.Warn("sd_notify failed", "err", err)
	}
}

// Ready says the listener is open and the store usable.
func (n *Notifier) Ready(status string) {
	n.mu.Lock()
	n.status = status
	n.mu.Unlock()
	n.send(daemon.SdNotifyReady, "STATUS="+status)
}

// Status updates the one-line human status, sending it only when it
// changed.
func (n *Notifier) Status(status string) {
	n.mu.Lock()
	changed := status != n.status
	n.status = status
	n.mu.Unlock()
	if changed {
		n.send("STATUS=" + status)
	}
}

// Reloading announces a configuration reload (Type=notify-reload wants
// MONOTONIC_USEC with it); Ready ends it.
func (n *Notifier) Reloading() {
	n.send(daemon.SdNotifyReloading, daemon.SdNotifyMonotonicUsec())
}

// Stopping announces the shutdown.
func (n *Notifier) Stopping() {
	n.send(daemon.SdNotifyStopping, "STATUS=stopping: draining in-flight requests")
}

// ExtendTimeout asks for d more before the start (or stop) times out.
func (n *Notifier) ExtendTimeout(d time.Duration) {
	n.send(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds()))
}

// Watchdog pings the service manager's watchdog at half its interval while
// check passes; a failing check stops the pings, and systemd then restarts
// the wedged process. It returns at once when no watchdog is configured
// (WATCHDOG_USEC unset, or WATCHDOG_PID naming another process).
func (n *Notifier) Watchdog(ctx context.Context, check func(context.Context) error) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("watchdog settings unreadable; no watchdog", "err", err)
		return
	}
	if interval <= 0 || !n.enabled {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	failing := false
	for {
		cctx, cancel := context.WithTimeout(ctx, interval/4)
		err := check(cctx)
		cancel()
		switch {
		case err == nil:
			if failing {
				n.log.Info("watchdog self-check passes again")
				failing = false
			}
			n.send(daemon.SdNotifyWatchdog)
		case ctx.Err() == nil && !failing:
			n.log.Error("watchdog self-check failed; not pinging systemd", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Listeners returns the sockets systemd passed (LISTEN_FDS), or none when
// pier was not socket-activated.
func Listeners() ([]net.Listener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	out := lns[:0]
	for _, ln := range lns {
		if ln != nil { // a passed fd that is not a stream socket
			out = append(out, ln)
		}
	}
	return out, nil
}
