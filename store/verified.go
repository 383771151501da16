package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
)

// pier never hands out a blob's bytes under a digest they were not checked
// against at least once. A blob pushed through pier is checked on its way
// in; one that arrived otherwise (a layout copied onto the card, a bucket
// another tool filled) is checked the first time it is served, or by
// scrub. What was checked is remembered by the object's Content identity
// (locally device, inode, size and mtime; the ETag on s3), which moves
// whenever its bytes may have (a write sets the mtime), but not when
// another name of it is made or removed (dedupe links, a delete in another
// repository), so a file replaced or rewritten after its check is checked
// again and one merely shared is not. The set is kept in the root
// (.pier/verified) so that a restart does not re-read every blob; losing
// it costs one more read of each blob, never a wrong byte. Manifests are
// not in it: they are small, and checked on every read.

// verifiedFile is the state file of the set.
const verifiedFile = "verified"

// maxVerified bounds the set (about 40 bytes an entry in memory); past
// it, half is forgotten, to be checked again when next served.
const maxVerified = 500_000

// verifiedKey stands for "the object at this version holds this digest":
// 128 bits of a hash of both, so that a store of many blobs costs little
// memory (a scrub of the whole store adds every blob).
type verifiedKey [16]byte

func keyOf(version string, d digest.Digest) verifiedKey {
	h := sha256.New()
	io.WriteString(h, version)
	io.WriteString(h, "@")
	io.WriteString(h, string(d))
	var k verifiedKey
	copy(k[:], h.Sum(nil))
	return k
}

type verifiedSet struct {
	mu    sync.Mutex
	seen  map[verifiedKey]struct{}
	dirty bool
}

func (v *verifiedSet) has(version string, d digest.Digest) bool {
	if version == "" {
		return false
	}
	k := keyOf(version, d)
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.seen[k]
	return ok
}

// add records that the object at version holds d.
func (v *verifiedSet) add(version string, d digest.Digest) {
	if version == "" {
		return
	}
	k := keyOf(version, d)
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[k]; ok {
		return
	}
	if len(v.seen) >= maxVerified {
		n := 0
		for old := range v.seen { // map order: a random half
			if n++; n > maxVerified/2 {
				break
			}
			delete(v.seen, old)
		}
	}
	v.seen[k] = struct{}{}
	v.dirty = true
}

// loadVerified reads the set kept in the root; a missing or damaged file
// is an empty set.
func loadVerified(ctx context.Context, drv driver.Driver, log *slog.Logger) *verifiedSet {
	v := &verifiedSet{seen: map[verifiedKey]struct{}{}}
	b, _, err := drv.ReadFile(ctx, stateKey(verifiedFile), 64<<20)
	if err != nil {
		if !driver.IsNotFound(err) {
			log.Warn("cannot read the record of verified blobs; blobs are checked again as they are served", "err", err)
		}
		return v
	}
	for len(b) >= 2*len(verifiedKey{})+1 {
		var k verifiedKey
		if _, err := hex.Decode(k[:], b[:2*len(k)]); err == nil && b[2*len(k)] == '\n' {
			v.seen[k] = struct{}{}
		}
		b = b[2*len(k)+1:]
	}
	return v
}

// save writes the set to the root if it changed since the last save.
func (v *verifiedSet) save(ctx context.Context, drv driver.Driver, log *slog.Logger) {
	v.mu.Lock()
	if !v.dirty {
		v.mu.Unlock()
		return
	}
	buf := make([]byte, 0, len(v.seen)*(2*len(verifiedKey{})+1))
	for k := range v.seen {
		buf = hex.AppendEncode(buf, k[:])
		buf = append(buf, '\n')
	}
	v.dirty = false
	v.mu.Unlock()
	if _, err := drv.WriteFile(ctx, stateKey(verifiedFile), buf); err != nil {
		log.Warn("cannot keep the record of verified blobs", "err", err)
		v.mu.Lock()
		v.dirty = true
		v.mu.Unlock()
	}
}

// ensureVerified checks the open blob f (at info) against d unless that
// version was checked before, and leaves f at its start. Concurrent first
// reads of one blob share one check.
func (s *Store) ensureVerified(ctx context.Context, repo string, d digest.Digest, f io.ReadSeeker, info driver.Info) error {
	if s.verified.has(info.Content, d) {
		return nil
	}
	unlock := s.locks.Lock("\x00verify " + info.Content)
	defer unlock()
	if s.verified.has(info.Content, d) {
		return nil
	}
	s.log.Info("checking a blob against its digest before serving it for the first time", "repo", repo, "digest", d, "bytes", info.Size)
	h := d.Algorithm().Hash()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return fromDriver(err, ErrBlobUnknown, "check blob %s in %s", d, repo)
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		s.log.Error("blob does not match its digest; not serving it (pier scrub quarantines it)", "repo", repo, "digest", d, "actual", got)
		return fmt.Errorf("%w: %s in %s does not match its digest on the storage", ErrBlobUnknown, d, repo)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("check blob %s in %s: %w", d, repo, err)
	}
	s.verified.add(info.Content, d)
	return nil
}

// ctxReader stops a long read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
