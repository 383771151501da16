package boltdb

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// AsideName is the name a damaged file is kept under in Options.AsideDir.
const AsideName = "cache.db.damaged"

// Open opens the cache at path, creating it if it is missing. Whatever the
// path holds, Open gives a working index or ErrInUse: a file that is not a
// sound BoltDB database (empty, cut short, overwritten, a directory, a
// link, unreadable) is set aside under opts.AsideDir, logged once, and
// replaced by a new, empty index, which reports itself not Complete so
// that the store rebuilds it. Only when the damaged file can be neither
// set aside nor removed does Open fail.
func Open(path string, opts Options) (*Cache, error) {
	c := &Cache{path: path, opts: opts, log: opts.Logger, write: make(chan struct{}, 1)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.removeOldAside()
	db, err := c.openFile()
	var damage *damagedError
	if errors.As(err, &damage) {
		if err := c.setAside(damage.why); err != nil {
			return nil, err
		}
		db, err = c.openFile()
	}
	if err != nil {
		return nil, err
	}
	c.db = db
	return c, nil
}

// Reset sets the current file aside as damaged and starts a new, empty
// index in its place: the store calls it when the index reports
// cache.ErrCorrupt, then rebuilds.
func (c *Cache) Reset(why error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.db != nil {
		guard(c.db.Close) // a damaged map may fault even here
		c.db = nil
	}
	if err := c.setAside(why); err != nil {
		return err
	}
	db, err := c.openFile()
	if err != nil {
		return err
	}
	c.db = db
	return nil
}

// damagedError is a file Open will not hand to bbolt, or bbolt refused.
type damagedError struct{ why error }

func (e *damagedError) Error() string { return e.why.Error() }

func damaged(format string, args ...any) error {
	return &damagedError{why: fmt.Errorf(format, args...)}
}

// openFile checks what path holds and opens it with bbolt.
func (c *Cache) openFile() (*bolt.DB, error) {
	fi, err := os.Lstat(c.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A new index.
	case err != nil:
		return nil, damaged("stat: %w", err)
	case fi.Mode()&os.ModeSymlink != 0:
		return nil, damaged("a symbolic link (never followed)")
	case !fi.Mode().IsRegular():
		return nil, damaged("not a regular file (%s)", fi.Mode().Type())
	default:
		if err := c.checkFile(); err != nil {
			return nil, err
		}
	}
	var db *bolt.DB
	err = guard(func() error {
		var err error
		db, err = bolt.Open(c.path, 0o600, &bolt.Options{
			Timeout:        openTimeout,
			NoSync:         !c.opts.Sync,
			NoGrowSync:     !c.opts.Sync, // commit false: no fsync when the file grows either
			NoFreelistSync: true,
			FreelistType:   bolt.FreelistMapType,
			OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
				return os.OpenFile(name, flag|syscall.O_NOFOLLOW, perm)
			},
		})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrInUse, c.path)
	}
	if err != nil {
		return nil, damaged("%w", err)
	}
	err = guard(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucketBlobs)
			return err
		})
	})
	if err != nil {
		guard(db.Close)
		return nil, damaged("%w", err)
	}
	return db, nil
}

// checkFile checks the file's structure (shape.go) under an exclusive
// lock, so that a file another process is writing is reported in use, not
// damaged.
func (c *Cache) checkFile() error {
	f, err := os.OpenFile(c.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return damaged("open: %w", err)
	}
	defer f.Close()
	deadline := time.Now().Add(openTimeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return damaged("lock: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s", ErrInUse, c.path)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	fi, err := f.Stat()
	if err != nil {
		return damaged("stat: %w", err)
	}
	if err := checkShape(f, fi.Size()); err != nil {
		return damaged("%w", err)
	}
	return nil
}

// setAside moves what path holds to AsideDir (replacing the one kept
// before), or removes it, and logs why once. A directory is only ever
// moved, never removed: it may be someone's data.
func (c *Cache) setAside(why error) error {
	var kept string
	if dir := c.opts.AsideDir; dir != "" && c.asideDirUsable() {
		dst := filepath.Join(dir, AsideName)
		os.RemoveAll(dst)
		if err := os.Rename(c.path, dst); err == nil || errors.Is(err, os.ErrNotExist) {
			kept = dst
		}
	}
	if kept == "" {
		fi, err := os.Lstat(c.path)
		if err == nil && fi.IsDir() {
			return fmt.Errorf("dedupe cache %s is a directory that cannot be moved aside (%v); move it away", c.path, why)
		}
		if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("dedupe cache %s is damaged (%v) and cannot be removed: %w", c.path, why, err)
		}
	}
	c.log.Warn("dedupe cache is damaged; starting a new one, rebuilt from the disk in the background",
		"path", c.path, "damage", why.Error(), "kept_as", kept)
	return nil
}

// asideDirUsable makes AsideDir if it is missing and reports whether it
// is a real directory: never a link, which could lead out of the root.
func (c *Cache) asideDirUsable() bool {
	fi, err := os.Lstat(c.opts.AsideDir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(c.opts.AsideDir, 0o700); err != nil {
			return false
		}
		fi, err = os.Lstat(c.opts.AsideDir)
	}
	return err == nil && fi.IsDir()
}

// removeOldAside removes the cache.db.corrupt-<time> files earlier pier
// versions left beside cache.db, where a repository of that name would
// find them.
func (c *Cache) removeOldAside() {
	old, _ := filepath.Glob(c.path + ".corrupt-*")
	for _, o := range old {
		if fi, err := os.Lstat(o); err == nil && fi.Mode().IsRegular() {
			os.Remove(o)
		}
	}
}
