package dedupe

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/driver"
)

// Placeholders: dedupe where keys cannot share an object (s3), in zot's
// layout. One key holds the content; every other key of the digest is a
// placeholder, an empty object, and the index says where the content is.
// zot loses content with it (zot#2625, zot#4061, zot#4062): it deletes the
// key that holds the content while placeholders still name it, trusts an
// empty index, and serves a placeholder as a blob of 0 bytes (zot#4427).
//
// Several processes (replicas on one bucket) place and remove keys of one
// digest at once, with nothing to lock across them but the index. So the
// index is the flag both sides raise and then read, as in Dekker's
// mutual exclusion, and it is written at once, not in the background:
//
//   - Place records the new placeholder, writes it, and then reads the
//     index again: the holder it chose must still be recorded. If not, the
//     caller stores the content itself.
//   - Retire forgets the key first and then reads the index: a holder
//     with placeholders and no other holder hands its content to one of
//     them (a server-side copy) before it goes, and checks afterwards that
//     the one it chose was not retired meanwhile.
//
// Whichever of two such calls reads second sees what the first wrote, so a
// placeholder whose holder goes is either seen by the remover (and given
// the content) or sees the remover (and gets the content from its own
// upload). Retire runs only while the index is complete (it was built
// from the whole storage, so a placeholder it does not list does not
// exist) and reachable; until then nothing that holds content is removed.

// ErrNotReady is returned by Retire while the index cannot be trusted to
// list every placeholder: unreachable, damaged, or not yet rebuilt from
// the storage. Nothing was removed.
var ErrNotReady = errors.New("the dedupe index is unreachable or not yet rebuilt from the storage")

// Placeholders reports whether this store dedupes with placeholders: its
// driver cannot give one object several keys.
func (d *Deduper) Placeholders() bool {
	_, ok := d.drv.(driver.Linker)
	return !ok
}

// IsPlaceholder reports whether info, the object at a key of dg, is a
// placeholder: empty, where dg is not the digest of nothing.
func IsPlaceholder(info driver.Info, dg digest.Digest) bool {
	return info.Size == 0 && dg != dg.Algorithm().FromBytes(nil)
}

// pathsNow reads the keys the index records for dg, without the ones this
// process has not written yet: only what other processes can see counts
// for the protocol.
func (d *Deduper) pathsNow(ctx context.Context, dg digest.Digest) ([]string, error) {
	if !d.health.usable() || d.damaged.Load() {
		return nil, ErrNotReady
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	keys, err := d.c.Paths(ctx, dg)
	if err != nil {
		d.failed("lookup", err)
		return nil, fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	d.health.up(d)
	return usable(d, dg, keys), nil
}

// applyNow writes one change to the index at once.
func (d *Deduper) applyNow(ctx context.Context, op cache.Op) error {
	if !d.health.usable() || d.damaged.Load() {
		return ErrNotReady
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	if err := d.c.Apply(ctx, []cache.Op{op}); err != nil {
		d.failed("write", err)
		return fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	d.health.up(d)
	return nil
}

// RecordNow records that key holds dg before it returns; where the index
// cannot take it now, it is recorded in the background.
func (d *Deduper) RecordNow(ctx context.Context, dg digest.Digest, key string) {
	if d.applyNow(ctx, cache.Op{Digest: dg, Path: key}) != nil {
		d.Record(dg, key)
	}
}

// completeNow reports whether the index says it is complete, and fails
// when it cannot tell.
func (d *Deduper) completeNow(ctx context.Context) error {
	if !d.health.usable() || d.damaged.Load() {
		return ErrNotReady
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	done, err := d.c.Complete(ctx)
	if err != nil {
		d.failed("complete", err)
		return fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	d.health.up(d)
	if !done {
		return ErrNotReady
	}
	return nil
}

// Holders returns the objects the index names for dg that hold content
// (not placeholders), in the index's order. Keys that are gone are
// dropped from the index on the way.
func (d *Deduper) Holders(ctx context.Context, dg digest.Digest) []driver.Info {
	var out []driver.Info
	for _, k := range d.Copies(ctx, dg) {
		info, err := d.drv.Stat(ctx, k)
		if driver.IsNotFound(err) {
			d.Forget(dg, k)
			continue
		}
		if err == nil && !IsPlaceholder(info, dg) {
			out = append(out, info)
		}
	}
	return out
}

// HolderNow is the copy of dg that Place would make dst a placeholder of
// now: one the index names as every process sees it, other than dst, of
// size bytes (any size where size is negative), that trusted accepts. ok
// is false where there is none, or the index cannot tell. Empty content
// has no holder: it is stored as it is.
func (d *Deduper) HolderNow(ctx context.Context, dg digest.Digest, size int64, dst string, trusted func(driver.Info) bool) (holder driver.Info, ok bool) {
	paths, err := d.pathsNow(ctx, dg)
	if err != nil {
		return driver.Info{}, false
	}
	for _, k := range paths {
		if k == dst {
			continue
		}
		info, err := d.drv.Stat(ctx, k)
		if err == nil && info.Size > 0 && !IsPlaceholder(info, dg) && (size < 0 || info.Size == size) && trusted(info) {
			return info, true
		}
	}
	return driver.Info{}, false
}

// Place makes dst a placeholder of a copy of dg, of size bytes, that the
// index names, and reports whether it did. trusted says whether a holder's
// content may be relied on (it was checked against dg). When Place reports
// false, dst may hold a placeholder it wrote and the caller must put the
// content at dst itself (or fail): that is the protocol's way out.
func (d *Deduper) Place(ctx context.Context, dg digest.Digest, size int64, dst string, trusted func(driver.Info) bool) (bool, error) {
	return d.place(ctx, dg, size, dst, trusted, false)
}

// ErrTaken: PlaceNew found an object at its key already.
var ErrTaken = errors.New("the key holds an object already")

// PlaceNew is Place for a caller that has no content to fall back on (it
// read the push and kept nothing): the placeholder is made only where
// there is no object at dst yet, for it must never replace content
// another process stored there meanwhile; there is one, it is ErrTaken.
func (d *Deduper) PlaceNew(ctx context.Context, dg digest.Digest, size int64, dst string, trusted func(driver.Info) bool) (bool, error) {
	return d.place(ctx, dg, size, dst, trusted, true)
}

func (d *Deduper) place(ctx context.Context, dg digest.Digest, size int64, dst string, trusted func(driver.Info) bool, onlyNew bool) (bool, error) {
	if size == 0 {
		return false, nil
	}
	holder, ok := d.HolderNow(ctx, dg, size, dst, trusted)
	if !ok {
		return false, nil // none, or no index: the content is stored whole
	}
	if d.applyNow(ctx, cache.Op{Digest: dg, Path: dst}) != nil {
		return false, nil
	}
	if onlyNew {
		if _, err := d.drv.ReplaceFile(ctx, dst, nil, ""); errors.Is(err, driver.ErrConflict) {
			return false, ErrTaken
		} else if err != nil {
			return false, err
		}
	} else if _, err := d.drv.WriteFile(ctx, dst, nil); err != nil {
		return false, err
	}
	again, err := d.pathsNow(ctx, dg)
	if err != nil || !slices.Contains(again, holder.Key) {
		return false, nil // the holder is being retired: dst gets the content
	}
	if cur, err := d.drv.Stat(ctx, holder.Key); err != nil || cur.Size != size {
		return false, nil
	}
	return true, nil
}

// maxHandOvers bounds how often Retire picks another placeholder when the
// one it gave the content to was retired meanwhile.
const maxHandOvers = 5

// Retire removes the object at key, one of dg's, without losing content
// that placeholders elsewhere name: see the top of this file. It runs only
// while the index is complete and reachable (else ErrNotReady, and nothing
// is removed). copied is called when the content was copied to another key
// (so the caller can note it is checked content).
func (d *Deduper) Retire(ctx context.Context, dg digest.Digest, key string, copied func(dst string)) error {
	err := d.completeNow(ctx)
	if errors.Is(err, ErrNotReady) && d.awaitPass(ctx) {
		err = d.completeNow(ctx)
	}
	if err != nil {
		return err
	}
	if err := d.applyNow(ctx, cache.Op{Digest: dg, Path: key, Remove: true}); err != nil {
		return err
	}
	info, err := d.drv.Stat(ctx, key)
	if driver.IsNotFound(err) {
		return nil
	}
	if err != nil {
		d.Record(dg, key)
		return err
	}
	if IsPlaceholder(info, dg) {
		return d.drv.Delete(ctx, key)
	}
	for range maxHandOvers {
		target, held, err := d.heir(ctx, dg, key)
		if err != nil {
			d.Record(dg, key) // it still holds the content: keep it known
			return err
		}
		if held || target == "" {
			return d.drv.Delete(ctx, key)
		}
		if err := d.drv.Copy(ctx, key, target); err != nil {
			d.Record(dg, key)
			return fmt.Errorf("hand the content of %s to %s: %w", key, target, err)
		}
		if copied != nil {
			copied(target)
		}
		again, err := d.pathsNow(ctx, dg)
		if err != nil {
			d.Record(dg, key)
			return err
		}
		if slices.Contains(again, target) {
			d.log.Info("dedupe: the content of a removed blob moved to a placeholder that names it", "digest", dg, "from", key, "to", target)
			return d.drv.Delete(ctx, key)
		}
		// target was retired while it got the content: another one.
	}
	d.Record(dg, key)
	return fmt.Errorf("dedupe: %s keeps its content: the placeholders naming it kept going away", key)
}

// heir looks, after key was forgotten, for what keeps dg's content when
// key goes: held is true when another key holds it already; else target
// is a placeholder to give it to ("" when none is left). The index must
// still be complete after the read, or a placeholder it lost may exist.
func (d *Deduper) heir(ctx context.Context, dg digest.Digest, key string) (target string, held bool, err error) {
	paths, err := d.pathsNow(ctx, dg)
	if err != nil {
		return "", false, err
	}
	if err := d.completeNow(ctx); err != nil {
		return "", false, err
	}
	for _, k := range paths {
		if k == key {
			continue
		}
		info, err := d.drv.Stat(ctx, k)
		switch {
		case driver.IsNotFound(err):
			continue
		case err != nil:
			return "", false, err
		case !IsPlaceholder(info, dg):
			return "", true, nil
		case target == "":
			target = k
		}
	}
	return target, false, nil
}

// usable keeps the keys of dg that are safe to use: the index is input
// too (a zot root's cache comes with it), and only a key that ends in this
// digest's blobs/<alg>/<hex> is ever used.
func usable(d *Deduper, dg digest.Digest, keys []string) []string {
	suffix := "/blobs/" + dg.Algorithm().String() + "/" + dg.Encoded()
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !driver.ValidKey(k) || !strings.HasSuffix(k, suffix) {
			d.log.Warn("dedupe cache names an unusable path; ignoring it", "digest", dg, "path", k)
			continue
		}
		out = append(out, k)
	}
	return out
}
