package store

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
)

// The store-wide blob lookup (Options.Lookup, off by default). A client
// pushing many images that share base layers into many repositories asks
// (HEAD) for each layer in each repository and uploads it when the answer
// is 404. With the lookup on, a blob the repository lacks but another
// repository of the store holds (found through the dedupe index) answers
// as present, so the client skips the upload; nothing is written by the
// HEAD (zot links it in there: a read with a side effect, zot#511). The
// blob enters the repository when a manifest that names it is pushed,
// under the repository's lock (checkRequired); if it vanished in between,
// the push fails with MANIFEST_BLOB_UNKNOWN and the client uploads it.
//
// Only repositories the client may read are looked in: the HTTP layer
// puts which those are in the request's context (WithReadable). It
// breaks the spec's delete semantics (a deleted blob is still found
// elsewhere), which is why it is off unless asked for.

type readableKey struct{}

// WithReadable returns ctx carrying may, which reports whether the client
// of the request may read a repository: the store-wide lookup looks in
// those only. Without it every repository may be looked in.
func WithReadable(ctx context.Context, may func(repo string) bool) context.Context {
	return context.WithValue(ctx, readableKey{}, may)
}

func mayRead(ctx context.Context, repo string) bool {
	may, _ := ctx.Value(readableKey{}).(func(string) bool)
	return may == nil || may(repo)
}

// lookup finds blob d in another repository of the store than repo, one
// the client may read, and returns that repository and the object that
// holds the content.
func (s *Store) lookup(ctx context.Context, repo string, d digest.Digest) (string, driver.Info, bool) {
	if !s.lookupOn || s.dedupe == nil {
		return "", driver.Info{}, false
	}
	for _, k := range s.dedupe.Copies(ctx, d) {
		from := repoOfKey(k)
		if from == "" || from == repo || !mayRead(ctx, from) {
			continue
		}
		if info, err := s.content(ctx, from, d); err == nil {
			return from, info, true
		}
	}
	return "", driver.Info{}, false
}

// requiredBlob is blob d of repo, for a manifest that names it. With the
// lookup on, a blob found elsewhere counts; with link (the caller holds
// repo's lock) it is brought into repo first.
func (s *Store) requiredBlob(ctx context.Context, repo string, d digest.Digest, link bool) (BlobInfo, error) {
	info, err := s.statOwn(ctx, repo, d)
	if !errors.Is(err, ErrBlobUnknown) || !s.lookupOn {
		return info, err
	}
	from, held, ok := s.lookup(ctx, repo, d)
	if !ok {
		return info, err
	}
	if !link {
		return BlobInfo{Digest: d, Size: held.Size, ModTime: held.ModTime}, nil
	}
	if err := s.mountLocked(ctx, repo, from, d); err != nil {
		return BlobInfo{}, err
	}
	return s.statOwn(ctx, repo, d)
}
