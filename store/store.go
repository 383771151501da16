// Package store keeps OCI content on a storage driver, one OCI Image
// Layout per repository: <repo>/{oci-layout,index.json,blobs/<alg>/<hex>}.
// Uploads in progress live in <repo>/.uploads/ until their digest is
// verified, then become blobs. index.json is the record of which
// manifests exist and which tags point at them; it is only ever replaced
// whole, with a compare-and-swap, so a reader never sees it torn and two
// writers (two replicas on one bucket) never lose each other's change.
//
// The store knows OCI semantics and nothing of HTTP or of the backend: the
// same code runs on a local directory and on a bucket (store/driver).
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/keylock"
	"github.com/pier-oci/pier/store/layout"
	"github.com/pier-oci/pier/store/retention"
)

// Options configures a Store.
type Options struct {
	// Driver holds the content. The store owns it from now on: Close
	// closes it. Whether the store is read-only is the driver's.
	Driver driver.Driver
	// Cache is the dedupe index (zot's cache driver); nil turns dedupe
	// off. The store owns it from now on.
	Cache cache.Cache
	// Logger receives the store's rare log lines; nil discards them.
	Logger *slog.Logger
	// SoleReplica, when set, names the dedupe index (Cache) that is this
	// process's own (BoltDB: its host and file): no other pier may write
	// the storage. On a storage that is not Exclusive (a bucket) the
	// store holds a lease in that name (lease.go), and New fails with
	// ErrLeased when another pier holds it.
	SoleReplica string
	// Lookup turns on the store-wide blob lookup (lookup.go): a blob a
	// repository lacks is found in the others the client may read. It
	// needs the dedupe index (Cache).
	Lookup bool
	// Manifests bounds the manifest bytes held in memory at once, to read,
	// hash and decode them; several stores (subPaths) may share one. When
	// nil the store has its own (NewManifestBudget).
	Manifests *budget.Budget
	// TrackPulls keeps the time of each manifest's last pull (pulls.go),
	// for retention's pulledWithin and mostRecentlyPulledCount.
	TrackPulls bool
	// RedirectBlobs answers whole-blob reads with a URL of the storage
	// (BlobURL) where the driver has them (driver.Redirector): zot's
	// redirectBlobURL.
	RedirectBlobs bool
}

// Store is the OCI content of one root. It is safe for concurrent use;
// writes to one repository never wait on another repository.
type Store struct {
	drv driver.Driver
	log *slog.Logger
	// locks are per repository (and a few internal keys): writers of
	// index.json (manifests, tags, deletes, GC) take the write lock; blob
	// commits take the read lock, so the layers of one image land in
	// parallel while GC cannot decide in the middle of them.
	locks    *keylock.Map
	uploads  *uploadTable
	placing  placingKeys // blob keys a push writes straight to (placeOpened)
	views    *viewCache
	verified *verifiedSet
	dedupe   *dedupe.Deduper // nil when dedupe is off
	ro       bool
	// placeholders: keys cannot share an object (s3), so a blob may be a
	// placeholder of content held elsewhere (placeholders.go).
	placeholders bool
	memo         holderMemo
	lookupOn     bool              // the store-wide blob lookup (lookup.go)
	redirector   driver.Redirector // nil unless blob reads redirect (BlobURL)
	lease        *replicaLease     // nil unless SoleReplica on a shared storage

	manifests *budget.Budget
	reserve   driver.Reserver // nil where the driver keeps no space back

	retention atomic.Pointer[retention.Config] // storage.retention; nil keeps every tag
	pulls     *pullLog                         // nil: pull times are not kept
	usage     *usage                           // bytes held, for quotas (usage.go)
	stopCount func()                           // ends the count at start; nil when none
	quotaState
}

// New opens the store on opts.Driver.
func New(opts Options) (*Store, error) {
	if opts.Driver == nil {
		return nil, fmt.Errorf("store: no driver")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		drv:     opts.Driver,
		log:     log,
		locks:   &keylock.Map{},
		uploads: newUploadTable(),
		placing: placingKeys{keys: map[string]int{}},
		views:   newViewCache(),
		usage:   newUsage(),
		ro:      opts.Driver.ReadOnly(),

		manifests: opts.Manifests,
	}
	if s.manifests == nil {
		s.manifests = NewManifestBudget()
	}
	_, links := s.drv.(driver.Linker)
	s.placeholders = !links
	s.lookupOn = opts.Lookup
	if r, ok := s.drv.(driver.Redirector); ok && opts.RedirectBlobs {
		s.redirector = r
	}
	if r, ok := s.drv.(driver.Reserver); ok && !s.ro {
		s.reserve = r
		if err := r.Reserve(context.Background()); err != nil {
			log.Warn("no room to keep space for deletes: pushes are refused until space is freed", "err", err)
		}
	}
	if opts.SoleReplica != "" && !s.ro && s.shared() {
		s.lease = newLease(s.drv, opts.SoleReplica, log)
		err := s.lease.acquire(context.Background())
		if errors.Is(err, ErrLeased) {
			return nil, fmt.Errorf("%w; its dedupe index (BoltDB) cannot be shared: give every replica the same Redis or DynamoDB cacheDriver (remoteCache: true), or stop the other pier", err)
		}
		if err != nil {
			log.Warn("cannot tell whether another pier serves this storage (its replica lease cannot be read); writes are refused until it can", "storage", s.drv, "err", err)
		}
	}
	s.verified = loadVerified(context.Background(), s.drv, log)
	if !s.ro {
		// The bytes held, for quotas and metrics: counted in the
		// background from the start (usage.go), stopped by Close.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		s.usage.started.Store(true) // pushes wait for it from now
		go func() { defer close(done); s.countAll(ctx) }()
		s.stopCount = func() { cancel(); <-done }
	}
	if opts.TrackPulls && !s.ro {
		s.pulls = &pullLog{every: PullSaveInterval, save: s.savePulls}
	}
	if opts.Cache != nil && !s.ro {
		s.dedupe = dedupe.New(dedupe.Options{Driver: s.drv, Cache: opts.Cache, Repos: (*dedupeHost)(s), Logger: log})
	} else if opts.Cache != nil {
		opts.Cache.Close()
	}
	return s, nil
}

// ReadOnly reports whether the store refuses every write.
func (s *Store) ReadOnly() bool { return s.ro }

// Driver is the backend the store is on.
func (s *Store) Driver() driver.Driver { return s.drv }

// String names the store's backend for logs and status lines.
func (s *Store) String() string { return s.drv.String() }

// writable is ErrReadOnly for a read-only store.
func (s *Store) writable() error {
	if s.ro {
		return fmt.Errorf("%w: %s is served read-only", ErrReadOnly, s.drv)
	}
	return s.lease.check()
}

// pushable is writable, for a write that adds content: it fails, with the
// storage full, when the space kept for deletes cannot be kept.
func (s *Store) pushable(ctx context.Context) error {
	if err := s.writable(); err != nil {
		return err
	}
	if s.reserve != nil {
		if err := s.reserve.Reserve(ctx); err != nil {
			return fromDriver(err, nil, "keep space for deletes")
		}
	}
	return nil
}

// freeing runs a write that a delete or a collection needs before it can
// free anything (an index.json rewrite). When the storage is full it
// gives up the space kept back for this and runs it once more.
func (s *Store) freeing(write func() error) error {
	err := write()
	if err == nil || !errors.Is(err, ErrNoSpace) || s.reserve == nil || !s.reserve.Release() {
		return err
	}
	s.log.Warn("the storage is full: the space kept for deletes is used; pushes are refused until space is freed (delete images, then garbage collection frees their blobs)")
	return write()
}

// Close releases the store's cache and driver. Requests must have
// stopped.
func (s *Store) Close() error {
	if s.stopCount != nil {
		s.stopCount()
	}
	var err error
	if s.dedupe != nil {
		err = s.dedupe.Close()
	}
	if !s.ro {
		s.verified.save(context.Background(), s.drv, s.log)
	}
	if s.pulls != nil {
		s.savePulls()
	}
	if s.lease != nil { // last: the saves above need it held
		s.lease.release()
	}
	if cerr := s.drv.Close(); err == nil {
		err = cerr
	}
	return err
}

// Syncs reports the fsync calls made so far, where the driver counts them
// (for tests and benchmarks).
func (s *Store) Syncs() int64 {
	if c, ok := s.drv.(driver.SyncCounter); ok {
		return c.Syncs()
	}
	return 0
}

// The keys of zot's layout (store/layout), under the names the store's
// code reads best with.

func indexKey(repo string) string                       { return layout.Index(repo) }
func layoutKey(repo string) string                      { return layout.OCILayout(repo) }
func uploadsDir(repo string) string                     { return layout.Uploads(repo) }
func uploadKey(repo, id string) string                  { return layout.Upload(repo, id) }
func blobsDir(repo string, alg digest.Algorithm) string { return layout.BlobsDir(repo, alg) }
func blobKey(repo string, d digest.Digest) string       { return layout.Blob(repo, d) }

// ReserveSize is the space a local root keeps back so that deletes and
// collections still go through on a full disk (driver.Reserver): the
// index.json of a repository with thousands of tags, with room to spare.
const ReserveSize = 1 << 20

// StateDir is where the store keeps its own state under the root
// (verified blobs, scrub results, the dedupe pass's progress); like every
// dot directory it is never taken for a repository.
const StateDir = ".pier"

// stateKey is the key of one of the store's own state files.
func stateKey(name string) string { return path.Join(StateDir, name) }

// ReadState reads one of the store's state files (by name, under
// StateDir); a missing one is driver.ErrNotFound.
func (s *Store) ReadState(ctx context.Context, name string) ([]byte, error) {
	b, _, err := s.drv.ReadFile(ctx, stateKey(name), 16<<20)
	return b, err
}

// WriteState replaces one of the store's state files.
func (s *Store) WriteState(ctx context.Context, name string, data []byte) error {
	if err := s.writable(); err != nil {
		return err
	}
	_, err := s.drv.WriteFile(ctx, stateKey(name), data)
	return err
}

// Ping asks the storage one cheap question (a stat of the store's own
// state directory), for a watchdog: it fails when the storage does not
// answer, or is no longer where the configuration says. A bucket (a
// driver without links) is not asked: one that does not answer is not
// this process wedged, and restarting it would not bring the bucket back
// (Check says whether it answers).
func (s *Store) Ping(ctx context.Context) error {
	if s.placeholders {
		return nil
	}
	if c, ok := s.drv.(driver.Checker); ok {
		if err := c.Check(ctx); err != nil {
			return err
		}
	}
	return s.Check(ctx)
}

// Check asks the storage one cheap question and returns its error when it
// cannot be reached.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.drv.Stat(ctx, stateKey("lock"))
	if err == nil || driver.IsNotFound(err) {
		return nil
	}
	return err
}
