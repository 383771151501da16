package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/layout"
	"github.com/pier-oci/pier/store/retention"
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
	// Untagged are the tags retention removed (storage.retention); their
	// manifests stay pullable by digest for the retention delay.
	Untagged []string
	// Verdicts are retention's decision on every tag and untagged manifest,
	// where a policy with rules governs the repository.
	Verdicts []retention.Verdict
	// DryRun: nothing was removed; the report says what would have been
	// (pier gc --dry-run, or retention's dryRun).
	DryRun bool
}

// Removed reports whether the pass removed anything.
func (r CollectReport) Removed() bool {
	return len(r.Manifests)+len(r.Referrers)+len(r.StaleEntries)+len(r.Untagged)+r.Blobs+r.Uploads > 0 || r.RepoRemoved
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
//
// Retention policies (SetRetention) decide which tags stay; a tag they
// drop leaves its manifest untagged, collected once older than the
// retention delay. With retention's dryRun the pass is a preview, as
// PreviewRepo.
func (s *Store) CollectRepo(ctx context.Context, repo string, delay time.Duration) (CollectReport, error) {
	return s.collect(ctx, repo, delay, s.Retention().DryRun)
}

// PreviewRepo is CollectRepo that removes nothing: its report says what a
// pass would remove now, and why (pier gc --dry-run).
func (s *Store) PreviewRepo(ctx context.Context, repo string, delay time.Duration) (CollectReport, error) {
	return s.collect(ctx, repo, delay, true)
}

func (s *Store) collect(ctx context.Context, repo string, delay time.Duration, dry bool) (CollectReport, error) {
	rep := CollectReport{Repo: repo, DryRun: dry}
	if s.writable() != nil && !dry {
		return rep, nil // nothing is ever removed from a read-only root (or one whose lease is not held)
	}
	snap, err := s.readIndexBytes(ctx, repo)
	if err != nil {
		return rep, err
	}
	blobs, err := s.listBlobs(ctx, repo)
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
	if dry {
		return plan.report(rep, delay, now), nil
	}

	unlock := s.locks.Lock(repo)
	defer unlock()
	cur, err := s.readIndexBytes(ctx, repo)
	if err != nil {
		return rep, err
	}
	if !bytes.Equal(cur.data, snap.data) {
		// index.json changed during the walk: decide again, now under the
		// lock. Blobs that arrived since the listing are not candidates.
		if plan, err = s.planCollection(ctx, repo, cur, blobs, delay, now); err != nil {
			return rep, err
		}
	}
	return s.applyCollection(ctx, repo, plan, delay, now, rep)
}

// blobFile is one object under blobs/.
type blobFile struct {
	digest digest.Digest
	key    string
	size   int64
	added  time.Time // when it got its name (ctime locally)
	info   driver.Info
}

func (s *Store) listBlobs(ctx context.Context, repo string) ([]blobFile, error) {
	entries, err := layout.ListBlobs(ctx, s.drv, repo)
	if err != nil {
		return nil, fromDriver(err, nil, "list blobs of %s", repo)
	}
	out := make([]blobFile, len(entries))
	for i, e := range entries {
		out[i] = blobFile{digest: e.Digest, key: e.Info.Key, size: e.Info.Size, added: e.Info.Changed, info: e.Info}
	}
	return out, nil
}

// indexSnapshot is index.json as read once, with its version.
type indexSnapshot struct {
	data []byte
	info driver.Info
}

func (s *Store) readIndexBytes(ctx context.Context, repo string) (indexSnapshot, error) {
	b, info, err := s.drv.ReadFile(ctx, indexKey(repo), maxIndexSize)
	if err != nil {
		return indexSnapshot{}, fromDriver(err, ErrNameUnknown, "read index of %s", repo)
	}
	return indexSnapshot{b, info}, nil
}

// collectionPlan is what a pass decided: the index entries to keep and the
// blobs to delete.
type collectionPlan struct {
	index     *repoIndex
	data      []byte // the index.json decided on
	keep      []ispec.Descriptor
	manifests []digest.Digest
	referrers []digest.Digest
	stale     []digest.Digest
	garbage   []blobFile
	indexOld  bool // index.json unchanged for delay when planned
	changed   bool // keep differs from the index's entries

	untagged []string            // tags retention drops
	verdicts []retention.Verdict // retention's decisions, for the report
}

// report is what the plan would remove, for a pass that removes nothing.
func (p *collectionPlan) report(rep CollectReport, delay time.Duration, now time.Time) CollectReport {
	rep.Manifests, rep.Referrers, rep.StaleEntries = p.manifests, p.referrers, p.stale
	rep.Untagged, rep.Verdicts = p.untagged, p.verdicts
	for _, b := range p.garbage {
		rep.Blobs++
		rep.BlobBytes += b.size
	}
	return rep
}

// planCollection decides liveness from one version of index.json. Tagged
// manifests and untagged ones younger than delay are roots; the children
// of a live index and the referrers of a live subject are live; so is
// every blob a live manifest references. The rest is garbage once old.
func (s *Store) planCollection(ctx context.Context, repo string, snap indexSnapshot, blobs []blobFile, delay time.Duration, now time.Time) (*collectionPlan, error) {
	x, err := decodeIndex(snap.data)
	if err != nil {
		return nil, fmt.Errorf("parse index.json of %s: %w", repo, err)
	}
	indexAge := now.Sub(lastActivity(snap.info, blobs))
	p := &collectionPlan{index: x, data: snap.data, indexOld: indexAge >= delay}
	rules := s.retentionOf(ctx, repo, x, blobs, delay, now)
	p.untagged, p.verdicts = rules.dropTags, rules.verdicts
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
		if !ok && depth > maxIndexDepth {
			// Deeper than pier follows: what it keeps alive is unknown,
			// so nothing of the repository is garbage (a layout another
			// tool wrote may nest deeper than pier's own pushes do).
			unreadable = true
		}
		if !ok && depth <= maxIndexDepth {
			loaded, err := s.loadManifest(ctx, repo, d)
			if err == nil {
				m, docs[d] = loaded, loaded
			} else if !errors.Is(err, ErrManifestUnknown) || onDisk[d].key != "" {
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
	readdressed := map[digest.Digest]bool{} // dropped tags' manifests, now untagged
	for _, e := range x.Manifests {
		if _, ok := onDisk[e.Digest]; !ok {
			// Not in the listing: it may have arrived since (the listing is
			// older than this index), or be missing for real.
			if info, err := s.drv.Stat(ctx, blobKey(repo, e.Digest)); err == nil {
				onDisk[e.Digest] = blobFile{digest: e.Digest, key: info.Key, size: info.Size, added: info.Changed, info: info}
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
		if t, tagged := tagOf(e); tagged && rules.drop[t] {
			// Retention drops the tag: the manifest stays, untagged as of
			// now, unless a tag it keeps names it; so it lives this pass.
			p.changed = true
			if rules.tagged[e.Digest] || readdressed[e.Digest] {
				markLive(e.Digest, 0)
				continue
			}
			readdressed[e.Digest] = true
			e = untagged(e)
		}
		p.keep = append(p.keep, e)
		if _, tagged := tagOf(e); tagged || now.Sub(s.untaggedAt(repo, e, onDisk)) < rules.delay || rules.keepUntagged[e.Digest] {
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
			if live[w.desc.Digest] || (w.subject != "" && (live[w.subject] || rules.keepReferrers)) {
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
	p.changed = p.changed || len(kept) != len(x.Manifests)
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

// lastActivity is when repo last changed: its index.json, or the newest
// of its blobs. An entry whose blob is missing gets gcDelay from then, so
// a layout that is still being copied in, however slowly, is left alone.
func lastActivity(index driver.Info, blobs []blobFile) time.Time {
	last := index.Changed
	for _, b := range blobs {
		if b.added.After(last) {
			last = b.added
		}
	}
	return last
}

// applyCollection carries out a plan under the repository lock: first the
// index (so no entry ever names a deleted blob), then the blobs, then
// idle uploads, then the repository itself if nothing is left.
func (s *Store) applyCollection(ctx context.Context, repo string, p *collectionPlan, delay time.Duration, now time.Time, rep CollectReport) (CollectReport, error) {
	mark := s.newGCMark(p.garbageDigests()) // replicas: gcmark.go
	if p.changed || mark != nil {
		err := s.freeing(func() error {
			return s.updateIndex(ctx, repo, func(x *repoIndex, cur []byte) (bool, error) {
				if !bytes.Equal(cur, p.data) {
					// Another replica changed the index since the plan: leave
					// this repository to the next pass rather than write an
					// index decided on an older one.
					return false, errIndexMoved
				}
				x.Manifests = p.keep
				x.setMark(mark)
				return true, nil
			})
		})
		if errors.Is(err, errIndexMoved) {
			return rep, nil
		}
		if err != nil {
			return rep, err
		}
	}
	rep.Manifests, rep.Referrers, rep.StaleEntries = p.manifests, p.referrers, p.stale
	rep.Untagged, rep.Verdicts = p.untagged, p.verdicts
	listed := map[digest.Digest]bool{}
	for _, e := range p.keep {
		listed[e.Digest] = true
	}
	s.prunePulls(ctx, repo, listed)
	var doomed []doomedBlob
	var sizes []int64
	var found []driver.Info // as stat'ed under the lock, for the byte counts
	for _, b := range p.garbage {
		// Checked again under the lock: a push may have re-sent (and so
		// refreshed) the blob since the listing.
		info, err := s.drv.Stat(ctx, b.key)
		if err != nil || now.Sub(info.Changed) < delay {
			continue
		}
		doomed = append(doomed, doomedBlob{b.digest, b.key})
		sizes = append(sizes, b.size)
		found = append(found, info)
	}
	for len(doomed) > 0 && !mark.expiring() {
		batch := doomed
		if s.placeholders {
			batch = batch[:min(len(batch), 32)] // one at a time through the dedupe protocol: look at the mark's time
		}
		n, err := s.removeBlobs(ctx, batch)
		for i, size := range sizes[:n] {
			rep.Blobs++
			rep.BlobBytes += size
			s.uncounted(repo, found[i].Size, found[i].Links <= 1)
		}
		if n > 0 {
			s.views.drop(repo)
		}
		if errors.Is(err, ErrUnavailable) && s.dedupe != nil {
			s.log.Info("gc: blobs kept until the dedupe index is complete and reachable", "repo", repo, "err", err)
			break
		}
		if err != nil {
			s.clearMark(ctx, repo, mark)
			return rep, fromDriver(err, nil, "gc: remove blobs of %s", repo)
		}
		doomed, sizes, found = doomed[len(batch):], sizes[len(batch):], found[len(batch):]
	}
	s.clearMark(ctx, repo, mark)
	n, size := s.removeIdleUploads(ctx, repo, delay, now)
	rep.Uploads, rep.UploadBytes = n+s.sweepUnfinished(ctx, repo, delay, now), size
	defer s.recount(ctx, repo, false)
	if len(p.keep) == 0 && len(p.index.unusable) == 0 && p.indexOld {
		removed, err := s.removeEmptyRepo(ctx, repo)
		if err != nil {
			return rep, err
		}
		rep.RepoRemoved = removed
	}
	return rep, nil
}

// garbageDigests are the digests of the blobs the plan removes.
func (p *collectionPlan) garbageDigests() []digest.Digest {
	ds := make([]digest.Digest, len(p.garbage))
	for i, b := range p.garbage {
		ds[i] = b.digest
	}
	return ds
}

// errIndexMoved stops a collection whose plan another process outdated.
var errIndexMoved = errors.New("index.json changed since the plan")

// removeIdleUploads deletes uploads (and leftover temporary files) not
// written to for delay.
func (s *Store) removeIdleUploads(ctx context.Context, repo string, delay time.Duration, now time.Time) (int, int64) {
	entries, err := s.drv.List(ctx, uploadsDir(repo))
	if err != nil {
		return 0, 0
	}
	n, size := 0, int64(0)
	for _, e := range entries {
		if e.IsDir || now.Sub(e.ModTime) < delay {
			continue
		}
		// A request writing or committing the upload holds its session:
		// the upload is not idle, whatever its time says (gcDelay 0).
		key := repo + "\x00" + path.Base(e.Key)
		u := s.uploads.get(key)
		if !u.mu.TryLock() {
			continue
		}
		if s.drv.Delete(ctx, e.Key) == nil {
			n++
			size += e.Size
		}
		s.uploads.drop(key)
		u.mu.Unlock()
	}
	return n, size
}

// dropIfEmpty removes repo if it holds nothing at all: no manifest, no
// blob, no upload. It undoes the creation of a repository by a push that
// then failed.
func (s *Store) dropIfEmpty(ctx context.Context, repo string) {
	unlock := s.locks.Lock(repo)
	defer unlock()
	x, _, err := s.loadIndex(ctx, repo)
	if err != nil || len(x.Manifests) > 0 || len(x.unusable) > 0 {
		return
	}
	if _, err := s.removeEmptyRepo(ctx, repo); err != nil {
		s.log.Warn("cannot remove the repository a failed push created", "repo", repo, "err", err)
	}
}

// removeEmptyRepo removes a repository with no manifests, no blobs and no
// uploads left. Only the layout's own objects go: a repository nested
// below (a/b inside a) keeps the directory.
func (s *Store) removeEmptyRepo(ctx context.Context, repo string) (bool, error) {
	for _, dir := range []string{blobsDir(repo, digest.SHA256), blobsDir(repo, digest.SHA512), uploadsDir(repo)} {
		if entries, err := s.drv.List(ctx, dir); err != nil || len(entries) > 0 {
			return false, nil
		}
	}
	entries, err := s.drv.List(ctx, repo+"/blobs")
	if err != nil {
		return false, nil
	}
	for _, e := range entries {
		if name := path.Base(e.Key); name != "sha256" && name != "sha512" {
			return false, nil // another algorithm's blobs: not ours to judge
		}
	}
	// index.json first: without it the directory is no longer a repository.
	if err := s.drv.Delete(ctx, indexKey(repo)); err != nil {
		return false, fromDriver(err, nil, "remove empty repository %s", repo)
	}
	s.views.drop(repo)
	s.drv.Delete(ctx, layoutKey(repo))
	for _, dir := range []string{blobsDir(repo, digest.SHA256), blobsDir(repo, digest.SHA512), repo + "/blobs", uploadsDir(repo), repo} {
		// Fails, rightly, where other files or nested repositories remain.
		if err := s.drv.Prune(ctx, dir); err != nil {
			s.log.Warn("gc: cannot remove an empty directory", "dir", dir, "err", err)
		}
	}
	s.log.Info("removed empty repository", "repo", repo)
	return true, nil
}
