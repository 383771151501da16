package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/oci"
)

// Manifest is a stored manifest as it is served.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// PutResult tells what a manifest push stored.
type PutResult struct {
	Digest  digest.Digest
	Subject digest.Digest // empty when the manifest has no subject
}

// PutManifest stores a manifest under ref (a tag or its digest) and under
// every extra tag. Each blob and child manifest it references must already
// be in the repository. The manifest blob is written before index.json
// names it, so a crash in between leaves only an unreferenced blob.
func (s *Store) PutManifest(ctx context.Context, repo, ref, contentType string, body []byte, tags []string) (PutResult, error) {
	m, err := parseManifest(body, contentType)
	if err != nil {
		return PutResult{}, err
	}
	var d digest.Digest
	if oci.IsDigest(ref) {
		want, err := oci.ParseDigest(ref)
		if err != nil {
			return PutResult{}, err
		}
		if d = want.Algorithm().FromBytes(body); d != want {
			return PutResult{}, fmt.Errorf("%w: the body is %s, not %s", ErrDigestMismatch, d, want)
		}
	} else {
		if err := oci.ValidateTag(ref); err != nil {
			return PutResult{}, err
		}
		d = oci.SHA256Of(body)
		tags = append([]string{ref}, tags...)
	}
	for _, t := range tags {
		if err := oci.ValidateTag(t); err != nil {
			return PutResult{}, err
		}
	}
	// Checked before the repository is created, so that a push that fails
	// here leaves no empty repository behind, and again under the lock.
	if err := s.checkRequired(ctx, repo, m, false); err != nil {
		return PutResult{}, err
	}
	if err := s.admit(ctx, repo, int64(len(body))); err != nil {
		return PutResult{}, err
	}
	if err := s.ensureRepo(ctx, repo); err != nil {
		return PutResult{}, err
	}

	unlock := s.locks.Lock(repo)
	defer unlock()
	if err := s.checkRequired(ctx, repo, m, true); err != nil {
		return PutResult{}, err
	}
	if err := s.writeBlobBytes(ctx, repo, d, body); err != nil {
		return PutResult{}, err
	}
	desc := ispec.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(body))}
	err = s.updateIndex(ctx, repo, func(x *repoIndex, _ []byte) (bool, error) {
		if err := s.checkNotMarked(ctx, repo, x, d, body, m); err != nil {
			return false, err
		}
		return x.setTags(desc, tags), nil
	})
	if errors.Is(err, ErrNameUnknown) {
		// Another replica collected the repository, blobs and all, since
		// they were checked.
		return PutResult{}, fmt.Errorf("%w: the repository was removed by garbage collection meanwhile: %v", ErrManifestBlobUnknown, err)
	}
	if err != nil {
		return PutResult{}, err
	}
	res := PutResult{Digest: d}
	if m.Subject != nil {
		res.Subject = m.Subject.Digest
	}
	s.log.Info("manifest stored", "repo", repo, "digest", d, "tags", tags)
	return res, nil
}

// checkRequired fails unless every blob and child manifest m needs is in
// repo at the size its descriptor gives. With the store-wide lookup on, a
// blob the repository lacks may be found elsewhere in the store; link
// (set under the repository's lock) brings it into the repository.
func (s *Store) checkRequired(ctx context.Context, repo string, m *manifestDoc, link bool) error {
	for need := range m.requiredBlobs() {
		info, err := s.requiredBlob(ctx, repo, need.Digest, link)
		if errors.Is(err, ErrBlobUnknown) {
			return fmt.Errorf("%w: %s", ErrManifestBlobUnknown, need.Digest)
		}
		if err != nil {
			return err
		}
		if info.Size != need.Size {
			return fmt.Errorf("%w: descriptor of %s says %d bytes, the blob has %d", ErrManifestInvalid, need.Digest, need.Size, info.Size)
		}
	}
	return s.checkChildren(ctx, repo, m)
}

// checkChildren fails unless every manifest an index (or Docker manifest
// list) lists is a manifest of repo, of the media type its descriptor
// gives. The image spec's index lists manifests: a client that follows a
// child to a layer blob, or to a manifest of another type than it was
// told, fails in the middle of a pull. A manifest of the repository is
// one index.json lists, or (in a layout written by another tool) a child
// of one of those.
func (s *Store) checkChildren(ctx context.Context, repo string, m *manifestDoc) error {
	if !oci.IsIndexType(m.MediaType) || len(m.Manifests) == 0 {
		return nil
	}
	x, err := s.readIndex(ctx, repo)
	if errors.Is(err, ErrNameUnknown) {
		x = &repoIndex{}
	} else if err != nil {
		return err
	}
	known := make(map[digest.Digest]string, len(x.Manifests))
	for _, e := range x.Manifests {
		known[e.Digest] = e.MediaType
	}
	nestedRead := false
	for i, c := range m.Manifests {
		mt, ok := known[c.Digest]
		if !ok && !nestedRead {
			// Read once, and only for an index whose child is not
			// listed: the children of the listed indexes.
			nestedRead = true
			if err := s.addNested(ctx, repo, entries(x.Manifests), known, 0); err != nil {
				return err
			}
			mt, ok = known[c.Digest]
		}
		if !ok {
			return fmt.Errorf("%w: manifests[%d] %s is not a manifest of %s", ErrManifestBlobUnknown, i, c.Digest, repo)
		}
		if mt != "" && mt != string(c.MediaType) {
			return fmt.Errorf("%w: manifests[%d] says %s is a %s, but it is a %s", ErrManifestInvalid, i, c.Digest, c.MediaType, mt)
		}
	}
	return nil
}

// addNested adds to known the children of the indexes among descs, and
// theirs, with their media types. An index that cannot be read is passed
// over; the error is ctx's.
func (s *Store) addNested(ctx context.Context, repo string, descs iter.Seq[descriptor], known map[digest.Digest]string, depth int) error {
	for desc := range descs {
		if !oci.IsIndexType(string(desc.MediaType)) || depth > maxIndexDepth || len(known) > 10000 {
			continue
		}
		m, err := s.loadManifest(ctx, repo, desc.Digest)
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			continue
		}
		var fresh []descriptor
		for _, c := range m.Manifests {
			if _, seen := known[c.Digest]; !seen {
				known[c.Digest] = string(c.MediaType)
				fresh = append(fresh, c)
			}
		}
		if err := s.addNested(ctx, repo, slices.Values(fresh), known, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// setTags records desc in the index, under each of tags or untagged when
// there are none. A tag that moves leaves its old manifest addressable by
// digest. It reports whether anything changed.
func (x *repoIndex) setTags(desc ispec.Descriptor, tags []string) bool {
	if len(tags) == 0 {
		if x.findDigest(desc.Digest) < 0 {
			x.Manifests = append(x.Manifests, untagged(desc))
			return true
		}
		return false
	}
	changed := false
	pushed := time.Now().UTC().Format(time.RFC3339Nano)
	for _, t := range tags {
		// Every entry carrying t moves: a layout written by other tools
		// may name one tag twice ("v1" and "example.com/app:v1").
		already := false
		for i := 0; i < len(x.Manifests); {
			old := x.Manifests[i]
			if tag, ok := tagOf(old); !ok || tag != t {
				i++
				continue
			}
			if old.Digest == desc.Digest && !already {
				already = true
				i++
				continue
			}
			x.remove(i)
			x.keepAddressable(old)
			changed = true
		}
		if already {
			continue
		}
		// A tagged entry replaces the untagged one for the same digest.
		for i, m := range x.Manifests {
			if m.Digest == desc.Digest {
				if _, tagged := tagOf(m); !tagged {
					x.remove(i)
					break
				}
			}
		}
		tagged := desc
		// Drops the untagged stamp; the push time is retention's.
		tagged.Annotations = map[string]string{ispec.AnnotationRefName: t, AnnotationPushed: pushed}
		x.Manifests = append(x.Manifests, tagged)
		changed = true
	}
	return changed
}

// writeBlobBytes stores small content pier holds in memory (a manifest) as
// blob d. One already there is kept if it holds these bytes (and made
// durable: its writer may not have synced it); a damaged one (a power
// cut with commit off can leave a file empty) is replaced.
func (s *Store) writeBlobBytes(ctx context.Context, repo string, d digest.Digest, body []byte) error {
	key := blobKey(repo, d)
	if cur, _, err := s.drv.ReadFile(ctx, key, int64(len(body))); err == nil && bytes.Equal(cur, body) {
		return s.syncExisting(ctx, key)
	}
	info, err := s.drv.WriteFile(ctx, key, body)
	if err != nil {
		return fromDriver(err, nil, "store manifest %s", d)
	}
	s.counted(repo, int64(len(body)), true)
	s.verified.add(info.Content, d)
	return nil
}

// GetManifest returns the manifest ref (a tag or a digest) of repo. A
// digest is found among index.json's entries or, for layouts made by other
// tools that list only the top index, among the children of those entries.
// Content that no longer matches its digest is never served, nor a
// manifest whose blobs are not all here (a layout being copied in).
func (s *Store) GetManifest(ctx context.Context, repo, ref string) (Manifest, error) {
	v, err := s.view(ctx, repo)
	if errors.Is(err, ErrNameUnknown) {
		return Manifest{}, fmt.Errorf("%w: %s: %v", ErrManifestUnknown, ref, err)
	}
	if err != nil {
		return Manifest{}, err
	}
	desc, err := s.resolve(ctx, repo, v.index, ref)
	if err != nil {
		return Manifest{}, err
	}
	if m, ok := v.servable(desc.Digest); ok {
		s.notePull(repo, m.Digest)
		return m, nil
	}
	var body []byte
	var doc *manifestDoc
	err = s.readManifest(ctx, repo, desc.Digest, func(b []byte) error {
		var err error
		if doc, err = decodeStored(b); err != nil {
			return fmt.Errorf("%w: %s cannot be served: %v", ErrManifestUnknown, desc.Digest, err)
		}
		body = b
		return s.checkComplete(ctx, repo, doc)
	})
	if err != nil {
		return Manifest{}, err
	}
	mt := desc.MediaType
	if mt == "" {
		mt = doc.MediaType
	}
	if mt == "" {
		mt = ispec.MediaTypeImageManifest
	}
	m := Manifest{Digest: desc.Digest, MediaType: mt, Body: body}
	s.views.remember(v, m)
	s.notePull(repo, m.Digest)
	return m, nil
}

// checkComplete refuses to serve a manifest whose blobs (or child
// manifests) are not all here at their full size: a layout being copied in
// is never half-served, and a client never starts a pull it cannot finish.
func (s *Store) checkComplete(ctx context.Context, repo string, m *manifestDoc) error {
	if m.MediaType == "" && m.Manifests != nil {
		m.MediaType = ispec.MediaTypeImageIndex
	}
	if m.Config == nil && !oci.IsIndexType(m.MediaType) {
		return nil // not a shape pier checks (an unknown artifact format)
	}
	for need := range m.requiredBlobs() {
		if _, err := oci.ParseDigest(string(need.Digest)); err != nil {
			return fmt.Errorf("%w: it references an invalid digest %q", ErrManifestUnknown, need.Digest)
		}
		info, err := s.content(ctx, repo, need.Digest)
		if err != nil || info.Size != need.Size {
			return fmt.Errorf("%w: its blob %s is missing or incomplete", ErrManifestUnknown, need.Digest)
		}
	}
	return nil
}

// resolve finds the index entry (or child descriptor) for ref in x.
func (s *Store) resolve(ctx context.Context, repo string, x *repoIndex, ref string) (ispec.Descriptor, error) {
	if !oci.IsDigest(ref) {
		if err := oci.ValidateTag(ref); err != nil {
			return ispec.Descriptor{}, err
		}
		if i := x.find(ref); i >= 0 {
			return x.Manifests[i], nil
		}
		return ispec.Descriptor{}, fmt.Errorf("%w: tag %s", ErrManifestUnknown, ref)
	}
	d, err := oci.ParseDigest(ref)
	if err != nil {
		return ispec.Descriptor{}, err
	}
	if i := x.findDigest(d); i >= 0 {
		return x.Manifests[i], nil
	}
	child, ok, err := s.findChild(ctx, repo, entries(x.Manifests), d, map[digest.Digest]bool{})
	if err != nil {
		return ispec.Descriptor{}, err
	}
	if ok {
		return child.spec(), nil
	}
	return ispec.Descriptor{}, fmt.Errorf("%w: %s", ErrManifestUnknown, d)
}

// entries yields index.json's entries as the descriptors pier reads.
func entries(list []ispec.Descriptor) iter.Seq[descriptor] {
	return func(yield func(descriptor) bool) {
		for _, e := range list {
			if !yield(descriptor{MediaType: mediaType(e.MediaType), Digest: e.Digest, Size: e.Size}) {
				return
			}
		}
	}
}

// maxIndexDepth bounds how deep nested indexes are searched.
const maxIndexDepth = 8

// findChild searches the children of the indexes among descs for d. An
// index that cannot be read is passed over; the error is ctx's, when the
// search was cut short and so proves nothing.
func (s *Store) findChild(ctx context.Context, repo string, descs iter.Seq[descriptor], d digest.Digest, seen map[digest.Digest]bool) (descriptor, bool, error) {
	if len(seen) > 1000 {
		return descriptor{}, false, nil
	}
	for desc := range descs {
		if !oci.IsIndexType(string(desc.MediaType)) || seen[desc.Digest] {
			continue
		}
		seen[desc.Digest] = true
		m, err := s.loadManifest(ctx, repo, desc.Digest)
		if cerr := ctx.Err(); cerr != nil {
			return descriptor{}, false, cerr
		}
		if err != nil {
			continue
		}
		for _, c := range m.Manifests {
			if c.Digest == d {
				return c, true, nil
			}
		}
		if c, ok, err := s.findChild(ctx, repo, slices.Values(m.Manifests), d, seen); ok || err != nil {
			return c, ok, err
		}
	}
	return descriptor{}, false, nil
}

// NewManifestBudget is the budget of manifest bytes a pier holds in memory
// at once: two of the largest, or any number of the usual few kilobytes.
func NewManifestBudget() *budget.Budget { return budget.New(2 * oci.MaxManifestSize) }

// ManifestBudget is the budget that bounds the manifest bytes in memory
// for repo: a request that reads a manifest body itself (a push) holds its
// bytes of it while it reads and while the store decodes it.
func (s *Store) ManifestBudget(repo string) *budget.Budget { return s.manifests }

// readManifest reads manifest d of repo, checks it against its digest and
// hands it to use, within the store's manifest budget: the bytes count
// against it from before the read until use returns, so however many
// requests read manifests at once, only a few large ones are in memory.
// A wait for the budget ends with ctx.
func (s *Store) readManifest(ctx context.Context, repo string, d digest.Digest, use func(body []byte) error) error {
	if !oci.ValidDigest(d) {
		return fmt.Errorf("%w: unusable digest %q", ErrManifestUnknown, d)
	}
	info, err := s.content(ctx, repo, d)
	if errors.Is(err, ErrBlobUnknown) {
		return fmt.Errorf("%w: %s is listed but its blob is missing: %v", ErrManifestUnknown, d, err)
	}
	if err != nil {
		return err
	}
	key := info.Key
	if info.Size > oci.MaxManifestSize {
		return fmt.Errorf("%w: %s is %d bytes, more than a manifest may have", ErrManifestUnknown, d, info.Size)
	}
	_, release, err := s.manifests.Acquire(ctx, info.Size)
	if err != nil {
		return fmt.Errorf("read manifest %s: %w", d, err)
	}
	defer release()
	// A file that grew past the size the budget was taken for is read no
	// further than a manifest may be, and then fails its digest.
	body, _, err := s.drv.ReadFile(ctx, key, oci.MaxManifestSize)
	if err != nil {
		return fromDriver(err, ErrManifestUnknown, "%s is listed but its blob is missing or too large", d)
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		s.log.Error("stored manifest does not match its digest; not serving it", "repo", repo, "digest", d, "actual", got)
		return fmt.Errorf("%w: %s is corrupt on the storage", ErrManifestUnknown, d)
	}
	return use(body)
}

// readManifestBlob is readManifest for a caller that keeps the bytes.
func (s *Store) readManifestBlob(ctx context.Context, repo string, d digest.Digest) ([]byte, error) {
	var body []byte
	err := s.readManifest(ctx, repo, d, func(b []byte) error { body = b; return nil })
	return body, err
}

// loadManifest reads and decodes a stored manifest.
func (s *Store) loadManifest(ctx context.Context, repo string, d digest.Digest) (*manifestDoc, error) {
	var m *manifestDoc
	err := s.readManifest(ctx, repo, d, func(body []byte) error {
		var err error
		if m, err = decodeStored(body); err != nil {
			return fmt.Errorf("decode manifest %s: %w", d, err)
		}
		return nil
	})
	return m, err
}

// DeleteManifest deletes ref of repo. A tag is removed and its manifest
// stays addressable by digest; a digest removes the manifest and every tag
// on it. A manifest that a remaining index lists is refused: deleting it
// would break the index.
func (s *Store) DeleteManifest(ctx context.Context, repo, ref string) error {
	isDigest := oci.IsDigest(ref)
	var d digest.Digest
	if isDigest {
		var err error
		if d, err = oci.ParseDigest(ref); err != nil {
			return err
		}
	} else if err := oci.ValidateTag(ref); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	unlock := s.locks.Lock(repo)
	defer unlock()
	err := s.freeing(func() error {
		return s.updateIndex(ctx, repo, func(x *repoIndex, _ []byte) (bool, error) {
			if !isDigest {
				i := x.find(ref)
				if i < 0 {
					return false, fmt.Errorf("%w: tag %s", ErrManifestUnknown, ref)
				}
				for ; i >= 0; i = x.find(ref) { // every entry that carries it
					old := x.Manifests[i]
					x.remove(i)
					x.keepAddressable(old)
				}
				return true, nil
			}
			kept := slices.DeleteFunc(slices.Clone(x.Manifests), func(m ispec.Descriptor) bool { return m.Digest == d })
			listed := len(kept) < len(x.Manifests)
			search := kept
			if !listed {
				search = x.Manifests
			}
			_, byIndex, err := s.findChild(ctx, repo, entries(search), d, map[digest.Digest]bool{})
			switch {
			case err != nil:
				return false, err
			case byIndex:
				return false, fmt.Errorf("%w: %s is listed by an index; delete the index first", ErrManifestReferenced, d)
			case !listed:
				return false, fmt.Errorf("%w: %s", ErrManifestUnknown, d)
			}
			x.Manifests = kept
			return true, nil
		})
	})
	if errors.Is(err, ErrNameUnknown) {
		return fmt.Errorf("%w: %s", ErrManifestUnknown, ref)
	}
	if err != nil {
		return err
	}
	if isDigest {
		s.log.Info("manifest deleted", "repo", repo, "digest", d)
	} else {
		s.log.Info("tag deleted", "repo", repo, "tag", ref)
	}
	return nil
}

// Tags lists repo's tags, sorted.
func (s *Store) Tags(ctx context.Context, repo string) ([]string, error) {
	x, err := s.readIndex(ctx, repo)
	if err != nil {
		return nil, err
	}
	tags := make([]string, 0, len(x.Manifests))
	for _, m := range x.Manifests {
		if t, ok := tagOf(m); ok {
			tags = append(tags, t)
		}
	}
	slices.Sort(tags)
	return slices.Compact(tags), nil
}

// referencedBy returns a manifest of repo that references d (as config,
// layer or child, or d itself when it is a listed manifest), or "".
func (s *Store) referencedBy(ctx context.Context, repo string, d digest.Digest) (digest.Digest, error) {
	x, err := s.readIndex(ctx, repo)
	if errors.Is(err, ErrNameUnknown) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	seen := map[digest.Digest]bool{}
	var walk func(descs iter.Seq[descriptor], depth int) (digest.Digest, error)
	walk = func(descs iter.Seq[descriptor], depth int) (digest.Digest, error) {
		for desc := range descs {
			if desc.Digest == d {
				return desc.Digest, nil
			}
			if seen[desc.Digest] || depth > maxIndexDepth {
				continue
			}
			seen[desc.Digest] = true
			m, err := s.loadManifest(ctx, repo, desc.Digest)
			if cerr := ctx.Err(); cerr != nil {
				return "", cerr // cut short: proves nothing
			}
			if err != nil {
				continue
			}
			if m.references(d) {
				return desc.Digest, nil
			}
			if by, err := walk(slices.Values(m.Manifests), depth+1); by != "" || err != nil {
				return by, err
			}
		}
		return "", nil
	}
	return walk(entries(x.Manifests), 0)
}
