package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/oci"
)

// TransferReport counts what an export or import moved.
type TransferReport struct {
	Manifests int
	Blobs     int
	Bytes     int64
	Tags      []string
}

// Export writes repo (or the one manifest ref names, a tag or a digest)
// as an OCI Image Layout into out (a directory on a USB stick, opened
// with durability on), for the way out of an air-gapped site: the
// manifests, everything they reach, and the referrers (signatures, SBOMs)
// of what is exported. Every blob is checked against its digest on the
// way; index.json is written last, so out holds a valid layout only once
// it is complete. Export only reads the store.
func (s *Store) Export(ctx context.Context, repo, ref string, out driver.Driver) (TransferReport, error) {
	var rep TransferReport
	x, err := s.readIndex(ctx, repo)
	if err != nil {
		return rep, err
	}
	var roots []ispec.Descriptor
	if ref == "" {
		roots = x.Manifests
	} else {
		desc, err := s.resolve(ctx, repo, x, ref)
		if err != nil {
			return rep, err
		}
		desc.Annotations = nil
		if !oci.IsDigest(ref) {
			desc.Annotations = map[string]string{ispec.AnnotationRefName: ref}
		}
		roots = []ispec.Descriptor{desc}
	}
	g := &graph{ctx: ctx, read: func(d digest.Digest) ([]byte, error) { return s.readManifestBlob(ctx, repo, d) },
		manifests: map[digest.Digest]*manifestDoc{}, blobs: map[digest.Digest]ispec.Descriptor{}}
	for _, d := range roots {
		if err := g.add(d); err != nil {
			return rep, err
		}
	}
	roots = append(roots, g.referrers(x.Manifests)...)

	for d, desc := range g.blobs {
		n, err := s.exportBlob(ctx, out, repo, d)
		if err != nil {
			return rep, err
		}
		rep.Blobs++
		rep.Bytes += n
		if oci.IsManifestType(desc.MediaType) {
			rep.Manifests++
		}
	}
	idx := ispec.Index{MediaType: ispec.MediaTypeImageIndex, Manifests: []ispec.Descriptor{}}
	idx.SchemaVersion = 2
	for _, d := range roots {
		d.Annotations = withoutPierAnnotations(d.Annotations)
		if t, ok := tagOf(d); ok {
			rep.Tags = append(rep.Tags, t)
		}
		idx.Manifests = append(idx.Manifests, d)
	}
	if _, err := out.WriteFile(ctx, "oci-layout", layoutFile); err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	body, err := json.Marshal(idx)
	if err != nil {
		return rep, err
	}
	if _, err := out.WriteFile(ctx, "index.json", body); err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	return rep, nil
}

// withoutPierAnnotations drops pier's bookkeeping from an index entry.
func withoutPierAnnotations(a map[string]string) map[string]string {
	if _, ok := a[AnnotationUntaggedSince]; !ok {
		return a
	}
	out := map[string]string{}
	for k, v := range a {
		if k != AnnotationUntaggedSince {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// exportBlob copies one blob into the layout, verifying it.
func (s *Store) exportBlob(ctx context.Context, out driver.Driver, repo string, d digest.Digest) (int64, error) {
	dst := "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
	if info, err := out.Stat(ctx, dst); err == nil && hasDigest(ctx, out, dst, d) {
		return info.Size, nil // an earlier, interrupted export already wrote it
	}
	f, _, err := s.OpenBlob(ctx, repo, d)
	if err != nil {
		return 0, fmt.Errorf("export blob %s: %w", d, err)
	}
	defer f.Close()
	tmp := "blobs/.export-" + d.Encoded()
	w, err := out.Create(ctx, tmp)
	if errors.Is(err, driver.ErrExists) {
		out.Delete(ctx, tmp)
		w, err = out.Create(ctx, tmp)
	}
	if err != nil {
		return 0, fmt.Errorf("export blob %s: %w", d, err)
	}
	h := d.Algorithm().Hash()
	n, err := io.Copy(io.MultiWriter(w, h), ctxReader{ctx, f})
	if err == nil && digest.NewDigest(d.Algorithm(), h) != d {
		err = fmt.Errorf("%w: blob %s of %s is corrupt in the store (run pier scrub)", ErrDigestMismatch, d, repo)
	}
	if err == nil {
		err = w.Commit(ctx, dst)
	}
	if err != nil {
		w.Cancel(ctx)
		return 0, fmt.Errorf("export blob %s: %w", d, err)
	}
	return n, nil
}

func hasDigest(ctx context.Context, drv driver.Driver, key string, d digest.Digest) bool {
	f, _, err := drv.Open(ctx, key)
	if err != nil {
		return false
	}
	defer f.Close()
	got, err := d.Algorithm().FromReader(ctxReader{ctx, f})
	return err == nil && got == d
}

// graph is what a set of manifests reaches in one repository (or layout).
type graph struct {
	ctx       context.Context
	read      func(digest.Digest) ([]byte, error) // a manifest's bytes, checked against its digest
	manifests map[digest.Digest]*manifestDoc
	blobs     map[digest.Digest]ispec.Descriptor
	order     []ispec.Descriptor // manifests, children before parents
}

func (g *graph) readManifest(d digest.Digest) ([]byte, error) { return g.read(d) }

// layoutManifest reads manifest d from a layout, checked against d.
func layoutManifest(ctx context.Context, layout driver.Driver, d digest.Digest) ([]byte, error) {
	if _, err := oci.ParseDigest(d.String()); err != nil {
		return nil, err
	}
	b, _, err := layout.ReadFile(ctx, "blobs/"+d.Algorithm().String()+"/"+d.Encoded(), oci.MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not in the layout (or too large): %v", ErrManifestBlobUnknown, d, err)
	}
	if d.Algorithm().FromBytes(b) != d {
		return nil, fmt.Errorf("%w: manifest %s in the layout does not match its digest", ErrDigestMismatch, d)
	}
	return b, nil
}

// add records manifest desc and everything below it.
func (g *graph) add(desc ispec.Descriptor) error {
	if _, seen := g.manifests[desc.Digest]; seen {
		return nil
	}
	body, err := g.readManifest(desc.Digest)
	if err != nil {
		return err
	}
	m, err := decodeStored(body)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	if m.MediaType == "" {
		m.MediaType = desc.MediaType
	}
	g.manifests[desc.Digest] = m
	g.blobs[desc.Digest] = desc
	for _, c := range m.Manifests {
		if err := g.add(c.spec()); err != nil {
			return err
		}
	}
	if m.Config != nil {
		g.blobs[m.Config.Digest] = m.Config.spec()
	}
	for _, l := range m.Layers {
		if oci.IsForeignLayer(string(l.MediaType)) {
			continue // never pushed: fetched from elsewhere
		}
		g.blobs[l.Digest] = l.spec()
	}
	g.order = append(g.order, desc)
	return nil
}

// referrers adds, from candidates, the manifests whose subject is in the
// graph (repeatedly: a signature of an SBOM follows the SBOM), and returns
// them as index entries.
func (g *graph) referrers(candidates []ispec.Descriptor) []ispec.Descriptor {
	var out []ispec.Descriptor
	for changed := true; changed; {
		changed = false
		for _, c := range candidates {
			if _, in := g.manifests[c.Digest]; in {
				continue
			}
			body, err := g.readManifest(c.Digest)
			if err != nil {
				continue
			}
			m, err := decodeStored(body)
			if err != nil || m.Subject == nil {
				continue
			}
			if _, live := g.manifests[m.Subject.Digest]; live && g.add(c) == nil {
				c.Annotations = nil
				out = append(out, c)
				changed = true
			}
		}
	}
	return out
}

// Import adds the content and tags of the OCI layout in layout to repo
// through the normal commit path: every blob is verified against its
// digest and deduped, every manifest validated, children before their
// index. Tags come from org.opencontainers.image.ref.name (a full
// reference such as example.com/app:v1 gives v1).
func (s *Store) Import(ctx context.Context, layout driver.Driver, repo string) (TransferReport, error) {
	var rep TransferReport
	if err := s.writable(); err != nil {
		return rep, err
	}
	b, _, err := layout.ReadFile(ctx, "index.json", maxIndexSize)
	if err != nil {
		return rep, fmt.Errorf("import: %s is not an OCI layout: %w", layout, err)
	}
	var idx ispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return rep, fmt.Errorf("import: %s/index.json: %w", layout, err)
	}
	g := &graph{ctx: ctx, read: func(d digest.Digest) ([]byte, error) { return layoutManifest(ctx, layout, d) },
		manifests: map[digest.Digest]*manifestDoc{}, blobs: map[digest.Digest]ispec.Descriptor{}}
	for _, d := range idx.Manifests {
		if err := g.add(d); err != nil {
			return rep, fmt.Errorf("import: %w", err)
		}
	}
	for d, desc := range g.blobs {
		if _, isManifest := g.manifests[d]; isManifest {
			continue // pushed as manifests below
		}
		n, err := s.importBlob(ctx, layout, repo, desc)
		if err != nil {
			return rep, err
		}
		rep.Blobs++
		rep.Bytes += n
	}
	tags := map[digest.Digest][]string{}
	for _, d := range idx.Manifests {
		if t, ok := tagOf(d); ok {
			tags[d.Digest] = append(tags[d.Digest], t)
			rep.Tags = append(rep.Tags, t)
		}
	}
	for _, desc := range g.order {
		body, err := g.readManifest(desc.Digest)
		if err != nil {
			return rep, err
		}
		if _, err := s.PutManifest(ctx, repo, desc.Digest.String(), desc.MediaType, body, tags[desc.Digest]); err != nil {
			return rep, fmt.Errorf("import manifest %s: %w", desc.Digest, err)
		}
		rep.Manifests++
	}
	return rep, nil
}

func (s *Store) importBlob(ctx context.Context, layout driver.Driver, repo string, desc ispec.Descriptor) (int64, error) {
	if _, err := oci.ParseDigest(desc.Digest.String()); err != nil {
		return 0, err
	}
	// A blob already here is skipped only when it is known to hold its
	// digest; otherwise PutBlob compares it with the layout's and replaces
	// it when it is damaged.
	if info, err := s.drv.Stat(ctx, blobKey(repo, desc.Digest)); err == nil && s.verified.has(info.Content, desc.Digest) {
		return info.Size, nil
	}
	f, _, err := layout.Open(ctx, "blobs/"+desc.Digest.Algorithm().String()+"/"+desc.Digest.Encoded())
	if driver.IsNotFound(err) {
		return 0, fmt.Errorf("import: %w: %s is not in the layout", ErrBlobUnknown, desc.Digest)
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	info, err := s.PutBlob(ctx, repo, desc.Digest, f)
	if err != nil {
		return 0, fmt.Errorf("import blob %s: %w", desc.Digest, err)
	}
	return info.Size, nil
}
