package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/pier-oci/pier/store/driver"
)

// A store whose dedupe index is its own (BoltDB, a file beside the
// process) must be the only one writing its storage: a second pier on the
// same bucket would place and remove placeholders its index never hears
// of. A local root is guarded by its process lock; a bucket has no locks,
// so the store holds a lease there: an object (.pier/replica-lease) that
// it renews every few seconds with a compare-and-swap, in the name of its
// index (host and file). Another pier that finds the lease renewed lately
// in another name refuses to start; one that finds it stale (its holder
// died), or in its own name (itself, restarted), takes it over. A store that cannot renew its
// lease for a whole lease time (the bucket unreachable) stops writing
// until it has it again, since another may have taken it meanwhile; one
// that finds it taken stops writing for good and says why.
//
// Staleness is judged by the bucket's clock (the lease object's
// LastModified) against this host's: hosts with clocks further apart
// than leaseTime (S3 signatures already fail past 15 minutes) cannot
// tell; run them with NTP.

const (
	leaseFile  = "replica-lease"
	leaseTime  = 30 * time.Second
	leaseRenew = leaseTime / 3
)

// lease is what the lease object holds.
type lease struct {
	Owner string `json:"owner"`
	Host  string `json:"host"`
	PID   int    `json:"pid"`
}

// ErrLeased: another process holds the lease of the storage.
var ErrLeased = errors.New("another pier serves this storage with a dedupe index of its own")

// replicaLease is the store's hold on its lease.
type replicaLease struct {
	drv   driver.Driver
	log   *slog.Logger
	me    lease
	mu    sync.Mutex
	ver   string    // the lease object's version as this store last wrote it
	held  time.Time // when it was last written or renewed; zero: not held
	taken bool      // another took it: never written again
}

// newLease is a lease held in the name of owner: the index the store
// keeps to itself (its host and file), so that the same pier restarted
// after a crash takes its own lease back at once.
func newLease(drv driver.Driver, owner string, log *slog.Logger) *replicaLease {
	host, _ := os.Hostname()
	return &replicaLease{drv: drv, log: log, me: lease{Owner: owner, Host: host, PID: os.Getpid()}}
}

// valid reports whether the lease is held now.
func (l *replicaLease) valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.taken && !l.held.IsZero() && time.Since(l.held) < leaseTime
}

// acquire takes or renews the lease. It is ErrLeased, with who holds it,
// when another process renewed it within leaseTime.
func (l *replicaLease) acquire(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.taken {
		return ErrLeased
	}
	ctx, cancel := context.WithTimeout(ctx, leaseRenew)
	defer cancel()
	data, _ := json.Marshal(l.me)
	key := stateKey(leaseFile)
	version := l.ver
	if version == "" {
		cur, info, err := l.drv.ReadFile(ctx, key, 4096)
		switch {
		case driver.IsNotFound(err):
		case err != nil:
			return err
		default:
			var other lease
			json.Unmarshal(cur, &other)
			if other.Owner != l.me.Owner && time.Since(info.ModTime) < leaseTime {
				return fmt.Errorf("%w: %s (pid %d) renewed its lease %s ago", ErrLeased, other.Host, other.PID, time.Since(info.ModTime).Round(time.Second))
			}
			version = info.Version
		}
	}
	start := time.Now()
	info, err := l.drv.ReplaceFile(ctx, key, data, version)
	if errors.Is(err, driver.ErrConflict) {
		if l.ver != "" {
			l.taken = true
			l.log.Error("another pier took over this storage's lease (this one could not renew it in time): it stops writing; restart it once the other is gone, or give both a shared Redis or DynamoDB dedupe index")
		}
		l.ver = ""
		return fmt.Errorf("%w: it changed while this pier took it", ErrLeased)
	}
	if err != nil {
		return err
	}
	if l.held.IsZero() || time.Since(l.held) >= leaseTime {
		l.log.Info("holding the storage's replica lease", "storage", l.drv.String())
	}
	l.ver, l.held = info.Version, start
	return nil
}

// keep renews the lease until ctx ends.
func (l *replicaLease) keep(ctx context.Context) {
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := l.acquire(ctx)
		if err != nil && !errors.Is(err, ErrLeased) && !l.valid() {
			l.log.Warn("cannot renew the storage's replica lease; writes are refused until it is renewed", "err", err)
		}
		if errors.Is(err, ErrLeased) && l.isTaken() {
			return
		}
	}
}

func (l *replicaLease) isTaken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.taken
}

// release gives the lease up, if it is still this store's.
func (l *replicaLease) release() {
	if !l.valid() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseRenew)
	defer cancel()
	cur, _, err := l.drv.ReadFile(ctx, stateKey(leaseFile), 4096)
	var other lease
	if err == nil && json.Unmarshal(cur, &other) == nil && other.Owner == l.me.Owner {
		l.drv.Delete(ctx, stateKey(leaseFile))
	}
}

// check is the lease's part of writable: nil while it is held, or
// where there is no lease.
func (l *replicaLease) check() error {
	if l == nil || l.valid() {
		return nil
	}
	if l.isTaken() {
		return fmt.Errorf("%w: %w; this pier no longer writes to it", ErrReadOnly, ErrLeased)
	}
	return fmt.Errorf("%w: this pier cannot tell whether another serves the storage (it could not renew its replica lease); retry later", ErrUnavailable)
}
