package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
)

// Replicas on one bucket share no locks: a repository's lock orders the
// requests of one process only. What orders a removal of blobs (garbage
// collection, a blob delete) on one replica against a manifest push on
// another is index.json, the one object every change of the repository
// replaces with a compare-and-swap. Before it removes anything, the
// remover marks in index.json (an annotation of the index itself, which
// other tools ignore) the blobs it is about to remove, written only if the
// index is still the one it decided on; it clears the mark when done.
//
// A manifest push reads index.json, then checks its blobs, then swaps
// index.json: a mark naming one of its blobs fails it with
// MANIFEST_BLOB_UNKNOWN (the client sends the blob again). If the push's
// swap comes first, the mark's swap fails and the collection leaves the
// repository to its next pass; if the mark comes first, the push's swap
// fails, and its retry reads the mark. A push that read the index after
// the mark was cleared checks its blobs after the removal, and finds them
// gone or there. Either way no image is acknowledged with a blob that is
// then removed.
//
// Clearing a mark leaves the collection's id in index.json (the
// annotation AnnotationGCDone), so that the index after a collection never
// has the bytes it had before: S3's ETag is the MD5 of the bytes, and a
// push that read the index before the mark would otherwise swap it after
// the mark came and went, its blobs removed in between.
//
// A blob pushed again, or mounted, while it is marked gets a 503 (retry)
// once it is in place, so the client does not count on a copy the
// collection may still remove. A mark outlives a crashed collector by
// gcMarkLife at most: past it pushes ignore it, and the collector, which
// checks the time before each removal, has stopped.
//
// A local root is one process's (driver.Exclusive): its locks order
// everything, and none of this runs there.

// AnnotationGCPending is the annotation of index.json that names the
// blobs a collection is removing.
const AnnotationGCPending = "com.github.pier-oci.gc-pending"

// AnnotationGCDone is the annotation of index.json that names the last
// collection that removed blobs from it.
const AnnotationGCDone = "com.github.pier-oci.gc-done"

// gcMarkLife is how long a mark holds.
const gcMarkLife = 10 * time.Minute

// gcMark is the annotation's value.
type gcMark struct {
	ID      string          `json:"id"`
	Until   time.Time       `json:"until"`
	Digests []digest.Digest `json:"digests"`
}

// shared reports whether other processes may write the store's storage.
func (s *Store) shared() bool {
	e, ok := s.drv.(driver.Exclusive)
	return !ok || !e.Exclusive()
}

// newGCMark is a mark for removing blobs, or nil where none is needed.
func (s *Store) newGCMark(blobs []digest.Digest) *gcMark {
	if !s.shared() || len(blobs) == 0 {
		return nil
	}
	id := make([]byte, 8)
	rand.Read(id)
	return &gcMark{ID: hex.EncodeToString(id), Until: time.Now().Add(gcMarkLife), Digests: slices.Clone(blobs)}
}

// expiring reports whether too little of the mark's life is left to
// remove one more blob under it.
func (m *gcMark) expiring() bool {
	return m != nil && time.Until(m.Until) < gcMarkLife/4
}

// mark returns the index's live mark, if any.
func (x *repoIndex) mark() (*gcMark, bool) {
	v, ok := x.Annotations[AnnotationGCPending]
	if !ok {
		return nil, false
	}
	var m gcMark
	if json.Unmarshal([]byte(v), &m) != nil || time.Now().After(m.Until) {
		return nil, false
	}
	return &m, true
}

// setMark puts m in the index (nil clears it).
func (x *repoIndex) setMark(m *gcMark) {
	if m == nil {
		delete(x.Annotations, AnnotationGCPending)
		return
	}
	b, _ := json.Marshal(m)
	if x.Annotations == nil {
		x.Annotations = map[string]string{}
	}
	x.Annotations[AnnotationGCPending] = string(b)
}

// dropStaleMark removes a mark whose life is over, and reports whether it
// did.
func (x *repoIndex) dropStaleMark() bool {
	if _, ok := x.Annotations[AnnotationGCPending]; !ok {
		return false
	}
	if _, live := x.mark(); live {
		return false
	}
	x.setMark(nil)
	return true
}

// marked returns which of ds the index's live mark names.
func (x *repoIndex) marked(ds ...digest.Digest) []digest.Digest {
	m, ok := x.mark()
	if !ok {
		return nil
	}
	var out []digest.Digest
	for _, d := range ds {
		if slices.Contains(m.Digests, d) {
			out = append(out, d)
		}
	}
	return out
}

// clearMark removes the mark m from repo's index.json, if it is still
// there.
func (s *Store) clearMark(ctx context.Context, repo string, m *gcMark) {
	if m == nil {
		return
	}
	err := s.freeing(func() error {
		return s.updateIndex(ctx, repo, func(x *repoIndex, _ []byte) (bool, error) {
			cur, ok := x.mark()
			if !ok || cur.ID != m.ID {
				return x.dropStaleMark(), nil
			}
			x.setMark(nil)
			x.Annotations[AnnotationGCDone] = m.ID // setMark left the map
			return true, nil
		})
	})
	if err != nil {
		s.log.Warn("cannot clear the mark of a collection from index.json; pushes of its blobs are refused until it expires",
			"repo", repo, "expires", m.Until, "err", err)
	}
}

// checkNotMarked fails a manifest push whose blobs (or the manifest
// itself) a collection on another process is removing, and checks again,
// after reading the index x it will swap, that its blobs are there. On a
// local root it does nothing: the repository's lock orders the two.
func (s *Store) checkNotMarked(ctx context.Context, repo string, x *repoIndex, d digest.Digest, body []byte, m *manifestDoc) error {
	if !s.shared() {
		return nil
	}
	ds := []digest.Digest{d}
	for need := range m.requiredBlobs() {
		ds = append(ds, need.Digest)
	}
	if gone := x.marked(ds...); len(gone) > 0 {
		return fmt.Errorf("%w: %s is being removed by garbage collection; push it again", ErrManifestBlobUnknown, gone[0])
	}
	x.dropStaleMark()
	if _, err := s.drv.Stat(ctx, blobKey(repo, d)); driver.IsNotFound(err) {
		// Collected since it was written (nothing named it yet): again.
		if err := s.writeBlobBytes(ctx, repo, d, body); err != nil {
			return err
		}
	}
	return s.checkRequired(ctx, repo, m, false)
}

// stillWanted fails once blob d is in place in repo (pushed again, or
// mounted) if a collection on another process has marked it for removal:
// the client must not count on it, and retries.
func (s *Store) stillWanted(ctx context.Context, repo string, d digest.Digest) error {
	if !s.shared() {
		return nil
	}
	x, err := s.readIndex(ctx, repo)
	if err != nil {
		return nil // no index, no mark
	}
	if len(x.marked(d)) > 0 {
		return fmt.Errorf("%w: blob %s of %s is being removed by garbage collection; retry in a moment", ErrUnavailable, d, repo)
	}
	return nil
}
