package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
)

// A monolithic push (POST ?digest=, or a PUT ?digest= with the whole body
// on an empty upload) names its blob before its bytes arrive. Where the
// driver's Commit copies an upload (s3: no rename), such a push is written
// straight to the blob's key (driver.Placer), unseen there until its
// digest is checked: its bytes are written once instead of two or three
// times. Anything else the commit would judge (a blob already there, one
// held elsewhere for a placeholder) takes the upload's way.

// Sized is a push's body whose length is known before it is read (the
// request's Content-Length). A monolithic push of one is held to the
// quotas before its first byte is read, and the driver may write it as
// one object as it comes (s3: one PutObject, no parts to join).
type Sized struct {
	io.Reader
	Size int64
}

// placeOpened writes the push r to blob d of the opened upload's
// repository when that way applies, and reports whether it took it; when
// it did not, nothing was read from r. The upload, empty, is removed
// when the blob is in; a push that fails leaves it empty, for the client
// to send again.
func (s *Store) placeOpened(ctx context.Context, o *openedUpload, r io.Reader, d digest.Digest) (BlobInfo, bool, error) {
	p, ok := s.drv.(driver.Placer)
	if !ok || r == nil || o.w.Size() != 0 || o.session.hashed != 0 || d.Algorithm() != digest.SHA256 {
		return BlobInfo{}, false, nil
	}
	dst := blobKey(o.repo, d)
	if _, err := s.drv.Stat(ctx, dst); !driver.IsNotFound(err) {
		return BlobInfo{}, false, nil // there already (or cannot tell): the commit judges it
	}
	// Held elsewhere: a placeholder, not a second copy, and nothing of the
	// body written. The index only, as commitBlob's placeBlob asks it:
	// Store.holder walks every repository when the index does not know
	// the content, which a new blob's is not.
	want := driver.Expected{Size: -1}
	if b, ok := r.(Sized); ok && b.Size >= 0 {
		want = driver.Expected{Size: b.Size, SHA256: sha256Of(d)}
		if err := s.admitBlob(ctx, o.repo, d, b.Size); err != nil {
			s.refuseUpload(o)
			return BlobInfo{}, true, err
		}
	}
	if s.placeholders && s.dedupe != nil {
		// Only a holder the index names now, as placeBlob will ask it,
		// and known sound: without an index to place with, or with a
		// holder that rotted, the body would be read and thrown away for
		// a placeholder refused, on every retry.
		if _, ok := s.dedupe.HolderNow(ctx, d, want.Size, dst, func(h driver.Info) bool { return s.checkedHolder(ctx, h, d) }); ok {
			info, err := s.placeHeld(ctx, o, r, d)
			return info, true, err
		}
		if len(s.dedupe.Holders(ctx, d)) > 0 {
			return BlobInfo{}, false, nil // the commit judges it
		}
	}
	done := s.placing.add(dst)
	defer done()
	w, err := p.Place(ctx, dst, want)
	if err != nil {
		o.w.Close()
		return BlobInfo{}, true, fromDriver(err, nil, "write blob %s", d)
	}
	start := time.Now()
	info, err := s.placeBody(ctx, o, w, r, d)
	if err != nil {
		w.Abort()
		o.w.Close() // ended whatever happens, as commitOpened ends it; after a Cancel a no-op
		o.session.sha.Reset()
		o.session.hashed = 0 // the upload is still empty
		return info, true, err
	}
	if time.Since(start) > placeRefreshAfter {
		// S3 dates an object made by a multipart upload from the upload's
		// start: after a long push the blob would look as old as the push,
		// and its manifest would have that much less of gcDelay to come.
		s.refresh(ctx, blobKey(o.repo, d), d)
	}
	return info, true, nil
}

// placeBody streams r into w, checks its digest and, when the blob is
// admitted, finishes w and ends the upload.
func (s *Store) placeBody(ctx context.Context, o *openedUpload, w driver.PlaceWriter, r io.Reader, d digest.Digest) (BlobInfo, error) {
	if err := appendUpload(o.session, w, r); err != nil {
		return BlobInfo{}, err
	}
	size := w.Size()
	if err := s.admitPlaced(ctx, o, digest.NewDigest(digest.SHA256, o.session.sha), d, size); err != nil {
		return BlobInfo{}, err
	}
	dst := blobKey(o.repo, d)
	defer s.lockNewBlob(o.repo, dst)()
	if s.wholeAt(ctx, dst, d, size) {
		// Another push of the same content (another client, another
		// replica) put it there meanwhile: blobs are immutable, keep it.
		w.Abort()
		s.refresh(ctx, dst, d)
	} else if placed, err := s.placeBlob(ctx, d, size, dst); err == nil && placed {
		// A push of the same content to another repository finished
		// while this one streamed (the holder was looked for before its
		// first byte): this key becomes a placeholder of it, as
		// commitBlob would make it, not a second copy.
		w.Abort()
	} else {
		if err := w.Finish(ctx); err != nil {
			return BlobInfo{}, fromDriver(err, nil, "commit blob %s", d)
		}
		s.stored(ctx, o.repo, d, size, dst)
	}
	return s.placedIn(ctx, o, d, size, "blob placed")
}

// admitPlaced checks a placed push's content (got) against d and its size
// against the quotas; a refusal ends the upload.
func (s *Store) admitPlaced(ctx context.Context, o *openedUpload, got, d digest.Digest, size int64) error {
	if got != d {
		return s.rejectMismatch(ctx, o, got, d)
	}
	if err := s.admitBlob(ctx, o.repo, d, size); err != nil {
		s.refuseUpload(o)
		return err
	}
	return nil
}

// lockNewBlob takes the locks a blob pushed to repo is decided under,
// and returns their release: the repository's, shared (a collection takes
// it alone), and the blob key's own (lockBlobKey).
func (s *Store) lockNewBlob(repo, dst string) (unlock func()) {
	unlockRepo := s.locks.RLock(repo)
	unlockBlob := s.lockBlobKey(dst)
	return func() { unlockBlob(); unlockRepo() }
}

// lockBlobKey serialises the pushes and mounts that decide what the blob
// key dst holds.
func (s *Store) lockBlobKey(dst string) (unlock func()) {
	return s.locks.Lock("\x00blob " + dst)
}

// wholeAt reports whether dst holds d whole, size bytes and not a
// placeholder: another push (another client, another replica) put it
// there.
func (s *Store) wholeAt(ctx context.Context, dst string, d digest.Digest, size int64) bool {
	info, err := s.drv.Stat(ctx, dst)
	return err == nil && !dedupe.IsPlaceholder(info, d) && info.Size == size
}

// placedIn ends a placed push whose blob is in: its upload goes, and the
// blob is checked still wanted (not being collected).
func (s *Store) placedIn(ctx context.Context, o *openedUpload, d digest.Digest, size int64, what string) (BlobInfo, error) {
	s.uploads.drop(o.key)
	if err := o.w.Cancel(ctx); err != nil {
		s.log.Warn("cannot remove an upload after placing its blob", "repo", o.repo, "upload", o.id, "err", err)
	}
	if err := s.stillWanted(ctx, o.repo, d); err != nil {
		return BlobInfo{}, err
	}
	s.log.Debug(what, "repo", o.repo, "digest", d, "bytes", size)
	return BlobInfo{Digest: d, Size: size}, nil
}

// placeHeld takes a push of content another key holds already: the body
// is hashed as it comes and written nowhere, and the blob's key becomes a
// placeholder of the holder, as the commit of an upload would make it.
// Should the holder be gone by then, the push failed (retryable, 503):
// its bytes are not kept, and the upload is left empty for the client to
// send again, when it is stored whole.
func (s *Store) placeHeld(ctx context.Context, o *openedUpload, r io.Reader, d digest.Digest) (BlobInfo, error) {
	h := d.Algorithm().Hash()
	size, err := io.Copy(h, ctxReader{ctx, r})
	if err != nil {
		o.w.Close()
		if ctx.Err() != nil {
			return BlobInfo{}, ctx.Err()
		}
		return BlobInfo{}, fmt.Errorf("%w: reading the request body: %v", ErrUploadInvalid, err)
	}
	if err := s.admitPlaced(ctx, o, digest.NewDigest(d.Algorithm(), h), d, size); err != nil {
		return BlobInfo{}, err
	}
	dst := blobKey(o.repo, d)
	defer s.lockNewBlob(o.repo, dst)()
	if s.wholeAt(ctx, dst, d, size) {
		s.refresh(ctx, dst, d) // pushed meanwhile, whole: keep it
		return s.placedIn(ctx, o, d, size, "blob placed")
	}
	// Only where nothing is at the key: another replica may have stored
	// the content whole there meanwhile, and a placeholder written over it
	// would name a holder that may be gone.
	placed, err := s.dedupe.PlaceNew(ctx, d, size, dst, func(h driver.Info) bool { return s.checkedHolder(ctx, h, d) })
	switch {
	case errors.Is(err, dedupe.ErrTaken) && s.wholeAt(ctx, dst, d, size):
		s.refresh(ctx, dst, d)
	case err != nil && !errors.Is(err, dedupe.ErrTaken):
		o.w.Close()
		return BlobInfo{}, fromDriver(err, nil, "place blob %s", d)
	case !placed:
		// The holder went (or the key holds what this push cannot vouch
		// for). A placeholder this wrote is left: the retry's commit
		// finds it empty of content and stores the blob whole.
		o.w.Close()
		return BlobInfo{}, fmt.Errorf("%w: the copy of %s this push was to share went away while it was sent; push it again", ErrUnavailable, d)
	}
	return s.placedIn(ctx, o, d, size, "blob placed as a placeholder, its bytes read and not written")
}

// placeRefreshAfter is how long a placed push may take before its blob's
// time is set anew once it is in (see placeOpened).
const placeRefreshAfter = 5 * time.Minute

// placingKeys counts the pushes writing to each blob key, so that a sweep
// of unfinished writes spares theirs.
type placingKeys struct {
	mu   sync.Mutex
	keys map[string]int
}

func (p *placingKeys) add(key string) (done func()) {
	p.mu.Lock()
	p.keys[key]++
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		if p.keys[key]--; p.keys[key] <= 0 {
			delete(p.keys, key)
		}
		p.mu.Unlock()
	}
}

func (p *placingKeys) has(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[key] > 0
}

// unfinishedWriteAge is the least age of an unfinished write a sweep
// removes, whatever gcDelay says: a push is written for as long as its
// client sends (an hour is a slow 1 GiB), and another replica's pushes
// are not counted in placing.
const unfinishedWriteAge = time.Hour

// sweepUnfinished removes the writes to repo's keys that a process died
// in (driver.Sweeper), older than delay and unfinishedWriteAge.
func (s *Store) sweepUnfinished(ctx context.Context, repo string, delay time.Duration, now time.Time) int {
	sw, ok := s.drv.(driver.Sweeper)
	if !ok {
		return 0
	}
	n, err := sw.Sweep(ctx, repo+"/blobs", now.Add(-max(delay, unfinishedWriteAge)), s.placing.has)
	if err != nil {
		s.log.Warn("cannot sweep unfinished writes", "repo", repo, "err", err)
	}
	return n
}

// sha256Of is the sum a sha256 digest names.
func sha256Of(d digest.Digest) []byte {
	sum, err := hex.DecodeString(d.Encoded())
	if err != nil || len(sum) != sha256.Size {
		return nil
	}
	return sum
}
