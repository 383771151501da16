package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/disk"
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
// as an OCI Image Layout in dir, for the way out of an air-gapped site: the
// manifests, everything they reach, and the referrers (signatures, SBOMs)
// of what is exported. Every blob is checked against its digest on the
// way and fsynced; index.json is written last, so dir is a valid layout
// only once it is complete. Export only reads the store.
func (s *Store) Export(ctx context.Context, repo, ref, dir string) (TransferReport, error) {
	var rep TransferReport
	x, err := s.readIndex(repo)
	if err != nil {
		return rep, err
	}
	var roots []ispec.Descriptor
	if ref == "" {
		roots = x.Manifests
	} else {
		desc, err := s.resolve(ctx, repo, ref)
		if err != nil {
			return rep, err
		}
		desc.Annotations = nil
		if !oci.IsDigest(ref) {
			desc.Annotations = map[string]string{ispec.AnnotationRefName: ref}
		}
		roots = []ispec.Descriptor{desc}
	}
	g := &graph{ctx: ctx, s: s, repo: repo, manifests: map[digest.Digest]*manifestDoc{}, blobs: map[digest.Digest]ispec.Descriptor{}}
	for _, d := range roots {
		if err := g.add(d); err != nil {
			return rep, err
		}
	}
	roots = append(roots, g.referrers(x.Manifests)...)

	out := &disk.FS{Sync: true} // a USB stick is pulled out right after
	for _, sub := range []string{"blobs/sha256", "blobs/sha512"} {
		if err := out.MkdirAll(filepath.Join(dir, sub)); err != nil {
			return rep, fmt.Errorf("export: %w", err)
		}
	}
	for d, desc := range g.blobs {
		n, err := s.exportBlob(out, repo, d, dir)
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
	if err := out.WriteFile(filepath.Join(dir, "oci-layout"), dir, layoutFile); err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	body, err := json.Marshal(idx)
	if err != nil {
		return rep, err
	}
	if err := out.WriteFile(filepath.Join(dir, "index.json"), dir, body); err != nil {
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

// exportBlob copies one blob into the layout at dir, verifying it.
func (s *Store) exportBlob(out *disk.FS, repo string, d digest.Digest, dir string) (int64, error) {
	dst := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && fileHasDigest(dst, d) {
		return fi.Size(), nil // an earlier, interrupted export already wrote it
	}
	f, _, err := s.OpenBlob(context.Background(), repo, d)
	if err != nil {
		return 0, fmt.Errorf("export blob %s: %w", d, err)
	}
	defer f.Close()
	h := d.Algorithm().Hash()
	var n int64
	err = out.WriteFrom(dst, dir, func(w io.Writer) error {
		var err error
		n, err = io.Copy(io.MultiWriter(w, h), f)
		if err == nil && digest.NewDigest(d.Algorithm(), h) != d {
			return fmt.Errorf("%w: blob %s of %s is corrupt in the store (run pier scrub)", ErrDigestMismatch, d, repo)
		}
		return err
	})
	return n, err
}

func fileHasDigest(path string, d digest.Digest) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	got, err := d.Algorithm().FromReader(f)
	return err == nil && got == d
}

// graph is what a set of manifests reaches in one repository (or layout).
type graph struct {
	ctx       context.Context
	s         *Store // the store to read from; nil when reading a layout
	repo      string
	layout    string // the layout directory when s is nil
	manifests map[digest.Digest]*manifestDoc
	blobs     map[digest.Digest]ispec.Descriptor
	order     []ispec.Descriptor // manifests, children before parents
}

func (g *graph) readManifest(d digest.Digest) ([]byte, error) {
	if g.s != nil {
		var body []byte
		err := g.s.readManifest(g.ctx, g.repo, d, func(b []byte) error {
			body = b
			return nil
		})
		return body, err
	}
	if _, err := oci.ParseDigest(d.String()); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(g.layout, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not in the layout", ErrManifestBlobUnknown, d)
	}
	if len(b) > oci.MaxManifestSize || d.Algorithm().FromBytes(b) != d {
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

// Import adds the content and tags of the OCI layout in dir to repo
// through the normal commit path: every blob is verified against its
// digest and deduped, every manifest validated, children before their
// index. Tags come from org.opencontainers.image.ref.name (a full
// reference such as example.com/app:v1 gives v1).
func (s *Store) Import(ctx context.Context, dir, repo string) (TransferReport, error) {
	var rep TransferReport
	if err := s.writable(); err != nil {
		return rep, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return rep, fmt.Errorf("import: %s is not an OCI layout: %w", dir, err)
	}
	var idx ispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return rep, fmt.Errorf("import: %s/index.json: %w", dir, err)
	}
	g := &graph{ctx: ctx, layout: dir, manifests: map[digest.Digest]*manifestDoc{}, blobs: map[digest.Digest]ispec.Descriptor{}}
	for _, d := range idx.Manifests {
		if err := g.add(d); err != nil {
			return rep, fmt.Errorf("import: %w", err)
		}
	}
	for d, desc := range g.blobs {
		if _, isManifest := g.manifests[d]; isManifest {
			continue // pushed as manifests below
		}
		n, err := s.importBlob(ctx, dir, repo, desc)
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

func (s *Store) importBlob(ctx context.Context, dir, repo string, desc ispec.Descriptor) (int64, error) {
	if _, err := oci.ParseDigest(desc.Digest.String()); err != nil {
		return 0, err
	}
	if info, err := s.StatBlob(ctx, repo, desc.Digest); err == nil {
		return info.Size, nil
	}
	f, err := os.Open(filepath.Join(dir, "blobs", desc.Digest.Algorithm().String(), desc.Digest.Encoded()))
	if errors.Is(err, fs.ErrNotExist) {
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
