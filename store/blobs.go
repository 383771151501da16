package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/layout"
	"github.com/pier-oci/pier/store/oci"
)

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// StatBlob reports whether repo holds blob d (or, with the store-wide
// lookup on, whether a repository the client may read does). Like every
// read it has no side effect: it never creates the repository or any
// object.
func (s *Store) StatBlob(ctx context.Context, repo string, d digest.Digest) (BlobInfo, error) {
	info, err := s.statOwn(ctx, repo, d)
	if errors.Is(err, ErrBlobUnknown) {
		if _, held, ok := s.lookup(ctx, repo, d); ok {
			return BlobInfo{Digest: d, Size: held.Size, ModTime: held.ModTime}, nil
		}
	}
	return info, err
}

// statOwn reports whether repo itself holds blob d.
func (s *Store) statOwn(ctx context.Context, repo string, d digest.Digest) (BlobInfo, error) {
	info, err := s.content(ctx, repo, d)
	if err != nil {
		return BlobInfo{}, err
	}
	return BlobInfo{Digest: d, Size: info.Size, ModTime: info.ModTime}, nil
}

// OpenBlob opens blob d of repo to be sent to a client, after checking it
// against d if this version of it never was. Locally the reader is an
// *os.File, so the HTTP layer serves it with sendfile and ranges; on s3
// over plain http it is a driver.StreamReader, which splices.
func (s *Store) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, BlobInfo, error) {
	f, info, _, err := s.openBlob(ctx, repo, d)
	return f, info, err
}

// redirectExpiry is how long a blob's URL (BlobURL) lets a client start
// its download: distribution's 20 minutes.
const redirectExpiry = 20 * time.Minute

// BlobURL returns a URL of the storage that serves blob d of repo, for a
// client to fetch it there rather than through pier (zot's
// redirectBlobURL), and the blob's description. It is "" where the root
// does not redirect, or the URL cannot be made now (the caller serves the
// blob itself). The blob is checked as OpenBlob checks it: a URL is
// given only for content verified against d, and for a placeholder it
// names the object that holds the content.
func (s *Store) BlobURL(ctx context.Context, repo string, d digest.Digest) (string, BlobInfo, error) {
	if s.redirector == nil {
		return "", BlobInfo{}, nil
	}
	f, info, key, err := s.openBlob(ctx, repo, d)
	if err != nil {
		return "", BlobInfo{}, err
	}
	f.Close()
	u, err := s.redirector.RedirectURL(ctx, key, redirectExpiry)
	if err != nil {
		s.log.Warn("cannot make a blob's URL; pier serves it", "repo", repo, "digest", d, "err", err)
		return "", BlobInfo{}, nil
	}
	return u, info, nil
}

// openBlob is OpenBlob, with the key of the object read. A driver that
// streams opens it to be sent (driver.Streamer): on s3 that costs a HEAD
// until it is read, so that a HEAD request or BlobURL's check (of a blob
// already verified) starts no GET.
func (s *Store) openBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, BlobInfo, string, error) {
	open := s.drv.Open
	if st, ok := s.drv.(driver.Streamer); ok {
		open = st.OpenStream
	}
	key := blobKey(repo, d)
	if s.placeholders || s.lookupOn {
		held, err := s.content(ctx, repo, d)
		if errors.Is(err, ErrBlobUnknown) {
			if _, elsewhere, ok := s.lookup(ctx, repo, d); ok {
				held, err = elsewhere, nil
			}
		}
		if err != nil {
			return nil, BlobInfo{}, "", err
		}
		key = held.Key
	}
	f, info, err := open(ctx, key)
	if err != nil {
		return nil, BlobInfo{}, "", fromDriver(err, ErrBlobUnknown, "%s in %s", d, repo)
	}
	if err := s.ensureVerified(ctx, repo, d, f, info); err != nil {
		f.Close()
		return nil, BlobInfo{}, "", err
	}
	return f, BlobInfo{Digest: d, Size: info.Size, ModTime: info.ModTime}, key, nil
}

// DeleteBlob removes blob d from repo. A blob that a manifest of the
// repository still references is refused with ErrBlobReferenced: deleting it
// would leave a tagged image that cannot be pulled. Other repositories that
// share the content (hard links) are not affected.
func (s *Store) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	if err := s.writable(); err != nil {
		return err
	}
	unlock := s.locks.Lock(repo)
	defer unlock()
	if _, err := s.drv.Stat(ctx, blobKey(repo, d)); err != nil {
		return fromDriver(err, ErrBlobUnknown, "%s in %s", d, repo)
	}
	// Replicas: marked first, so a push on another one that names it
	// either lands before (and is seen below) or is refused (gcmark.go).
	mark := s.newGCMark([]digest.Digest{d})
	if mark != nil {
		err := s.updateIndex(ctx, repo, func(x *repoIndex, _ []byte) (bool, error) { x.setMark(mark); return true, nil })
		switch {
		case err == nil:
			defer s.clearMark(context.WithoutCancel(ctx), repo, mark)
		case !errors.Is(err, ErrNameUnknown): // no index.json: no manifest can name it
			return err
		}
	}
	by, err := s.referencedBy(ctx, repo, d)
	if err != nil {
		return err
	}
	if by != "" {
		return fmt.Errorf("%w: %s is used by manifest %s; delete the manifest first", ErrBlobReferenced, d, by)
	}
	key := blobKey(repo, d)
	before, _ := s.drv.Stat(ctx, key)
	if _, err := s.removeBlobs(ctx, []doomedBlob{{d, key}}); err != nil {
		return fromDriver(err, nil, "delete blob %s in %s", d, repo)
	}
	s.uncounted(repo, before.Size, before.Links <= 1)
	s.views.drop(repo)
	s.log.Info("blob deleted", "repo", repo, "digest", d)
	return nil
}

// FindBlob returns a repository that holds blob d, for a mount that names
// no source repository: one the client may read (WithReadable).
func (s *Store) FindBlob(ctx context.Context, d digest.Digest) (string, error) {
	if s.dedupe != nil {
		for _, key := range s.dedupe.Copies(ctx, d) {
			repo := layout.RepoOfBlob(key)
			if oci.ValidateName(repo) != nil || !mayRead(ctx, repo) {
				continue
			}
			if _, err := s.statOwn(ctx, repo, d); err == nil {
				return repo, nil
			}
		}
	}
	repos, err := s.Repositories(ctx)
	if err != nil {
		return "", err
	}
	for _, repo := range repos {
		if !mayRead(ctx, repo) {
			continue
		}
		if _, err := s.statOwn(ctx, repo, d); err == nil {
			return repo, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrBlobUnknown, d)
}

// MountBlob makes blob d of repository from available in repo: a hard
// link where the driver has them and the two keys can share an object, a
// placeholder where the store dedupes with them, else a copy (server-side
// on s3). It reports ErrBlobUnknown when from does not hold d, or holds
// bytes that do not match it, so the caller can fall back to an ordinary
// upload as the spec asks: a damaged copy is never spread to another
// repository when the client could send a good one.
func (s *Store) MountBlob(ctx context.Context, repo, from string, d digest.Digest) error {
	src, err := s.checkedSource(ctx, from, d)
	if err != nil {
		return err
	}
	if err := s.admitBlob(ctx, repo, d, src.Size); err != nil {
		return err
	}
	if err := s.ensureRepo(ctx, repo); err != nil {
		return err
	}
	unlock := s.locks.RLock(repo)
	defer unlock()
	return s.mountLocked(ctx, repo, from, d)
}

// mountLocked is MountBlob under a lock of repo the caller holds.
func (s *Store) mountLocked(ctx context.Context, repo, from string, d digest.Digest) error {
	src, err := s.checkedSource(ctx, from, d)
	if err != nil {
		return err
	}
	dst := blobKey(repo, d)
	defer s.lockBlobKey(dst)()
	if info, err := s.drv.Stat(ctx, dst); err == nil && !(s.placeholders && dedupe.IsPlaceholder(info, d)) {
		if s.intact(ctx, info, d, src.Size, src.Key) {
			if err := s.syncExisting(ctx, dst); err != nil {
				return err
			}
			s.refresh(ctx, dst, d)
			return s.stillWanted(ctx, repo, d)
		}
		// Damaged (a power cut with commit off can leave a file empty):
		// the checked source replaces it, as a re-push would.
		s.log.Warn("a blob in place does not hold its content; the mount replaces it", "repo", repo, "digest", d)
	}
	how := "copied"
	placed, err := s.placeBlob(ctx, d, src.Size, dst)
	switch {
	case err != nil:
	case placed:
		how = "placeholder"
	default:
		err = s.linkOrCopy(ctx, src, dst, d)
		if err == nil && s.linked(src, dst) {
			how = "linked"
		}
	}
	if err != nil {
		return fromDriver(err, ErrBlobUnknown, "mount blob %s from %s into %s", d, from, repo)
	}
	switch how { // a placeholder holds no bytes, as the count at start sees it
	case "linked":
		s.counted(repo, src.Size, false)
	case "copied":
		s.counted(repo, src.Size, true)
	}
	if s.dedupe != nil && !placed {
		s.dedupe.Record(d, dst)
	}
	s.log.Info("blob mounted", "repo", repo, "from", from, "digest", d, "bytes", src.Size, "as", how)
	return s.stillWanted(ctx, repo, d)
}

// linkOrCopy makes dst hold the content of the object src: a hard link
// where the driver can make one, else a copy. A link or a copy of checked
// content is checked content.
func (s *Store) linkOrCopy(ctx context.Context, src driver.Info, dst string, d digest.Digest) error {
	err := driver.ErrUnsupported
	if l, ok := s.drv.(driver.Linker); ok {
		err = l.Link(ctx, src.Key, dst)
		if errors.Is(err, driver.ErrUnsupported) && s.dedupe != nil {
			s.dedupe.LinkFailed(err)
		}
	}
	if errors.Is(err, driver.ErrUnsupported) {
		err = s.drv.Copy(ctx, src.Key, dst)
	}
	if err != nil {
		return err
	}
	if s.verified.has(src.Content, d) {
		if after, err := s.drv.Stat(ctx, dst); err == nil {
			s.verified.add(after.Content, d)
		}
	}
	return nil
}

// linked reports whether dst is now the same object as src (a link).
func (s *Store) linked(src driver.Info, dst string) bool {
	after, err := s.drv.Stat(context.Background(), dst)
	return err == nil && src.ID != "" && after.ID == src.ID
}

// checkedSource is the object a mount copies from (the blob's own, or the
// one that holds a placeholder's content), checked against its digest
// first if this version of it never was (a layout copied in, say); the
// check is remembered, so a later pull does not repeat it.
func (s *Store) checkedSource(ctx context.Context, from string, d digest.Digest) (driver.Info, error) {
	info, err := s.content(ctx, from, d)
	if err != nil {
		return driver.Info{}, err
	}
	if s.verified.has(info.Content, d) {
		return info, nil
	}
	f, info, err := s.drv.Open(ctx, info.Key)
	if err != nil {
		return driver.Info{}, fromDriver(err, ErrBlobUnknown, "%s in %s", d, from)
	}
	defer f.Close()
	if err := s.ensureVerified(ctx, from, d, f, info); err != nil {
		return driver.Info{}, err
	}
	return info, nil
}

// syncExisting makes sure a blob found already in place is durable before
// a second push of it is acknowledged: the push that put it there may
// still be between its rename and its directory fsync, and a layout
// copied in by another tool may not be on the disk at all.
func (s *Store) syncExisting(ctx context.Context, key string) error {
	if sy, ok := s.drv.(driver.Syncer); ok {
		if err := sy.Sync(ctx, key); err != nil {
			return fromDriver(err, nil, "sync existing blob")
		}
	}
	return nil
}

// refresh marks a blob as just pushed again, so that garbage collection
// gives the push that re-sent it a full gcDelay to send its manifest.
func (s *Store) refresh(ctx context.Context, key string, d digest.Digest) {
	t, ok := s.drv.(driver.Toucher)
	if !ok {
		return
	}
	before, _ := s.drv.Stat(ctx, key)
	if err := t.Touch(ctx, key); err != nil {
		s.log.Warn("cannot refresh blob time", "key", key, "err", err)
		return
	}
	if s.verified.has(before.Content, d) {
		if after, err := s.drv.Stat(ctx, key); err == nil {
			s.verified.add(after.Content, d)
		}
	}
}
