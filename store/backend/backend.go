// Package backend opens one storage root of the configuration as pier
// serves it: its driver (a local directory, or the bucket of zot's
// storageDriver), its dedupe index (the BoltDB file cache.db in
// rootDirectory, or the shared Redis or DynamoDB one), and the store over
// them. With s3, rootDirectory keeps zot's meaning: a local directory for
// cache.db; the images are in the bucket.
package backend

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/cache/remote"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/local"
	"github.com/pier-oci/pier/store/driver/s3"
)

// Options adjust how a root is opened.
type Options struct {
	// ReadOnly opens the root read-only whatever its config says (jobs
	// that only read, beside a serving pier).
	ReadOnly bool
	// Logger gets the store's log lines; nil discards them.
	Logger *slog.Logger
	// Manifests is the manifest budget the process's stores share.
	Manifests *budget.Budget
	// Chunks bounds the chunk buffers of the process's s3 uploads
	// (NewChunkBudget); nil gives the root a budget of its own.
	Chunks *budget.Budget
	// TrackPulls keeps manifests' pull times (a retention rule counts
	// pulls).
	TrackPulls bool
}

// ChunkBuffers is the memory the s3 uploads of a process may hold in chunk
// buffers at once: two chunks of the default chunksize (10 MiB), four of
// the smallest (5 MiB). An upload holds a chunk while it fills it and
// writes it out; past the budget, uploads take turns (a client's body
// waits in its socket). Measured with 4 pushes of 256 MiB at once under
// GOMEMLIMIT=64MiB (make bench): the heap grows to about twice what is
// live before the collector runs, so two chunks live peak near 54 MiB,
// three near 64, and the pushes take as long either way: the bucket, not
// the buffers, sets the pace.
const ChunkBuffers = 24 << 20

// NewChunkBudget is a budget of ChunkBuffers for the roots of one process.
func NewChunkBudget() *budget.Budget { return budget.New(ChunkBuffers) }

// Open opens the root sc describes. A local root is taken under its
// process lock; a bucket is not contacted to open it, so pier starts, and
// says so, while it cannot be reached (Check).
func Open(sc configs.StoreConfig, opts Options) (*store.Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ro := opts.ReadOnly || sc.ReadOnly
	chunks := opts.Chunks
	if chunks == nil {
		chunks = NewChunkBudget()
	}
	drv, err := openDriver(sc, ro, chunks, log)
	if err != nil {
		return nil, err
	}
	c, own, err := Cache(sc, drv, log)
	if err != nil {
		drv.Close()
		return nil, err
	}
	st, err := store.New(store.Options{
		Driver: drv, Cache: c, Logger: log, Manifests: opts.Manifests,
		SoleReplica: own, Lookup: sc.StoreWideLookup, TrackPulls: opts.TrackPulls,
		RedirectBlobs: sc.RedirectBlobURL,
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		drv.Close()
		return nil, err
	}
	if _, ok := drv.(driver.Redirector); sc.RedirectBlobURL && !ok {
		log.Warn("redirectBlobURL applies to remote storage only: pier serves the blobs of this root itself")
	}
	if sc.StoreWideLookup && c == nil {
		log.Warn("storeWideLookup needs the dedupe index (dedupe on, not read-only): it is off for this root")
	}
	if sc.S3 != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := st.Check(ctx); err != nil {
			log.Warn("the bucket cannot be reached: pier serves, and requests that need it get 503 until it is back", "storage", st.String(), "err", err)
		}
	}
	return st, nil
}

// Driver opens the root's storage: the bucket of its storageDriver, or
// its directory under the process lock.
func Driver(sc configs.StoreConfig, readOnly bool, log *slog.Logger) (driver.Driver, error) {
	return openDriver(sc, readOnly, NewChunkBudget(), log)
}

func openDriver(sc configs.StoreConfig, readOnly bool, chunks *budget.Budget, log *slog.Logger) (driver.Driver, error) {
	if sc.S3 != nil {
		cfg := s3.FromConfig(sc.S3, readOnly, log)
		cfg.Buffers = chunks
		return s3.New(context.Background(), cfg)
	}
	return local.Open(sc.RootDirectory, local.Options{Sync: sc.Commit, ReadOnly: readOnly, Lock: true, TempDir: store.StateDir + "/tmp", Reserve: store.ReserveSize})
}

// Cache opens the root's dedupe index: none when dedupe is off or the
// root is read-only, the remote one configured (Redis, DynamoDB), or else
// the BoltDB file <rootDirectory>/cache.db, which opens whatever it holds
// (a damaged one is set aside under <rootDirectory>/.pier, logged once,
// and rebuilt from the storage). own reports that the index is this
// process's alone (BoltDB), naming it (host and file): the store then
// keeps other piers off its storage.
func Cache(sc configs.StoreConfig, drv driver.Driver, log *slog.Logger) (c cache.Cache, own string, err error) {
	if !sc.Dedupe || drv.ReadOnly() {
		return nil, "", nil
	}
	if c, err := remote.Open(sc.Cache, log); err != nil || c != nil {
		return c, "", err
	}
	dir := sc.RootDirectory
	if l, ok := drv.(*local.Driver); ok {
		dir = l.Dir()
	} else if err := os.MkdirAll(filepath.Join(dir, store.StateDir), 0o755); err != nil {
		return nil, "", fmt.Errorf("create the directory of the dedupe cache: %w", err)
	}
	bc, err := boltdb.Open(filepath.Join(dir, "cache.db"), boltdb.Options{
		Sync: sc.Commit, AsideDir: filepath.Join(dir, store.StateDir), Logger: log,
	})
	if err != nil {
		return nil, "", fmt.Errorf("open dedupe cache (is another pier or zot serving %s?): %w", dir, err)
	}
	host, _ := os.Hostname()
	return bc, host + ":" + filepath.Join(dir, "cache.db"), nil
}
