package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/oci"
)

// layoutFile is the content of oci-layout, as every OCI tool writes it.
var layoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}`)

// maxIndexSize bounds how much of an index.json pier will read; a layout
// with more than this in its index is not one pier can serve.
const maxIndexSize = 64 << 20

// repoIndex is a repository's index.json.
type repoIndex struct {
	ispec.Index
	// unusable are entries whose digest pier cannot use (malformed, or an
	// algorithm it lacks), from a layout written elsewhere. They are never
	// served or walked, since a key built from them could name anything,
	// and are written back unchanged when pier rewrites the index.
	unusable []ispec.Descriptor
}

// decodeIndex parses index.json and sets aside entries with an unusable
// digest.
func decodeIndex(b []byte) (*repoIndex, error) {
	var x repoIndex
	if err := json.Unmarshal(b, &x.Index); err != nil {
		return nil, err
	}
	usable := x.Manifests[:0:0]
	for _, m := range x.Manifests {
		if oci.ValidDigest(m.Digest) {
			usable = append(usable, m)
		} else {
			x.unusable = append(x.unusable, m)
		}
	}
	if x.unusable != nil {
		x.Manifests = usable
	}
	return &x, nil
}

// encode is the index as it is written: pier's usable entries, then the
// unusable ones it keeps for their owner.
func (x *repoIndex) encode() ([]byte, error) {
	out := x.Index
	out.SchemaVersion = 2
	out.MediaType = ispec.MediaTypeImageIndex
	out.Manifests = append(slices.Clip(x.Manifests), x.unusable...)
	if out.Manifests == nil {
		out.Manifests = []ispec.Descriptor{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&out); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// tagOf returns the tag a descriptor in index.json carries. Tools write the
// org.opencontainers.image.ref.name annotation either as a bare tag ("v1")
// or as a full reference ("example.com/app:v1"); both yield "v1".
func tagOf(desc ispec.Descriptor) (string, bool) {
	ref, ok := desc.Annotations[ispec.AnnotationRefName]
	if !ok {
		return "", false
	}
	if oci.ValidateTag(ref) == nil {
		return ref, true
	}
	i := strings.LastIndexByte(ref, ':')
	if i < 0 {
		return "", false
	}
	if t := ref[i+1:]; !strings.Contains(t, "/") && oci.ValidateTag(t) == nil {
		return t, true
	}
	return "", false
}

// find returns the position of the entry carrying tag, or -1.
func (x *repoIndex) find(tag string) int {
	for i, m := range x.Manifests {
		if t, ok := tagOf(m); ok && t == tag {
			return i
		}
	}
	return -1
}

// findDigest returns the first entry for digest d, or -1.
func (x *repoIndex) findDigest(d digest.Digest) int {
	for i, m := range x.Manifests {
		if m.Digest == d {
			return i
		}
	}
	return -1
}

// remove drops entry i, keeping the order of the rest.
func (x *repoIndex) remove(i int) {
	x.Manifests = slices.Delete(x.Manifests, i, i+1)
}

// keepAddressable adds an untagged entry for desc's digest when no entry
// names it any more, so a manifest whose last tag moved or was deleted is
// still served by digest (until it is deleted or collected).
func (x *repoIndex) keepAddressable(desc ispec.Descriptor) {
	if x.findDigest(desc.Digest) >= 0 {
		return
	}
	x.Manifests = append(x.Manifests, untagged(desc))
}

// AnnotationUntaggedSince records, on an untagged entry of index.json, when
// the manifest became untagged (RFC 3339). Garbage collection counts
// gcDelay from then, not from the push: a tag that moves must not make the
// old manifest collectable at once (zot#4444). Other tools ignore
// annotations they do not know.
const AnnotationUntaggedSince = "com.github.pier-oci.untagged-since"

// untagged is desc without its ref name, stamped untagged as of now.
func untagged(desc ispec.Descriptor) ispec.Descriptor {
	out := desc
	out.Annotations = map[string]string{}
	for k, v := range desc.Annotations {
		if k != ispec.AnnotationRefName {
			out.Annotations[k] = v
		}
	}
	out.Annotations[AnnotationUntaggedSince] = time.Now().UTC().Format(time.RFC3339Nano)
	return out
}

// untaggedSince reads the stamp of an untagged entry.
func untaggedSince(desc ispec.Descriptor) (time.Time, bool) {
	v, ok := desc.Annotations[AnnotationUntaggedSince]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

// readIndex returns repo's index.json as the store last saw it, after one
// cheap check that it is still that version (a stat locally, a HEAD on
// s3). The result is shared: callers must not change it. A repository
// that does not exist is ErrNameUnknown.
func (s *Store) readIndex(ctx context.Context, repo string) (*repoIndex, error) {
	v, err := s.view(ctx, repo)
	if err != nil {
		return nil, err
	}
	return v.index, nil
}

// loadIndex reads and decodes repo's index.json afresh, for a change.
func (s *Store) loadIndex(ctx context.Context, repo string) (*repoIndex, indexSnapshot, error) {
	b, info, err := s.drv.ReadFile(ctx, indexKey(repo), maxIndexSize)
	if err != nil {
		return nil, indexSnapshot{}, fromDriver(err, ErrNameUnknown, "read index of %s", repo)
	}
	x, err := decodeIndex(b)
	if err != nil {
		// A layout still being copied in is not a repository yet.
		return nil, indexSnapshot{}, fmt.Errorf("%w: %s: index.json is incomplete or invalid (still being copied?): %v", ErrNameUnknown, repo, err)
	}
	return x, indexSnapshot{b, info}, nil
}

// maxIndexRetries bounds how often a change of index.json is retried when
// another writer (a replica on the same bucket) changed it in between.
const maxIndexRetries = 10

// updateIndex applies change to repo's index.json (decoded, and as read) and writes it back with
// a compare-and-swap, retrying from a fresh read when another process
// changed the file in between. change reports whether it changed
// anything; nothing is written otherwise. The caller holds the
// repository's lock, which orders the writers of this process.
func (s *Store) updateIndex(ctx context.Context, repo string, change func(x *repoIndex, cur []byte) (bool, error)) error {
	for attempt := 0; ; attempt++ {
		x, snap, err := s.loadIndex(ctx, repo)
		if err != nil {
			return err
		}
		info := snap.info
		changed, err := change(x, snap.data)
		if err != nil || !changed {
			return err
		}
		data, err := x.encode()
		if err != nil {
			return fmt.Errorf("encode index of %s: %w", repo, err)
		}
		written, err := s.drv.ReplaceFile(ctx, indexKey(repo), data, info.Version)
		if errors.Is(err, driver.ErrConflict) && attempt < maxIndexRetries {
			// Another replica won: back off a little and redo the change
			// on what it wrote.
			time.Sleep(time.Duration(rand.IntN(10*(attempt+1))) * time.Millisecond)
			continue
		}
		if err != nil {
			return fromDriver(err, nil, "write index of %s", repo)
		}
		s.views.put(repo, &repoView{version: written.Version, index: x, size: int64(len(data))})
		return nil
	}
}

// repoExists reports whether repo is an OCI layout in this store.
func (s *Store) repoExists(ctx context.Context, repo string) bool {
	_, err := s.drv.Stat(ctx, indexKey(repo))
	return err == nil
}

// canBeRepo fails, before anything is written, when something other than
// a repository's own file is where repo's index.json would go (a
// directory, a link, a pipe): a push must not replace what it did not
// write. A name that crosses a file fails at the first write, which makes
// the directories it needs.
func (s *Store) canBeRepo(ctx context.Context, repo string) error {
	_, err := s.drv.Stat(ctx, indexKey(repo))
	if errors.Is(err, driver.ErrNotObject) {
		return fmt.Errorf("%w: %s/index.json is not a file", ErrNotRepository, repo)
	}
	return nil
}

// ensureRepo makes repo an OCI layout if it is not one yet. Pushes create
// repositories; reads never do.
func (s *Store) ensureRepo(ctx context.Context, repo string) error {
	if err := s.pushable(ctx); err != nil {
		return err
	}
	if s.repoExists(ctx, repo) {
		return nil
	}
	if err := s.canBeRepo(ctx, repo); err != nil {
		return err
	}
	unlock := s.locks.Lock(repo)
	defer unlock()
	if s.repoExists(ctx, repo) {
		return nil
	}
	if _, err := s.drv.WriteFile(ctx, layoutKey(repo), layoutFile); err != nil {
		return fromDriver(err, nil, "create repository %s", repo)
	}
	// index.json last: its presence is what makes the directory a
	// repository. Created only if no other process created it meanwhile.
	data, _ := (&repoIndex{}).encode()
	written, err := s.drv.ReplaceFile(ctx, indexKey(repo), data, "")
	if errors.Is(err, driver.ErrConflict) {
		return nil
	}
	if err != nil {
		return fromDriver(err, nil, "create repository %s", repo)
	}
	s.views.put(repo, &repoView{version: written.Version, index: &repoIndex{}, size: int64(len(data))})
	s.log.Info("repository created", "repo", repo)
	return nil
}
