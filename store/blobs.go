package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/store/disk"
	"github.com/pier-oci/pier/store/oci"
)

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// StatBlob reports whether repo holds blob d. Like every read it has no
// side effect: it never creates the repository or any file.
func (s *Store) StatBlob(ctx context.Context, repo string, d digest.Digest) (BlobInfo, error) {
	fi, err := os.Stat(s.blobPath(repo, d))
	if err != nil {
		if notFound(err) || errors.Is(err, fs.ErrInvalid) {
			return BlobInfo{}, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
		}
		return BlobInfo{}, fmt.Errorf("stat blob %s in %s: %w", d, repo, err)
	}
	if !fi.Mode().IsRegular() {
		return BlobInfo{}, fmt.Errorf("%w: %s in %s is not a regular file", ErrBlobUnknown, d, repo)
	}
	return BlobInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// OpenBlob opens blob d of repo for reading. Locally the reader is an
// *os.File, so the HTTP layer serves it with sendfile and ranges.
func (s *Store) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, BlobInfo, error) {
	f, err := openRegular(s.blobPath(repo, d))
	if err != nil {
		if notFound(err) {
			return nil, BlobInfo{}, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
		}
		return nil, BlobInfo{}, fmt.Errorf("open blob %s in %s: %w", d, repo, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, BlobInfo{}, fmt.Errorf("stat blob %s in %s: %w", d, repo, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, BlobInfo{}, fmt.Errorf("%w: %s in %s is not a regular file", ErrBlobUnknown, d, repo)
	}
	return f, BlobInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// DeleteBlob removes blob d from repo. A blob that a manifest of the
// repository still references is refused with ErrBlobReferenced: deleting it
// would leave a tagged image that cannot be pulled. Other repositories that
// share the content (hard links) are not affected.
func (s *Store) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	if err := s.writable(); err != nil {
		return err
	}
	unlock := s.locks.lock(repo)
	defer unlock()
	if _, err := s.StatBlob(ctx, repo, d); err != nil {
		return err
	}
	by, err := s.referencedBy(ctx, repo, d)
	if err != nil {
		return err
	}
	if by != "" {
		return fmt.Errorf("%w: %s is used by manifest %s; delete the manifest first", ErrBlobReferenced, d, by)
	}
	path := s.blobPath(repo, d)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("delete blob %s in %s: %w", d, repo, err)
	}
	if s.dedupe != nil {
		s.dedupe.forget(ctx, d, path)
	}
	if err := s.fs.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete blob %s in %s: %w", d, repo, err)
	}
	s.log.Info("blob deleted", "repo", repo, "digest", d)
	return nil
}

// FindBlob returns a repository that holds blob d, for a mount that names
// no source repository.
func (s *Store) FindBlob(ctx context.Context, d digest.Digest) (string, error) {
	if s.dedupe != nil {
		for _, p := range s.dedupe.copies(ctx, d) {
			repo := s.repoOfBlobPath(p)
			if oci.ValidateName(repo) != nil {
				continue
			}
			if _, err := s.StatBlob(ctx, repo, d); err == nil {
				return repo, nil
			}
		}
	}
	repos, err := s.Repositories(ctx)
	if err != nil {
		return "", err
	}
	for _, repo := range repos {
		if _, err := s.StatBlob(ctx, repo, d); err == nil {
			return repo, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrBlobUnknown, d)
}

// MountBlob makes blob d of repository from available in repo, as a hard
// link when the filesystem allows it, else as a copy. It reports
// ErrBlobUnknown when from does not hold d, so the caller can fall back to
// an ordinary upload as the spec asks.
func (s *Store) MountBlob(ctx context.Context, repo, from string, d digest.Digest) error {
	src, err := s.StatBlob(ctx, from, d)
	if err != nil {
		return err
	}
	if err := s.ensureRepo(repo); err != nil {
		return err
	}
	unlock := s.locks.rlock(repo)
	defer unlock()
	dst := s.blobPath(repo, d)
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		s.refresh(dst)
		return s.syncExisting(dst)
	}
	if err := s.fs.MkdirAll(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("mount blob %s into %s: %w", d, repo, err)
	}
	err = s.fs.Link(s.blobPath(from, d), dst, s.uploadsDir(repo))
	copied := errors.Is(err, disk.ErrLinkUnsupported)
	if copied {
		if s.dedupe != nil {
			s.dedupe.linkFailed(err)
		}
		err = s.fs.Copy(s.blobPath(from, d), dst, s.uploadsDir(repo))
	}
	if err != nil {
		return fmt.Errorf("mount blob %s from %s into %s: %w", d, from, repo, err)
	}
	if s.dedupe != nil {
		s.dedupe.record(ctx, d, dst)
	}
	s.log.Info("blob mounted", "repo", repo, "from", from, "digest", d, "bytes", src.Size, "copied", copied)
	return nil
}

// commitBlob moves a verified upload file into repo's blobs. With dedupe
// the blob becomes a hard link to a copy already under the root and the
// upload is dropped. If the blob is already there the upload is dropped
// too: blobs are immutable, and rewriting one would break the links that
// share it. The caller has synced the file.
func (s *Store) commitBlob(ctx context.Context, repo, uploadPath string, d digest.Digest, size int64) error {
	unlock := s.locks.rlock(repo)
	defer unlock()
	dst := s.blobPath(repo, d)
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		s.refresh(dst)
		if err := s.syncExisting(dst); err != nil {
			return err
		}
		return os.Remove(uploadPath)
	}
	if err := s.fs.MkdirAll(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("commit blob %s: %w", d, err)
	}
	if s.dedupe != nil && s.dedupe.linkExisting(ctx, d, size, uploadPath, dst, s.uploadsDir(repo)) {
		s.dedupe.record(ctx, d, dst)
		return os.Remove(uploadPath)
	}
	if err := s.fs.Rename(uploadPath, dst); err != nil {
		return fmt.Errorf("commit blob %s: %w", d, err)
	}
	if s.dedupe != nil {
		s.dedupe.record(ctx, d, dst)
	}
	return nil
}

// syncExisting makes sure a blob found already in place is durable before
// a second push of it is acknowledged: the push that put it there may
// still be between its rename and its directory fsync.
func (s *Store) syncExisting(path string) error {
	if err := s.fs.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("commit blob: %w", err)
	}
	return nil
}

// refresh marks a blob as just pushed again, so that garbage collection
// gives the push that re-sent it a full gcDelay to send its manifest.
func (s *Store) refresh(path string) {
	now := time.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		s.log.Warn("cannot refresh blob time", "path", path, "err", err)
	}
}

// isNotDir reports ENOTDIR, which a path through a regular file (a
// repository name that crosses a file) produces instead of ENOENT.
func isNotDir(err error) bool { return errors.Is(err, unix.ENOTDIR) }

// notFound reports an error that means a path names nothing pier can
// serve: it does not exist, crosses a file (ENOTDIR), or runs into a loop
// of symbolic links (ELOOP). Names from the network reach such paths when
// a repository name crosses a file, or a layout holds odd entries.
func notFound(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || isNotDir(err) || errors.Is(err, unix.ELOOP)
}

// IsNotRepository reports an error from a write that found something other
// than a repository's own files where its name leads: a file crossing the
// path (ENOTDIR), a directory where a file belongs (EISDIR, or EEXIST and
// ENOTEMPTY from a rename onto it), a loop of links (ELOOP). Reads report
// these as not found; a push cannot go there. pier's own writes never
// collide otherwise: its new names are random.
func IsNotRepository(err error) bool {
	for _, e := range []error{ErrNotRepository, unix.ENOTDIR, unix.ELOOP, unix.EISDIR, unix.EEXIST, unix.ENOTEMPTY} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// readAllLimited reads r up to limit bytes and fails beyond it.
func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, ErrManifestTooLarge
	}
	return b, nil
}
