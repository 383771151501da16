package dedupe

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/layout"
	"github.com/pier-oci/pier/store/oci"
)

// Stats counts what one pass over the store did.
type Stats struct {
	Repos         int
	Blobs         int
	Recorded      int   // keys newly entered in the index
	Unrecorded    int   // keys the index could not take (down, damaged)
	AlreadyLinked int   // keys already sharing an object with another copy
	Linked        int   // duplicates replaced by a link
	BytesFreed    int64 // by those links
	Took          time.Duration
}

// Run keeps the index in step with the store until ctx ends: one pass
// when pier starts (it picks up layouts copied in while pier was off, and
// fills a new or emptied index), then another whenever the index was
// damaged (replaced first, where it can be), lost changes during an
// outage or from a full queue, or is found no longer complete (a Redis
// FLUSHALL). A pass that recorded everything marks the index complete; a
// transient outage costs no pass by itself. Watch picks up what arrives
// meanwhile. Between those it sleeps on a channel, never polling.
func (d *Deduper) Run(ctx context.Context) {
	if c, ok := d.c.(interface{ Check() error }); ok {
		if err := c.Check(); err != nil {
			d.failed("check", err)
		}
	}
	go d.Watch(ctx)
	check := time.NewTicker(completeCheckInterval)
	defer check.Stop()
	for {
		d.replaceIfDamaged()
		if dropped := d.health.passBegins(); dropped > 0 {
			d.log.Warn("dedupe index writes fell behind; a pass over the storage records the changes dropped", "dropped", dropped)
		}
		stats, err := d.Pass(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Error("dedupe pass failed", "err", err)
		} else if err == nil {
			d.log.Info("dedupe pass done", "repos", stats.Repos, "blobs", stats.Blobs, "recorded", stats.Recorded,
				"unrecorded", stats.Unrecorded, "linked", stats.Linked, "already_linked", stats.AlreadyLinked,
				"bytes_freed", stats.BytesFreed, "took", stats.Took)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.kick:
				break wait
			case <-check.C:
				if !d.complete(ctx) {
					d.log.Warn("dedupe index is not complete (emptied, or new); rebuilding it from the storage")
					break wait
				}
			}
		}
	}
}

// Pass is Reconcile, and, when it recorded everything into an index that
// was not emptied meanwhile, marks the index complete.
func (d *Deduper) Pass(ctx context.Context) (Stats, error) {
	end := make(chan struct{})
	d.passMu.Lock()
	d.passEnd = end
	d.passMu.Unlock()
	defer func() {
		d.passMu.Lock()
		d.passEnd = nil
		d.passMu.Unlock()
		close(end)
	}()
	witness := d.placeWitness(ctx)
	stats, err := d.Reconcile(ctx)
	if err == nil && stats.Unrecorded == 0 && d.witnessSurvived(ctx, witness) {
		d.markComplete(ctx)
	}
	return stats, err
}

// passWait bounds how long a removal waits for the pass under way to
// make the index complete (at start, a new or emptied index), rather than
// be refused at once: a new bucket's pass is over in moments, and a blob
// deleted in them need not fail.
const passWait = 10 * time.Second

// awaitPass waits, for passWait at most, for the pass under way to end,
// and reports whether one did.
func (d *Deduper) awaitPass(ctx context.Context) bool {
	d.passMu.Lock()
	end := d.passEnd
	d.passMu.Unlock()
	if end == nil {
		return false
	}
	t := time.NewTimer(passWait)
	defer t.Stop()
	select {
	case <-end:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// witnessDigest is the digest of the witness entries of passes: no blob's
// (it is the hash of a fixed phrase, not of a layer anyone pushes).
var witnessDigest = digest.FromString("pier: dedupe pass witness")

// placeWitness records an entry that a pass checks at its end. An index
// emptied during the pass (a FLUSHALL, a server restarted without its
// data) loses it with the keys the pass recorded before; marking that
// index complete would let removals trust entries it no longer has. It
// returns "" when the index cannot take it.
func (d *Deduper) placeWitness(ctx context.Context) string {
	if !d.health.usable() {
		return ""
	}
	path := ".pier/dedupe-pass/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	if err := d.c.Apply(ctx, []cache.Op{{Digest: witnessDigest, Path: path}}); err != nil {
		d.failed("pass witness", err)
		return ""
	}
	return path
}

// witnessSurvived reports whether the pass's witness is still in the
// index, and removes it.
func (d *Deduper) witnessSurvived(ctx context.Context, path string) bool {
	if path == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	paths, err := d.c.Paths(ctx, witnessDigest)
	if err != nil {
		d.failed("pass witness", err)
		return false
	}
	d.c.Apply(ctx, []cache.Op{{Digest: witnessDigest, Path: path, Remove: true}})
	if !slices.Contains(paths, path) {
		d.log.Warn("dedupe index was emptied during the pass; passing again")
		return false
	}
	return true
}

// resumeState is the state file that holds where an interrupted pass
// stopped.
const resumeState = "dedupe-resume"

// Reconcile walks every blob of the store once, in repository order: it
// records each key in the index, and replaces a duplicate that is a
// separate copy by a link to the other. Objects already linked are only
// stat'ed: no write, no change of their times. An interrupted pass
// resumes where it stopped, then wraps around to cover the repositories
// before that point.
func (d *Deduper) Reconcile(ctx context.Context) (Stats, error) {
	var st Stats
	start := time.Now()
	repos, err := d.repos.Repositories(ctx)
	if err != nil {
		return st, err
	}
	if resume := d.readResume(ctx); resume != "" {
		i, _ := slices.BinarySearch(repos, resume)
		repos = append(repos[i:], repos[:i]...)
	}
	saved := time.Now()
	for _, repo := range repos {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := d.reconcileRepo(ctx, repo, &st); err != nil {
			d.log.Warn("dedupe pass: skipping repository", "repo", repo, "err", err)
		}
		st.Repos++
		if time.Since(saved) > 2*time.Second {
			d.repos.WriteState(ctx, resumeState, []byte(repo+"\n"))
			saved = time.Now()
		}
	}
	d.repos.WriteState(ctx, resumeState, nil)
	st.Took = time.Since(start)
	return st, nil
}

func (d *Deduper) readResume(ctx context.Context) string {
	b, err := d.repos.ReadState(ctx, resumeState)
	if err != nil {
		return ""
	}
	repo := strings.TrimSpace(string(b))
	if oci.ValidateName(repo) != nil {
		return ""
	}
	return repo
}

// reconcileRepo dedupes the blobs of one repository; the keys new to the
// index are written in one batch.
func (d *Deduper) reconcileRepo(ctx context.Context, repo string, st *Stats) error {
	blobs, err := layout.ListBlobs(ctx, d.drv, repo)
	if err != nil {
		return err
	}
	var fresh []cache.Op
	for _, b := range blobs {
		st.Blobs++
		if d.reconcileBlob(ctx, repo, b.Digest, b.Info, st) {
			fresh = append(fresh, cache.Op{Digest: b.Digest, Path: b.Info.Key})
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if !d.health.usable() || d.damaged.Load() {
		st.Unrecorded += len(fresh)
		d.health.lost()
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, writeTimeout)
	err = d.c.Apply(actx, fresh)
	cancel()
	if err != nil {
		st.Unrecorded += len(fresh)
		d.failed("rebuild", err)
		d.health.lost()
		return err
	}
	d.health.up(d)
	st.Recorded += len(fresh)
	return nil
}

// reconcileBlob handles one blob and reports whether its key must be
// recorded in the index.
func (d *Deduper) reconcileBlob(ctx context.Context, repo string, dg digest.Digest, info driver.Info, st *Stats) bool {
	copies := d.Copies(ctx, dg)
	known := slices.Contains(copies, info.Key)
	if d.Placeholders() {
		// Keys cannot share an object here: the pass records what it
		// finds (holders and placeholders alike) and changes nothing.
		return !known
	}
	other, oinfo := d.firstValid(ctx, dg, info.Size, info.Key, copies)
	if other == "" || driver.SameObject(info, oinfo) {
		if other != "" {
			st.AlreadyLinked++
		}
		return !known
	}
	if d.linkDuplicate(ctx, repo, dg, info, oinfo) {
		st.Linked++
		st.BytesFreed += info.Size
	}
	return !known
}

// linkDuplicate makes two separate copies of dg (info and other) one
// object. Before it replaces a copy it checks the content it keeps:
// linking to a copy that rotted would spread the damage, so the copy that
// still matches its digest wins. The decision is made without locks, so
// under the lock of the repository it writes to it checks that both are
// still the objects it decided on: a blob deleted (or collected) meanwhile
// must stay deleted.
func (d *Deduper) linkDuplicate(ctx context.Context, repo string, dg digest.Digest, info, other driver.Info) bool {
	l, ok := d.drv.(driver.Linker)
	if !ok {
		return false
	}
	keep, replace, replaceRepo := other, info, repo
	if !d.matches(ctx, other.Key, dg) {
		if !d.matches(ctx, info.Key, dg) {
			d.log.Warn("dedupe: both copies fail their digest; leaving them for scrub", "digest", dg, "keys", []string{info.Key, other.Key})
			return false
		}
		keep, replace, replaceRepo = info, other, layout.RepoOfBlob(other.Key)
	}
	if oci.ValidateName(replaceRepo) != nil {
		return false
	}
	unlock := d.repos.RLock(replaceRepo) // excludes deletes and GC; pushes never replace a blob
	defer unlock()
	if cur, err := d.drv.Stat(ctx, replace.Key); err != nil || !driver.SameObject(cur, replace) {
		return false // deleted, collected or replaced since the decision
	}
	if cur, err := d.drv.Stat(ctx, keep.Key); err != nil || !driver.SameObject(cur, keep) {
		return false
	}
	if err := l.Link(ctx, keep.Key, replace.Key); err != nil {
		d.LinkFailed(err)
		return false
	}
	d.repos.Checked(ctx, keep.Key, dg) // hashed above, at the object's new version
	return true
}

// matches re-hashes an object and reports whether it holds dg.
func (d *Deduper) matches(ctx context.Context, key string, dg digest.Digest) bool {
	f, _, err := d.drv.Open(ctx, key)
	if err != nil {
		return false
	}
	defer f.Close()
	got, err := dg.Algorithm().FromReader(f)
	return err == nil && got == dg
}
