package store

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The read path of manifests is the registry's hot path: every pull asks
// for a manifest by tag, often many times. Rather than reading and
// parsing index.json and checking every blob of the manifest on each
// request, the store keeps a view of each repository it served recently:
// the parsed index, and the manifests it found servable (present, matching
// their digest, every blob they need here at its full size). One cheap
// check revalidates a view: the version of index.json (device, inode,
// ctime and size locally; the ETag on s3). A view is never trusted past a
// change of index.json, or past a change pier itself makes to the
// repository's blobs (a delete, a collection, a quarantine), so a layout
// still being copied in is never half-served: only positive verdicts are
// remembered, and only for the version they were reached on.

// Bounds of what views hold, sized for a Pi: a few hundred repositories'
// indexes, and a few MiB of manifest bodies.
const (
	maxViews         = 512
	maxServedBytes   = 4 << 20
	maxServedPerBody = 256 << 10
	// A parsed index takes about three times its file in memory: views
	// hold indexes of at most maxViewIndexBytes of files in all, and an
	// index.json larger than maxIndexPerView (thousands of tags) is
	// parsed for each request instead of kept.
	maxViewIndexBytes = 4 << 20
	maxIndexPerView   = 1 << 20
)

// racyWindow is how long after index.json last changed its Version is
// not trusted to tell one content from another. Locally a Version can
// repeat: a file replaced through a temporary file alternates between two
// inode numbers on ext2/3/4, and without multigrain timestamps (Linux
// before 6.13) its ctime has the resolution of a clock tick (FAT's, two
// seconds). Two replacements within one tick that keep the size give
// index.json back a Version a view was built on. A view read once the file
// was older than this cannot be fooled so (git's "racily clean" rule);
// one read earlier is used by its own request only.
const racyWindow = 3 * time.Second

// repoView is what the store knows of one version of a repository.
type repoView struct {
	version string     // of index.json
	index   *repoIndex // shared, never changed
	size    int64      // of index.json
	settled bool       // index.json was older than racyWindow when read

	refMu     sync.Mutex
	referrers map[digest.Digest][]ispec.Descriptor // by subject, built once (referrersOf)

	mu     sync.Mutex
	served map[digest.Digest]Manifest // manifests found servable
	gone   bool                       // replaced or dropped: remembers nothing more
}

// viewCache holds the views, keyed by repository.
type viewCache struct {
	mu         sync.Mutex
	views      map[string]*repoView
	indexBytes int64        // index.json files of all views
	bytes      atomic.Int64 // bodies held in all views
}

func newViewCache() *viewCache { return &viewCache{views: map[string]*repoView{}} }

func (c *viewCache) get(repo string) *repoView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.views[repo]
}

// put installs v as repo's view, dropping the one it replaces, and others
// while the views hold too much; a view of an index too large to keep is
// not installed (its reader uses it once).
func (c *viewCache) put(repo string, v *repoView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.views[repo]; old != nil {
		c.release(old)
		c.indexBytes -= old.size
		delete(c.views, repo)
	}
	if v.size > maxIndexPerView {
		return
	}
	for r, old := range c.views { // any: map order is random enough
		if len(c.views) < maxViews && c.indexBytes+v.size <= maxViewIndexBytes {
			break
		}
		c.release(old)
		c.indexBytes -= old.size
		delete(c.views, r)
	}
	c.views[repo] = v
	c.indexBytes += v.size
}

// drop forgets repo's view: pier changed its blobs.
func (c *viewCache) drop(repo string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.views[repo]; old != nil {
		c.release(old)
		c.indexBytes -= old.size
		delete(c.views, repo)
	}
}

func (c *viewCache) release(v *repoView) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, m := range v.served {
		c.bytes.Add(-int64(len(m.Body)))
	}
	v.served = nil
	v.gone = true
}

// servable returns a manifest this view found servable.
func (v *repoView) servable(d digest.Digest) (Manifest, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m, ok := v.served[d]
	return m, ok
}

// remember keeps a servable manifest in the view, within the byte budget.
func (c *viewCache) remember(v *repoView, m Manifest) {
	if len(m.Body) > maxServedPerBody || c.bytes.Load()+int64(len(m.Body)) > maxServedBytes {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.served == nil {
		v.served = map[digest.Digest]Manifest{}
	}
	if _, ok := v.served[m.Digest]; ok || v.gone {
		return
	}
	v.served[m.Digest] = m
	c.bytes.Add(int64(len(m.Body)))
}

// view returns the current view of repo: the cached one if index.json is
// still the version it was built from, else a new one.
func (s *Store) view(ctx context.Context, repo string) (*repoView, error) {
	info, err := s.drv.Stat(ctx, indexKey(repo))
	if err != nil {
		s.views.drop(repo)
		return nil, fromDriver(err, ErrNameUnknown, "read index of %s", repo)
	}
	if v := s.views.get(repo); v != nil && v.version == info.Version && v.settled {
		return v, nil
	}
	x, read, err := s.loadIndex(ctx, repo)
	if err != nil {
		return nil, err
	}
	v := &repoView{version: read.info.Version, index: x, size: int64(len(read.data)),
		settled: time.Since(read.info.Changed) >= racyWindow}
	s.views.put(repo, v)
	return v, nil
}
