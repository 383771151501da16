package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/layout"
	"github.com/pier-oci/pier/store/oci"
)

// On a driver whose keys cannot share an object (s3), a blob may be a
// placeholder: an empty object whose content is held under another
// repository's key of the same digest, as zot's dedupe leaves them
// (store/dedupe/placeholder.go has the protocol). This file is where the
// store meets them: every read of a blob's content goes through content,
// every removal of a blob through removeBlobs. On a local root (hard
// links) neither changes anything.

// content is the object that holds blob d of repo: its own key, or, for a
// placeholder, the key elsewhere that holds the content. A placeholder
// whose content cannot be found is ErrBlobUnknown, never a blob of 0 bytes.
func (s *Store) content(ctx context.Context, repo string, d digest.Digest) (driver.Info, error) {
	info, err := s.drv.Stat(ctx, blobKey(repo, d))
	if err != nil {
		return driver.Info{}, fromDriver(err, ErrBlobUnknown, "%s in %s", d, repo)
	}
	if !s.placeholders || !dedupe.IsPlaceholder(info, d) {
		return info, nil
	}
	h, err := s.holder(ctx, d)
	if err != nil {
		return driver.Info{}, fmt.Errorf("%w: %s in %s is a placeholder whose content is nowhere in the store: %v", ErrBlobUnknown, d, repo, err)
	}
	return h, nil
}

// holder finds an object that holds d's content: the one found last time,
// else the index's, else by looking in every repository (the index may be
// empty, lost, or zot's).
func (s *Store) holder(ctx context.Context, d digest.Digest) (driver.Info, error) {
	if k := s.memo.get(d); k != "" {
		if info, err := s.drv.Stat(ctx, k); err == nil && !dedupe.IsPlaceholder(info, d) {
			return info, nil
		}
		s.memo.forget(d)
	}
	if s.dedupe != nil {
		if hs := s.dedupe.Holders(ctx, d); len(hs) > 0 {
			s.memo.put(d, hs[0].Key)
			return hs[0], nil
		}
	}
	if s.memo.missed(d) {
		return driver.Info{}, ErrBlobUnknown
	}
	// Twice: content moving from a removed key to a placeholder may pass
	// between the two looks of one listing.
	for range 2 {
		repos, err := s.Repositories(ctx)
		if err != nil {
			return driver.Info{}, err
		}
		for _, r := range repos {
			key := blobKey(r, d)
			if info, err := s.drv.Stat(ctx, key); err == nil && !dedupe.IsPlaceholder(info, d) {
				s.memo.put(d, key)
				if s.dedupe != nil {
					s.dedupe.Record(d, key)
				}
				return info, nil
			}
		}
	}
	s.memo.miss(d)
	return driver.Info{}, ErrBlobUnknown
}

// doomedBlob is a blob to remove.
type doomedBlob struct {
	digest digest.Digest
	key    string
}

// removeBlobs removes blobs and reports how many went. Locally they are
// deleted, and forgotten by the index in the background. Where blobs may
// be placeholders, each goes through the dedupe protocol, so that content
// a placeholder elsewhere names is handed to it first; while the index
// cannot be trusted, nothing is removed (ErrUnavailable). The caller holds
// the locks of the blobs' repositories.
func (s *Store) removeBlobs(ctx context.Context, blobs []doomedBlob) (int, error) {
	if len(blobs) == 0 {
		return 0, nil
	}
	if !s.placeholders {
		keys := make([]string, len(blobs))
		for i, b := range blobs {
			keys[i] = b.key
		}
		if err := s.drv.Delete(ctx, keys...); err != nil {
			return 0, err
		}
		if s.dedupe != nil {
			for _, b := range blobs {
				s.dedupe.Forget(b.digest, b.key)
			}
		}
		return len(blobs), nil
	}
	var heirs *heirScan
	for i, b := range blobs {
		var err error
		if s.dedupe != nil {
			err = s.dedupe.Retire(ctx, b.digest, b.key, func(dst string) { s.copiedChecked(ctx, b.key, dst, b.digest) })
		} else {
			if heirs == nil {
				heirs = &heirScan{}
			}
			err = s.removeWithoutIndex(ctx, b, heirs)
		}
		if errors.Is(err, dedupe.ErrNotReady) {
			return i, fmt.Errorf("%w: %v; blobs are kept until it is", ErrUnavailable, err)
		}
		if err != nil {
			return i, err
		}
		s.memo.forget(b.digest)
	}
	return len(blobs), nil
}

// heirScan is the repositories listed once for a batch of removals
// without an index.
type heirScan struct{ repos []string }

// removeWithoutIndex removes a blob on a placeholder store without a
// dedupe index (dedupe off over a bucket zot deduped): content is handed
// to a placeholder found by looking in every repository.
func (s *Store) removeWithoutIndex(ctx context.Context, b doomedBlob, h *heirScan) error {
	info, err := s.drv.Stat(ctx, b.key)
	if driver.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !dedupe.IsPlaceholder(info, b.digest) {
		if h.repos == nil {
			if h.repos, err = s.Repositories(ctx); err != nil {
				return err
			}
		}
		for _, r := range h.repos {
			k := blobKey(r, b.digest)
			if k == b.key {
				continue
			}
			other, err := s.drv.Stat(ctx, k)
			if err != nil {
				continue
			}
			if !dedupe.IsPlaceholder(other, b.digest) {
				break // another copy holds the content
			}
			if err := s.drv.Copy(ctx, b.key, k); err != nil {
				return fmt.Errorf("hand the content of %s to %s: %w", b.key, k, err)
			}
			s.copiedChecked(ctx, b.key, k, b.digest)
			break
		}
	}
	return s.drv.Delete(ctx, b.key)
}

// copiedChecked notes that dst is a copy of src: checked content if src
// was.
func (s *Store) copiedChecked(ctx context.Context, src, dst string, d digest.Digest) {
	if from, err := s.drv.Stat(ctx, src); err == nil && s.verified.has(from.Content, d) {
		if to, err := s.drv.Stat(ctx, dst); err == nil {
			s.verified.add(to.Content, d)
		}
	}
}

// placeBlob makes dst, a key of d, a placeholder of a copy already in the
// store with size bytes, where the store dedupes with placeholders, and
// reports whether it did. When it reports false, dst may be a placeholder
// already: the caller must store the content there.
func (s *Store) placeBlob(ctx context.Context, d digest.Digest, size int64, dst string) (bool, error) {
	if !s.placeholders || s.dedupe == nil {
		return false, nil
	}
	return s.dedupe.Place(ctx, d, size, dst, func(h driver.Info) bool { return s.checkedHolder(ctx, h, d) })
}

// checkedHolder reports whether the object h holds d, checking it now if
// it never was: a placeholder must not lead to content that rotted.
func (s *Store) checkedHolder(ctx context.Context, h driver.Info, d digest.Digest) bool {
	if s.verified.has(h.Content, d) {
		return true
	}
	f, _, err := s.drv.Open(ctx, h.Key)
	if err != nil {
		return false
	}
	defer f.Close()
	got, err := d.Algorithm().FromReader(ctxReader{ctx, f})
	if err != nil || got != d {
		if err == nil {
			s.log.Warn("dedupe: a copy named by the index does not match its digest; not deduping against it", "digest", d, "key", h.Key)
		}
		return false
	}
	s.verified.add(h.Content, d)
	return true
}

// holderMemo remembers where placeholders' content was found, and which
// digests had none a moment ago, so that reads of a placeholder cost a
// stat, and a client asking again and again for a lost one does not
// make the store look in every repository each time.
type holderMemo struct {
	mu     sync.Mutex
	at     map[digest.Digest]string
	misses map[digest.Digest]time.Time
}

const (
	maxMemo  = 4096
	missTime = 5 * time.Second
)

func (m *holderMemo) get(d digest.Digest) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.at[d]
}

func (m *holderMemo) put(d digest.Digest, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at == nil || len(m.at) >= maxMemo {
		m.at = map[digest.Digest]string{}
	}
	m.at[d] = key
	delete(m.misses, d)
}

func (m *holderMemo) forget(d digest.Digest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.at, d)
}

func (m *holderMemo) miss(d digest.Digest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.misses == nil || len(m.misses) >= maxMemo {
		m.misses = map[digest.Digest]time.Time{}
	}
	m.misses[d] = time.Now()
}

func (m *holderMemo) missed(d digest.Digest) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.misses[d]
	return ok && time.Since(t) < missTime
}

// repoOfKey is the repository of a blob key, "" when it is none.
func repoOfKey(key string) string {
	repo := layout.RepoOfBlob(key)
	if oci.ValidateName(repo) != nil {
		return ""
	}
	return repo
}
