package dedupe

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/layout"
	"github.com/pier-oci/pier/store/oci"
)

const (
	// settleTime is how long a new blob must stay unwritten before it is
	// deduped: a copy in progress writes it continuously.
	settleTime = 2 * time.Second
	// rescanInterval is the safety net where the storage cannot report
	// changes (another kind of filesystem, the inotify watch limit, s3).
	rescanInterval = 5 * time.Minute
	// maxDirty bounds the keys remembered between two rounds; past it a
	// full pass is cheaper than the list.
	maxDirty = 10000
)

// Watch dedupes layouts copied into the store while pier runs, as their
// blobs arrive: every new object under a blobs/ directory is linked to an
// existing copy once it has been quiet for settleTime. It sleeps on the
// storage's notifications; only where there are none does it fall back to
// a full pass every rescanInterval. Serving needs none of this: pier reads
// layouts from the storage on every request.
func (d *Deduper) Watch(ctx context.Context) {
	if d.Placeholders() {
		// A bucket: pier writes what it puts there in the index itself,
		// nothing can be linked, and passes over a bucket are slow: they
		// run at start and when the index is found incomplete (Run).
		return
	}
	n, ok := d.drv.(driver.Notifier)
	if !ok {
		d.rescanLoop(ctx)
		return
	}
	type change struct {
		key   string
		isDir bool
	}
	changes := make(chan change, 256)
	errc := make(chan error, 1)
	go func() {
		errc <- n.Notify(ctx, func(key string, isDir bool) {
			select {
			case changes <- change{key, isDir}:
			case <-ctx.Done():
			}
		})
	}()
	dirty := map[string]bool{}
	full := false
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-errc:
			if err != nil && ctx.Err() == nil {
				d.log.Warn("cannot watch the storage; new layouts are deduped every few minutes", "err", err)
				if errors.Is(err, driver.ErrUnsupported) {
					d.rescanLoop(ctx)
				}
			}
			return
		case c := <-changes:
			if c.isDir || layout.IsBlob(c.key) {
				if c.key == "" {
					full = true
				}
				dirty[c.key] = true
				if len(dirty) > maxDirty {
					full, dirty = true, map[string]bool{}
				}
				settle.Reset(settleTime)
			}
		case <-settle.C:
			if full {
				d.Reconcile(ctx)
				full = false
				clear(dirty)
				continue
			}
			for key := range dirty {
				d.arrived(ctx, key)
			}
			clear(dirty)
		}
	}
}

// arrived dedupes one new blob, or, when a whole directory arrived, every
// blob below it.
func (d *Deduper) arrived(ctx context.Context, key string) {
	if !layout.IsBlob(key) {
		// A directory that arrived whole (a layout moved in, a new
		// repository): its blobs, not the whole store.
		d.drv.Walk(ctx, key, func(e driver.Info) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !e.IsDir && layout.IsBlob(e.Key) {
				d.arrived(ctx, e.Key)
			}
			if e.IsDir && strings.HasPrefix(path.Base(e.Key), ".") {
				return fs.SkipDir
			}
			return nil
		})
		return
	}
	repo := layout.RepoOfBlob(key)
	dg := layout.DigestOfBlob(key)
	if oci.ValidateName(repo) != nil || dg.Validate() != nil {
		return
	}
	info, err := d.drv.Stat(ctx, key)
	if err != nil {
		return
	}
	var st Stats
	if d.reconcileBlob(ctx, repo, dg, info, &st) {
		d.Record(dg, key)
	}
	if st.Linked > 0 {
		d.log.Info("deduped a blob that arrived", "repo", repo, "digest", dg, "bytes_freed", st.BytesFreed)
	}
}

// rescanLoop runs a full pass every rescanInterval.
func (d *Deduper) rescanLoop(ctx context.Context) {
	t := time.NewTicker(rescanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.Reconcile(ctx)
		}
	}
}
