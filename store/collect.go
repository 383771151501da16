package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// CollectReport says what garbage collection removed from one repository.
type CollectReport struct {
	Repo         string
	Manifests    []digest.Digest // untagged manifests nothing refers to
	Referrers    []digest.Digest // referrers whose subject is gone
	StaleEntries []digest.Digest // index.json entries whose blob was missing
	Blobs        int             // blob files removed (manifests included)
	BlobBytes    int64
	Uploads      int // abandoned uploads and temporary files
	UploadBytes  int64
	RepoRemoved  bool
}

// Removed reports whether the pass removed anything.
func (r CollectReport) Removed() bool {
	return len(r.Manifests)+len(r.Referrers)+len(r.StaleEntries)+r.Blobs+r.Uploads > 0 || r.RepoRemoved
}

// CollectRepo garbage-collects one repository. Nothing younger than delay
// is touched: an untagged manifest is aged from the moment it became
// untagged, a blob from when it entered the repository (its ctime), an
// upload from its last write. It collects untagged manifests that no live
// index lists and that are not referrers of a live subject, referrers whose
// subject is gone, blobs no live manifest references, idle uploads, and
// index entries whose blob is missing; a repository left empty is removed.
//
// The slow part, listing and stat'ing the files, runs without the
// repository lock; deciding and deleting run under it, so a push either
// completes with its blobs present or fails with a spec error.
func (s *Store) CollectRepo(ctx context.Context, repo string, delay time.Duration) (CollectReport, error) {
	rep := CollectReport{Repo: repo}
	if s.ro {
		return rep, nil // nothing is ever removed from a read-only root
	}
	snap, err := s.readIndexBytes(repo)
	if err != nil {
		return rep, err
	}
	blobs, err := s.listBlobs(repo)
	if err != nil {
		return rep, err
	}
	now := time.Now()
	plan, err := s.planCollection(ctx, repo, snap, blobs, delay, now)
	if err != nil {
		return rep, err
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}

	unlock := s.locks.lock(repo)
	defer unlock()
	cur, err := s.readIndexBytes(repo)
	if err != nil {
		return rep, err
	}
	if !bytes.Equal(cur, snap) {
		// index.json changed during the walk: decide again, now under the
		// lock. Blobs that arrived since the listing are not candidates.
		if plan, err = s.planCollection(ctx, repo, cur, blobs, delay, now); err != nil {
			return rep, err
		}
	}
	return s.applyCollection(ctx, repo, plan, delay, now, rep)
}

// blobFile is one file under blobs/.
type blobFile struct {
	digest digest.Digest
	path   string
	size   int64
	added  time.Time // ctime
}

func (s *Store) listBlobs(repo string) ([]blobFile, error) {
	var out []blobFile
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		dir := filepath.Join(s.repoDir(repo), "blobs", alg.String())
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list blobs of %s: %w", repo, err)
		}
		for _, e := range entries {
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if d.Validate() != nil {
				continue // not a blob (a tool's stray file): not ours to delete
			}
			fi, err := e.Info()
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			out = append(out, blobFile{digest: d, path: filepath.Join(dir, e.Name()), size: fi.Size(), added: changeTime(fi)})
		}
	}
	return out, nil
}

func (s *Store) readIndexBytes(repo string) ([]byte, error) {
	b, err := os.ReadFile(s.indexPath(repo))
	if notFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrNameUnknown, repo)
	}
	if err != nil {
		return nil, fmt.Errorf("read index of %s: %w", repo, err)
	}
	return b, nil
}

// collectionPlan is what a pass decided: the index entries to keep and the
// blobs to delete.
type collectionPlan struct {
	index     *repoIndex
	keep      []ispec.Descriptor
	manifests []digest.Digest
	referrers []digest.Digest
	stale     []digest.Digest
	garbage   []blobFile
	indexOld  bool // index.json unchanged for delay when planned
}

// planCollection decides liveness from one version of index.json. Tagged
// manifests and untagged ones younger than delay are roots; the children
// of a live index and the referrers of a live subject are live; so is
// every blob a live manifest references. The rest is garbage once old.
func (s *Store) planCollection(ctx context.Context, repo string, indexBytes []byte, blobs []blobFile, delay time.Duration, now time.Time) (*collectionPlan, error) {
	x, err := decodeIndex(bytes.NewReader(indexBytes))
	if err != nil {
		return nil, fmt.Errorf("parse index.json of %s: %w", repo, err)
	}
	indexAge := now.Sub(s.lastActivity(repo, now))
	p := &collectionPlan{index: x, indexOld: indexAge >= delay}
	incomplete := false // entries wait for blobs that may still be arriving
	onDisk := make(map[digest.Digest]blobFile, len(blobs))
	for _, b := range blobs {
		onDisk[b.digest] = b
	}

	unreadable := false                      // a live manifest could not be read
	live := map[digest.Digest]bool{}         // manifests and blobs that stay
	docs := map[digest.Digest]*manifestDoc{} // parsed manifests, by digest
	// markLive keeps manifest d with everything it references. Only
	// manifests are read: configs and layers are marked by digest.
	var markLive func(d digest.Digest, depth int)
	markLive = func(d digest.Digest, depth int) {
		if live[d] {
			return
		}
		live[d] = true
		m, ok := docs[d]
		if !ok && depth <= maxIndexDepth {
			loaded, err := s.loadManifest(ctx, repo, d)
			if err == nil {
				m, docs[d] = loaded, loaded
			} else if !errors.Is(err, ErrManifestUnknown) || onDisk[d].path != "" {
				// A live manifest that is here but cannot be read (corrupt,
				// or referencing digests pier cannot use): what it keeps
				// alive is unknown, so no blob of the repository is garbage
				// until it is healed or gone.
				s.log.Warn("gc: a live manifest cannot be read; keeping every blob of the repository", "repo", repo, "digest", d, "err", err)
				unreadable = true
			}
		}
		if m == nil {
			return
		}
		if m.Config != nil {
			live[m.Config.Digest] = true
		}
		for _, l := range m.Layers {
			live[l.Digest] = true
		}
		for _, c := range m.Manifests {
			markLive(c.Digest, depth+1)
		}
	}

	type pending struct {
		desc    ispec.Descriptor
		subject digest.Digest
	}
	var waiting []pending
	for _, e := range x.Manifests {
		if _, ok := onDisk[e.Digest]; !ok {
			// Not in the listing: it may have arrived since (the listing is
			// older than this index), or be missing for real.
			if fi, err := os.Stat(s.blobPath(repo, e.Digest)); err == nil && fi.Mode().IsRegular() {
				onDisk[e.Digest] = blobFile{digest: e.Digest, path: s.blobPath(repo, e.Digest), size: fi.Size(), added: changeTime(fi)}
			}
		}
		if _, ok := onDisk[e.Digest]; !ok {
			if indexAge >= delay {
				p.stale = append(p.stale, e.Digest)
				continue
			}
			p.keep = append(p.keep, e)
			incomplete = true
			continue
		}
		p.keep = append(p.keep, e)
		if _, tagged := tagOf(e); tagged || now.Sub(s.untaggedAt(repo, e, onDisk)) < delay {
			markLive(e.Digest, 0)
			continue
		}
		var subject digest.Digest
		if m, err := s.loadManifest(ctx, repo, e.Digest); err == nil {
			docs[e.Digest] = m
			if m.Subject != nil {
				subject = m.Subject.Digest
			}
		}
		waiting = append(waiting, pending{e, subject})
	}
	// Referrers of live subjects are live, and may be subjects themselves:
	// repeat until nothing changes.
	for changed := true; changed; {
		changed = false
		rest := waiting[:0]
		for _, w := range waiting {
			if live[w.desc.Digest] || (w.subject != "" && live[w.subject]) {
				markLive(w.desc.Digest, 0)
				changed = true
				continue
			}
			rest = append(rest, w)
		}
		waiting = rest
	}
	dead := map[digest.Digest]bool{}
	for _, w := range waiting {
		if dead[w.desc.Digest] {
			continue
		}
		dead[w.desc.Digest] = true
		if w.subject != "" {
			p.referrers = append(p.referrers, w.desc.Digest)
		} else {
			p.manifests = append(p.manifests, w.desc.Digest)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err // a manifest may have gone unread: nothing is known dead
	}
	kept := p.keep[:0]
	for _, e := range p.keep {
		if !dead[e.Digest] {
			kept = append(kept, e)
		}
	}
	p.keep = kept
	if incomplete || unreadable {
		// A layout still being copied in: what its manifests reference is
		// not known until they arrive, so none of its blobs is garbage yet.
		// The same holds while a live manifest cannot be read.
		return p, nil
	}
	for _, b := range blobs {
		if !live[b.digest] && now.Sub(b.added) >= delay {
			p.garbage = append(p.garbage, b)
		}
	}
	return p, nil
}

// untaggedAt is when an untagged entry became untagged: pier's stamp, or
// for entries other tools wrote, when the manifest reached this disk.
func (s *Store) untaggedAt(repo string, e ispec.Descriptor, onDisk map[digest.Digest]blobFile) time.Time {
	if t, ok := untaggedSince(e); ok {
		return t
	}
	return onDisk[e.Digest].added
}

// lastActivity is when repo last changed: its index.json, or the set of
// its blobs (a directory's mtime moves when an entry is added or removed).
// An entry whose blob is missing gets gcDelay from then, so a layout that
// is still being copied in, however slowly, is left alone.
func (s *Store) lastActivity(repo string, now time.Time) time.Time {
	fi, err := os.Stat(s.indexPath(repo))
	if err != nil {
		return now
	}
	last := changeTime(fi)
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		if di, err := os.Stat(filepath.Join(s.repoDir(repo), "blobs", alg.String())); err == nil && di.ModTime().After(last) {
			last = di.ModTime()
		}
	}
	return last
}

// applyCollection carries out a plan under the repository lock: first the
// index (so no entry ever names a deleted blob), then the blobs, then
// idle uploads, then the repository itself if nothing is left.
func (s *Store) applyCollection(ctx context.Context, repo string, p *collectionPlan, delay time.Duration, now time.Time, rep CollectReport) (CollectReport, error) {
	if len(p.keep) != len(p.index.Manifests) {
		p.index.Manifests = p.keep
		if err := s.freeing(func() error { return s.writeIndex(repo, p.index) }); err != nil {
			return rep, err
		}
	}
	rep.Manifests, rep.Referrers, rep.StaleEntries = p.manifests, p.referrers, p.stale
	dirs := map[string]bool{}
	for _, b := range p.garbage {
		// Checked again under the lock: a push may have re-sent (and so
		// refreshed) the blob since the listing.
		if fi, err := os.Lstat(b.path); err != nil || now.Sub(changeTime(fi)) < delay {
			continue
		}
		if err := os.Remove(b.path); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("gc: cannot remove blob", "repo", repo, "digest", b.digest, "err", err)
			}
			continue
		}
		if s.dedupe != nil {
			s.dedupe.forget(ctx, b.digest, b.path)
		}
		dirs[filepath.Dir(b.path)] = true
		rep.Blobs++
		rep.BlobBytes += b.size
	}
	for dir := range dirs {
		if err := s.fs.SyncDir(dir); err != nil {
			return rep, err
		}
	}
	n, size := s.removeIdleUploads(repo, delay, now)
	rep.Uploads, rep.UploadBytes = n, size
	if len(p.keep) == 0 && len(p.index.unusable) == 0 && p.indexOld {
		removed, err := s.removeEmptyRepo(repo)
		if err != nil {
			return rep, err
		}
		rep.RepoRemoved = removed
	}
	return rep, nil
}

// removeIdleUploads deletes uploads (and leftover temporary files) not
// written to for delay.
func (s *Store) removeIdleUploads(repo string, delay time.Duration, now time.Time) (int, int64) {
	entries, err := os.ReadDir(s.uploadsDir(repo))
	if err != nil {
		return 0, 0
	}
	n, size := 0, int64(0)
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || now.Sub(fi.ModTime()) < delay {
			continue
		}
		// A request writing or committing the upload holds its session:
		// the upload is not idle, whatever its time says (gcDelay 0).
		key := repo + "\x00" + e.Name()
		u := s.uploads.get(key)
		if !u.mu.TryLock() {
			continue
		}
		if os.Remove(filepath.Join(s.uploadsDir(repo), e.Name())) == nil {
			n++
			size += fi.Size()
		}
		s.uploads.drop(key)
		u.mu.Unlock()
	}
	return n, size
}

// dropIfEmpty removes repo if it holds nothing at all: no manifest, no
// blob, no upload. It undoes the creation of a repository by a push that
// then failed.
func (s *Store) dropIfEmpty(repo string) {
	unlock := s.locks.lock(repo)
	defer unlock()
	x, err := s.readIndex(repo)
	if err != nil || len(x.Manifests) > 0 || len(x.unusable) > 0 {
		return
	}
	if _, err := s.removeEmptyRepo(repo); err != nil {
		s.log.Warn("cannot remove the repository a failed push created", "repo", repo, "err", err)
	}
}

// removeEmptyRepo removes a repository with no manifests, no blobs and no
// uploads left. Only the layout's own files go: a repository nested below
// (a/b inside a) keeps the directory.
func (s *Store) removeEmptyRepo(repo string) (bool, error) {
	dir := s.repoDir(repo)
	for _, sub := range []string{"blobs/sha256", "blobs/sha512", ".uploads"} {
		if entries, err := os.ReadDir(filepath.Join(dir, sub)); err == nil && len(entries) > 0 {
			return false, nil
		}
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "blobs")); err == nil {
		for _, e := range entries {
			if e.Name() != "sha256" && e.Name() != "sha512" {
				return false, nil // another algorithm's blobs: not ours to judge
			}
		}
	}
	// index.json first: without it the directory is no longer a repository.
	if err := os.Remove(s.indexPath(repo)); err != nil {
		return false, fmt.Errorf("remove empty repository %s: %w", repo, err)
	}
	for _, f := range []string{"oci-layout", "blobs/sha256", "blobs/sha512", "blobs", ".uploads"} {
		os.Remove(filepath.Join(dir, f))
	}
	os.Remove(dir) // fails, rightly, when other files or nested repositories remain
	if err := s.fs.SyncDir(filepath.Dir(dir)); err != nil {
		return true, err
	}
	s.log.Info("removed empty repository", "repo", repo)
	return true, nil
}
