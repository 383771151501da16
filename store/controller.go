package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/budget"
)

// Controller puts several stores behind one namespace (zot's subPaths): a
// repository belongs to the subpath whose prefix is its longest match, by
// whole name components, else to the default store. As in zot the full name
// is kept under the subpath's root: "a/app" lives in <root of /a>/a/app/.
type Controller struct {
	def    *Store
	routes []route // longest prefix first
}

type route struct {
	prefix string // "a" or "x/y", no slashes around
	st     *Store
}

// NewController routes the subpaths (keys like "/a", "/x/y") to their
// stores and everything else to def.
func NewController(def *Store, subs map[string]*Store) *Controller {
	c := &Controller{def: def}
	for key, st := range subs {
		c.routes = append(c.routes, route{prefix: strings.Trim(key, "/"), st: st})
	}
	sort.Slice(c.routes, func(i, j int) bool {
		if len(c.routes[i].prefix) != len(c.routes[j].prefix) {
			return len(c.routes[i].prefix) > len(c.routes[j].prefix)
		}
		return c.routes[i].prefix < c.routes[j].prefix
	})
	return c
}

// Stores lists every store, the default first.
func (c *Controller) Stores() []*Store {
	out := []*Store{c.def}
	for _, r := range c.routes {
		out = append(out, r.st)
	}
	return out
}

// StoreFor is the store that holds repo.
func (c *Controller) StoreFor(repo string) *Store {
	for _, r := range c.routes {
		if repo == r.prefix || strings.HasPrefix(repo, r.prefix+"/") {
			return r.st
		}
	}
	return c.def
}

// Repositories lists every store's repositories, sorted, leaving out any a
// store holds under a name that another store's subpath claims (it could
// never be reached).
func (c *Controller) Repositories(ctx context.Context) ([]string, error) {
	var all []string
	for _, st := range c.Stores() {
		repos, err := st.Repositories(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range repos {
			if c.StoreFor(r) == st {
				all = append(all, r)
			}
		}
	}
	slices.Sort(all)
	return all, nil
}

// MountBlob mounts within a store by hard link; between stores (other
// filesystems, other caches) it copies, verifying the digest on the way.
func (c *Controller) MountBlob(ctx context.Context, repo, from string, d digest.Digest) error {
	dst, src := c.StoreFor(repo), c.StoreFor(from)
	if dst == src {
		return dst.MountBlob(ctx, repo, from, d)
	}
	if err := dst.writable(); err != nil {
		return err
	}
	f, _, err := src.OpenBlob(ctx, from, d)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := dst.PutBlob(ctx, repo, d, f); err != nil {
		return fmt.Errorf("copy blob %s from %s into %s: %w", d, from, repo, err)
	}
	return nil
}

// FindBlob looks for d in every store.
func (c *Controller) FindBlob(ctx context.Context, d digest.Digest) (string, error) {
	for _, st := range c.Stores() {
		repo, err := st.FindBlob(ctx, d)
		if err == nil && c.StoreFor(repo) == st {
			return repo, nil
		}
		if err != nil && !errors.Is(err, ErrBlobUnknown) {
			return "", err
		}
	}
	return "", fmt.Errorf("%w: %s", ErrBlobUnknown, d)
}

// The rest of the API belongs to the repository's own store.

func (c *Controller) ManifestBudget(repo string) *budget.Budget {
	return c.StoreFor(repo).ManifestBudget(repo)
}

func (c *Controller) StatBlob(ctx context.Context, repo string, d digest.Digest) (BlobInfo, error) {
	return c.StoreFor(repo).StatBlob(ctx, repo, d)
}

func (c *Controller) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, BlobInfo, error) {
	return c.StoreFor(repo).OpenBlob(ctx, repo, d)
}

func (c *Controller) BlobURL(ctx context.Context, repo string, d digest.Digest) (string, BlobInfo, error) {
	return c.StoreFor(repo).BlobURL(ctx, repo, d)
}

func (c *Controller) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	return c.StoreFor(repo).DeleteBlob(ctx, repo, d)
}

func (c *Controller) NewUpload(ctx context.Context, repo string) (string, error) {
	return c.StoreFor(repo).NewUpload(ctx, repo)
}

func (c *Controller) UploadSize(ctx context.Context, repo, id string) (int64, error) {
	return c.StoreFor(repo).UploadSize(ctx, repo, id)
}

func (c *Controller) WriteUpload(ctx context.Context, repo, id string, start int64, r io.Reader) (int64, error) {
	return c.StoreFor(repo).WriteUpload(ctx, repo, id, start, r)
}

func (c *Controller) CommitUpload(ctx context.Context, repo, id string, r io.Reader, d digest.Digest) (BlobInfo, error) {
	return c.StoreFor(repo).CommitUpload(ctx, repo, id, r, d)
}

func (c *Controller) CancelUpload(ctx context.Context, repo, id string) error {
	return c.StoreFor(repo).CancelUpload(ctx, repo, id)
}

func (c *Controller) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader) (BlobInfo, error) {
	return c.StoreFor(repo).PutBlob(ctx, repo, d, r)
}

func (c *Controller) GetManifest(ctx context.Context, repo, ref string) (Manifest, error) {
	return c.StoreFor(repo).GetManifest(ctx, repo, ref)
}

func (c *Controller) PutManifest(ctx context.Context, repo, ref, contentType string, body []byte, tags []string) (PutResult, error) {
	return c.StoreFor(repo).PutManifest(ctx, repo, ref, contentType, body, tags)
}

func (c *Controller) DeleteManifest(ctx context.Context, repo, ref string) error {
	return c.StoreFor(repo).DeleteManifest(ctx, repo, ref)
}

func (c *Controller) Tags(ctx context.Context, repo string) ([]string, error) {
	return c.StoreFor(repo).Tags(ctx, repo)
}

func (c *Controller) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]ispec.Descriptor, error) {
	return c.StoreFor(repo).Referrers(ctx, repo, d, artifactType)
}
