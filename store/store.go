// Package store keeps OCI content in a directory of OCI Image Layouts, one
// per repository: <root>/<repo>/{oci-layout,index.json,blobs/<alg>/<hex>}.
// Uploads in progress live in <root>/<repo>/.uploads/ until their digest is
// verified, then are renamed into blobs/. index.json is the record of which
// manifests exist and which tags point at them; it is only ever replaced
// whole, so a reader never sees it torn.
//
// The store knows OCI semantics and nothing of HTTP.
package store

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/disk"
)

// Options configures a Store.
type Options struct {
	// Root is the directory holding the repositories (zot's rootDirectory).
	Root string
	// Commit fsyncs every write before it is acknowledged (zot's commit).
	Commit bool
	// Dedupe stores content that is already somewhere under the root as a
	// hard link to it (zot's dedupe), found through a cache.
	Dedupe bool
	// Cache is the dedupe index to use; when nil and Dedupe is set, a
	// BoltDB file <Root>/cache.db.
	Cache cache.Cache
	// ReadOnly serves the root without writing anything to it: no cache, no
	// uploads, no lock file; pushes and deletes are refused. A root on a
	// read-only filesystem is read-only whatever this says.
	ReadOnly bool
	// Logger receives the store's rare log lines; nil discards them.
	Logger *slog.Logger
	// Manifests bounds the manifest bytes held in memory at once, to read,
	// hash and decode them; several stores (subPaths) may share one. When
	// nil the store has its own (NewManifestBudget).
	Manifests *budget.Budget
}

// Store is the OCI content of one root directory. It is safe for concurrent
// use; writes to one repository never wait on another repository.
type Store struct {
	root      string
	fs        *disk.FS
	log       *slog.Logger
	locks     *repoLocks
	uploads   *uploadTable
	dedupe    *deduper // nil when dedupe is off
	ro        bool     // read-only root
	manifests *budget.Budget
	reserve   *reserve // nil for a read-only root
}

// New opens (creating if needed) the store rooted at opts.Root.
func New(opts Options) (*Store, error) {
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("store root %q: %w", opts.Root, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		root:      root,
		fs:        &disk.FS{Sync: opts.Commit},
		log:       log,
		locks:     newRepoLocks(),
		uploads:   newUploadTable(),
		ro:        opts.ReadOnly || disk.ReadOnlyFS(root),
		manifests: opts.Manifests,
	}
	if s.manifests == nil {
		s.manifests = NewManifestBudget()
	}
	if !s.ro {
		if err := s.fs.MkdirAll(root); err != nil {
			return nil, fmt.Errorf("create store root: %w", err)
		}
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("store root %s is not a directory", root)
	}
	if !s.ro {
		s.reserve = newReserve(s)
		if err := s.reserve.ensure(); err != nil {
			log.Warn("no room to keep space for deletes: pushes are refused until space is freed", "err", err)
		}
	}
	if opts.Dedupe && !s.ro {
		d, err := newDeduper(s, opts.Cache)
		if err != nil {
			return nil, err
		}
		s.dedupe = d
	}
	return s, nil
}

// ReadOnly reports whether the store refuses every write.
func (s *Store) ReadOnly() bool { return s.ro }

// writable is ErrReadOnly for a read-only store.
func (s *Store) writable() error {
	if s.ro {
		return fmt.Errorf("%w: %s is served read-only", ErrReadOnly, s.root)
	}
	return nil
}

// pushable is writable, for a write that adds content: it fails, with the
// storage full, when the space kept for deletes cannot be kept.
func (s *Store) pushable() error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.reserve.ensure(); err != nil {
		return fmt.Errorf("%w: %w", ErrStorageFull, err)
	}
	return nil
}

// Close releases the store's cache. Requests must have stopped.
func (s *Store) Close() error {
	if s.dedupe != nil {
		return s.dedupe.close()
	}
	return nil
}

// ManifestBudget is the budget that bounds the manifest bytes in memory
// for repo: a request that reads a manifest body itself (a push) holds its
// bytes of it while it reads and while the store decodes it.
func (s *Store) ManifestBudget(repo string) *budget.Budget { return s.manifests }

// Root is the absolute directory the store lives in.
func (s *Store) Root() string { return s.root }

// Syncs reports the fsync calls made so far (for tests and benchmarks).
func (s *Store) Syncs() int64 { return s.fs.Syncs() }

// The paths below are built only from names and digests that were
// validated (oci.ValidateName, oci.ParseDigest) or that pier generated itself.

func (s *Store) repoDir(repo string) string { return filepath.Join(s.root, filepath.FromSlash(repo)) }

func (s *Store) uploadsDir(repo string) string { return filepath.Join(s.repoDir(repo), ".uploads") }

func (s *Store) blobPath(repo string, d digest.Digest) string {
	return filepath.Join(s.repoDir(repo), "blobs", d.Algorithm().String(), d.Encoded())
}

func (s *Store) indexPath(repo string) string { return filepath.Join(s.repoDir(repo), "index.json") }

// pierDir holds pier's own state in the root (reconcile progress, scrub
// results); like every dot directory it is never taken for a repository.
func (s *Store) pierDir() string { return filepath.Join(s.root, ".pier") }
