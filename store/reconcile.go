package store

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/oci"
)

// ReconcileStats counts what one dedupe pass over the disk did.
type ReconcileStats struct {
	Repos         int
	Blobs         int
	Recorded      int   // paths newly entered in the cache
	AlreadyLinked int   // paths already sharing an inode with another copy
	Linked        int   // duplicates replaced by a hard link
	BytesFreed    int64 // by those links
	Took          time.Duration
}

// RunDedupe keeps the dedupe index in step with the disk until ctx ends:
// one pass when pier starts (it picks up layouts copied in while pier was
// off and rebuilds a lost cache), then a rebuild whenever the cache fails.
// Between those it sleeps on a channel, never polling.
func (s *Store) RunDedupe(ctx context.Context) {
	if s.dedupe == nil {
		return
	}
	if c, ok := s.dedupe.cache().(interface{ Check() error }); ok && s.dedupe.owned {
		if err := c.Check(); err != nil {
			s.log.Warn("dedupe cache fails its consistency check; rebuilding it", "err", err)
			if err := s.dedupe.reset(); err != nil {
				s.log.Error("cannot replace the dedupe cache; dedupe is off until restart", "err", err)
				return
			}
		}
	}
	for {
		stats, err := s.Reconcile(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("dedupe pass failed", "err", err)
		} else if err == nil {
			s.log.Info("dedupe pass done", "repos", stats.Repos, "blobs", stats.Blobs, "recorded", stats.Recorded,
				"linked", stats.Linked, "already_linked", stats.AlreadyLinked, "bytes_freed", stats.BytesFreed, "took", stats.Took)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.dedupe.kick:
			if err := s.dedupe.reset(); err != nil {
				s.log.Error("cannot replace the dedupe cache; dedupe is off until restart", "err", err)
				return
			}
		}
	}
}

// Reconcile walks every blob under the root once, in repository order:
// it records each path in the cache, and replaces a duplicate that is a
// separate copy by a hard link to the other. Files already linked are only
// stat'ed: no write, no mtime change. An interrupted pass resumes where it
// stopped, then wraps around to cover the repositories before that point.
func (s *Store) Reconcile(ctx context.Context) (ReconcileStats, error) {
	var st ReconcileStats
	if s.dedupe == nil {
		return st, nil
	}
	start := time.Now()
	repos, err := s.Repositories(ctx)
	if err != nil {
		return st, err
	}
	if resume := s.readResume(); resume != "" {
		i, _ := slices.BinarySearch(repos, resume)
		repos = append(repos[i:], repos[:i]...)
	}
	saved := time.Now()
	for _, repo := range repos {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := s.reconcileRepo(ctx, repo, &st); err != nil {
			s.log.Warn("dedupe pass: skipping repository", "repo", repo, "err", err)
		}
		st.Repos++
		if time.Since(saved) > 2*time.Second {
			s.writeResume(repo)
			saved = time.Now()
		}
	}
	os.Remove(s.resumePath())
	st.Took = time.Since(start)
	return st, nil
}

func (s *Store) resumePath() string { return filepath.Join(s.pierDir(), "dedupe-resume") }

func (s *Store) readResume() string {
	b, err := os.ReadFile(s.resumePath())
	if err != nil {
		return ""
	}
	repo := strings.TrimSpace(string(b))
	if oci.ValidateName(repo) != nil {
		return ""
	}
	return repo
}

func (s *Store) writeResume(repo string) {
	if err := s.fs.MkdirAll(s.pierDir()); err == nil {
		err = s.fs.WriteFile(s.resumePath(), s.pierDir(), []byte(repo+"\n"))
	}
}

// reconcileRepo dedupes the blobs of one repository; the paths new to the
// cache are written in one transaction.
func (s *Store) reconcileRepo(ctx context.Context, repo string, st *ReconcileStats) error {
	blobs, err := s.listBlobs(repo)
	if err != nil {
		return err
	}
	var fresh []cache.Op
	for _, b := range blobs {
		st.Blobs++
		if s.reconcileBlob(ctx, repo, b.digest, b.path, st) {
			fresh = append(fresh, cache.Op{Digest: b.digest, Path: s.dedupe.rel(b.path)})
		}
	}
	if err := s.dedupe.cache().Apply(ctx, fresh); err != nil {
		s.dedupe.failed("rebuild", err)
		return err
	}
	st.Recorded += len(fresh)
	return nil
}

// reconcileBlob handles one blob file and reports whether its path must
// be recorded in the cache.
func (s *Store) reconcileBlob(ctx context.Context, repo string, d digest.Digest, path string, st *ReconcileStats) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	copies := s.dedupe.copies(ctx, d)
	known := slices.Contains(copies, path)
	other, ofi := s.dedupe.firstValid(ctx, d, fi.Size(), path, copies)
	if other == "" || os.SameFile(fi, ofi) {
		if other != "" {
			st.AlreadyLinked++
		}
		return !known
	}
	if s.linkDuplicate(ctx, repo, d, path, fi, other, ofi) {
		st.Linked++
		st.BytesFreed += fi.Size()
	}
	return !known
}

// linkDuplicate makes two separate copies of d (path and other, as
// stat'ed in fi and ofi) one inode. Before it replaces a file it checks
// the content it keeps: linking to a copy that rotted would spread the
// damage, so the copy that still matches its digest wins. The decision is
// made without locks, so under the lock of the repository it writes to it
// checks that both files are still the ones it decided on: a blob deleted
// (or collected) meanwhile must stay deleted.
func (s *Store) linkDuplicate(ctx context.Context, repo string, d digest.Digest, path string, fi os.FileInfo, other string, ofi os.FileInfo) bool {
	keep, keepFI, replace, replaceFI, replaceRepo := other, ofi, path, fi, repo
	if !s.fileMatches(other, d) {
		if !s.fileMatches(path, d) {
			s.log.Warn("dedupe: both copies fail their digest; leaving them for scrub", "digest", d, "paths", []string{path, other})
			return false
		}
		keep, keepFI, replace, replaceFI, replaceRepo = path, fi, other, ofi, s.repoOfBlobPath(other)
	}
	if oci.ValidateName(replaceRepo) != nil {
		return false
	}
	unlock := s.locks.rlock(replaceRepo) // excludes deletes and GC; pushes never replace a blob
	defer unlock()
	if cur, err := os.Lstat(replace); err != nil || !os.SameFile(cur, replaceFI) {
		return false // deleted, collected or replaced since the decision
	}
	if cur, err := os.Lstat(keep); err != nil || !os.SameFile(cur, keepFI) {
		return false
	}
	if err := s.fs.MkdirAll(s.uploadsDir(replaceRepo)); err != nil {
		s.log.Warn("dedupe: cannot link", "repo", replaceRepo, "err", err)
		return false
	}
	if err := s.fs.Link(keep, replace, s.uploadsDir(replaceRepo)); err != nil {
		s.dedupe.linkFailed(err)
		return false
	}
	return true
}

// fileMatches re-hashes a file and reports whether it holds d.
func (s *Store) fileMatches(path string, d digest.Digest) bool {
	f, err := openRegular(path)
	if err != nil {
		return false
	}
	defer f.Close()
	got, err := d.Algorithm().FromReader(f)
	return err == nil && got == d
}
