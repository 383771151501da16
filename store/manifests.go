package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

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
	if err := s.checkRequired(ctx, repo, m); err != nil {
		return PutResult{}, err
	}
	if err := s.ensureRepo(ctx, repo); err != nil {
		return PutResult{}, err
	}

	unlock := s.locks.lock(repo)
	defer unlock()
	if err := s.checkRequired(ctx, repo, m); err != nil {
		return PutResult{}, err
	}
	if err := s.writeBlobBytes(ctx, repo, d, body); err != nil {
		return PutResult{}, err
	}
	desc := ispec.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(body))}
	err = s.updateIndex(ctx, repo, func(x *repoIndex, _ string) (bool, error) { return x.setTags(desc, tags), nil })
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
// repo at the size its descriptor gives.
func (s *Store) checkRequired(ctx context.Context, repo string, m *manifestDoc) error {
	for _, need := range m.requiredBlobs() {
		info, err := s.StatBlob(ctx, repo, need.Digest)
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
	for _, t := range tags {
		if i := x.find(t); i >= 0 {
			if x.Manifests[i].Digest == desc.Digest {
				continue
			}
			old := x.Manifests[i]
			x.remove(i)
			x.keepAddressable(old)
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
		tagged.Annotations = map[string]string{ispec.AnnotationRefName: t} // drops the untagged stamp
		x.Manifests = append(x.Manifests, tagged)
		changed = true
	}
	return changed
}

// writeBlobBytes stores small content pier holds in memory (a manifest) as
// blob d, unless it is already there.
func (s *Store) writeBlobBytes(ctx context.Context, repo string, d digest.Digest, body []byte) error {
	key := blobKey(repo, d)
	if _, err := s.drv.Stat(ctx, key); err == nil {
		return nil
	}
	info, err := s.drv.WriteFile(ctx, key, body)
	if err != nil {
		return fromDriver(err, nil, "store manifest %s", d)
	}
	s.verified.add(info.Version, d)
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
		return m, nil
	}
	body, err := s.readManifestBlob(ctx, repo, desc.Digest)
	if err != nil {
		return Manifest{}, err
	}
	doc, err := decodeStored(body)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: %s cannot be served: %v", ErrManifestUnknown, desc.Digest, err)
	}
	if err := s.checkComplete(ctx, repo, doc); err != nil {
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
	for _, need := range m.requiredBlobs() {
		if _, err := oci.ParseDigest(string(need.Digest)); err != nil {
			return fmt.Errorf("%w: it references an invalid digest %q", ErrManifestUnknown, need.Digest)
		}
		info, err := s.drv.Stat(ctx, blobKey(repo, need.Digest))
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
	if child, ok := s.findChild(ctx, repo, x.Manifests, d, map[digest.Digest]bool{}); ok {
		return child, nil
	}
	return ispec.Descriptor{}, fmt.Errorf("%w: %s", ErrManifestUnknown, d)
}

// maxIndexDepth bounds how deep nested indexes are searched.
const maxIndexDepth = 8

// findChild searches the children of the indexes among descs for d.
func (s *Store) findChild(ctx context.Context, repo string, descs []ispec.Descriptor, d digest.Digest, seen map[digest.Digest]bool) (ispec.Descriptor, bool) {
	if len(seen) > 1000 {
		return ispec.Descriptor{}, false
	}
	for _, desc := range descs {
		if !oci.IsIndexType(desc.MediaType) || seen[desc.Digest] {
			continue
		}
		seen[desc.Digest] = true
		m, err := s.loadManifest(ctx, repo, desc.Digest)
		if err != nil {
			continue
		}
		for _, c := range m.Manifests {
			if c.Digest == d {
				return c, true
			}
		}
		if c, ok := s.findChild(ctx, repo, m.Manifests, d, seen); ok {
			return c, true
		}
	}
	return ispec.Descriptor{}, false
}

// readManifestBlob reads a manifest's bytes and checks them against d.
func (s *Store) readManifestBlob(ctx context.Context, repo string, d digest.Digest) ([]byte, error) {
	if !oci.ValidDigest(d) {
		return nil, fmt.Errorf("%w: unusable digest %q", ErrManifestUnknown, d)
	}
	body, _, err := s.drv.ReadFile(ctx, blobKey(repo, d), oci.MaxManifestSize)
	if err != nil {
		return nil, fromDriver(err, ErrManifestUnknown, "%s is listed but its blob is missing or too large", d)
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		s.log.Error("stored manifest does not match its digest; not serving it", "repo", repo, "digest", d, "actual", got)
		return nil, fmt.Errorf("%w: %s is corrupt on the storage", ErrManifestUnknown, d)
	}
	return body, nil
}

// loadManifest reads and decodes a stored manifest.
func (s *Store) loadManifest(ctx context.Context, repo string, d digest.Digest) (*manifestDoc, error) {
	body, err := s.readManifestBlob(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	m, err := decodeStored(body)
	if err != nil {
		return nil, fmt.Errorf("decode manifest %s: %w", d, err)
	}
	return m, nil
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
	unlock := s.locks.lock(repo)
	defer unlock()
	err := s.updateIndex(ctx, repo, func(x *repoIndex, _ string) (bool, error) {
		if !isDigest {
			i := x.find(ref)
			if i < 0 {
				return false, fmt.Errorf("%w: tag %s", ErrManifestUnknown, ref)
			}
			old := x.Manifests[i]
			x.remove(i)
			x.keepAddressable(old)
			return true, nil
		}
		kept := slices.DeleteFunc(slices.Clone(x.Manifests), func(m ispec.Descriptor) bool { return m.Digest == d })
		if len(kept) == len(x.Manifests) {
			if _, ok := s.findChild(ctx, repo, x.Manifests, d, map[digest.Digest]bool{}); ok {
				return false, fmt.Errorf("%w: %s is listed by an index; delete the index first", ErrManifestReferenced, d)
			}
			return false, fmt.Errorf("%w: %s", ErrManifestUnknown, d)
		}
		if _, ok := s.findChild(ctx, repo, kept, d, map[digest.Digest]bool{}); ok {
			return false, fmt.Errorf("%w: %s is listed by an index; delete the index first", ErrManifestReferenced, d)
		}
		x.Manifests = kept
		return true, nil
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
	var walk func(descs []ispec.Descriptor, depth int) digest.Digest
	walk = func(descs []ispec.Descriptor, depth int) digest.Digest {
		for _, desc := range descs {
			if desc.Digest == d {
				return desc.Digest
			}
			if seen[desc.Digest] || depth > maxIndexDepth {
				continue
			}
			seen[desc.Digest] = true
			m, err := s.loadManifest(ctx, repo, desc.Digest)
			if err != nil {
				continue
			}
			if slices.Contains(m.references(), d) {
				return desc.Digest
			}
			if by := walk(m.Manifests, depth+1); by != "" {
				return by
			}
		}
		return ""
	}
	return walk(x.Manifests, 0), nil
}
