package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/oci"
)

const (
	// settleTime is how long a new blob file must stay unwritten before it
	// is deduped: a copy in progress writes it continuously.
	settleTime = 2 * time.Second
	// rescanInterval is the safety net where the kernel cannot watch the
	// root (another kind of filesystem, or the inotify watch limit).
	rescanInterval = 5 * time.Minute
	// maxDirty bounds the files remembered between two dedupe rounds; past
	// it a full pass is cheaper than the list.
	maxDirty = 10000
)

// Watch dedupes layouts copied into the root while pier runs, as their
// blobs arrive: every new file under a blobs/ directory is linked to an
// existing copy once it has been quiet for settleTime. It sleeps on the
// kernel's notifications; only where those are unavailable does it fall
// back to a full pass every rescanInterval. Serving needs none of this:
// pier reads layouts from the disk on every request.
func (s *Store) Watch(ctx context.Context) {
	if s.dedupe == nil {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch the storage root; new layouts are deduped every few minutes", "err", err)
		s.rescanLoop(ctx)
		return
	}
	defer w.Close()
	if err := s.watchTree(w, s.root); err != nil {
		s.log.Warn("cannot watch every directory of the storage root; new layouts are deduped every few minutes", "err", err)
		s.rescanLoop(ctx)
		return
	}
	dirty := map[string]bool{}
	full := false
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.Errors:
			s.log.Warn("storage watch", "err", err)
		case ev := <-w.Events:
			if s.watchEvent(w, ev, dirty) {
				if len(dirty) > maxDirty {
					full, dirty = true, map[string]bool{}
				}
				settle.Reset(settleTime)
			}
		case <-settle.C:
			if full {
				s.Reconcile(ctx)
				full = false
				continue
			}
			for path := range dirty {
				s.dedupeArrival(ctx, path)
			}
			clear(dirty)
		}
	}
}

// watchEvent handles one notification and reports whether a blob file
// changed (so a dedupe round is due once things settle).
func (s *Store) watchEvent(w *fsnotify.Watcher, ev fsnotify.Event, dirty map[string]bool) bool {
	if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Rename) == 0 || ev.Op&fsnotify.Remove != 0 {
		return false
	}
	if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
		if ev.Op&fsnotify.Create != 0 && watchable(fi.Name()) {
			if err := s.watchTree(w, ev.Name); err != nil {
				s.log.Warn("cannot watch a new directory", "dir", ev.Name, "err", err)
			}
			// Files may have landed in it before the watch: look at it all.
			dirty[ev.Name] = true
			return true
		}
		return false
	}
	if filepath.Base(filepath.Dir(filepath.Dir(ev.Name))) != "blobs" {
		return false
	}
	dirty[ev.Name] = true
	return true
}

// watchable says whether a directory under the root can hold layouts.
func watchable(name string) bool { return !strings.HasPrefix(name, ".") }

// watchTree watches dir and every directory below it that may hold layouts.
func (s *Store) watchTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != s.root && !watchable(d.Name()) {
			return filepath.SkipDir
		}
		return w.Add(path)
	})
}

// dedupeArrival dedupes one new file <repo>/blobs/<alg>/<hex>, or, when a
// whole directory arrived, every blob below it.
func (s *Store) dedupeArrival(ctx context.Context, path string) {
	fi, err := os.Lstat(path)
	if err != nil {
		return
	}
	if fi.IsDir() {
		// A directory that arrived whole (a layout moved in, a new
		// repository): its blobs, not the whole store.
		filepath.WalkDir(path, func(p string, e fs.DirEntry, err error) error {
			switch {
			case err != nil || ctx.Err() != nil:
				return filepath.SkipDir
			case e.IsDir() && p != path && !watchable(e.Name()):
				return filepath.SkipDir
			case e.Type().IsRegular() && filepath.Base(filepath.Dir(filepath.Dir(p))) == "blobs":
				s.dedupeArrival(ctx, p)
			}
			return nil
		})
		return
	}
	repo := s.repoOfBlobPath(path)
	alg := digest.Algorithm(filepath.Base(filepath.Dir(path)))
	d := digest.NewDigestFromEncoded(alg, filepath.Base(path))
	if oci.ValidateName(repo) != nil || d.Validate() != nil || !fi.Mode().IsRegular() {
		return
	}
	var st ReconcileStats
	if s.reconcileBlob(ctx, repo, d, path, &st) {
		s.dedupe.record(ctx, d, path)
	}
	if st.Linked > 0 {
		s.log.Info("deduped a blob that arrived", "repo", repo, "digest", d, "bytes_freed", st.BytesFreed)
	}
}

// rescanLoop runs a full dedupe pass every rescanInterval.
func (s *Store) rescanLoop(ctx context.Context) {
	t := time.NewTicker(rescanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Reconcile(ctx)
		}
	}
}
