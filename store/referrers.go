package store

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
)

// Referrers lists the manifests of repo whose subject is d, optionally only
// those of one artifactType. A repository or subject that is not known has
// no referrers: the answer is an empty list, not an error.
func (s *Store) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]ispec.Descriptor, error) {
	v, err := s.view(ctx, repo)
	if errors.Is(err, ErrNameUnknown) {
		return []ispec.Descriptor{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []ispec.Descriptor{}
	for _, r := range s.referrersOf(ctx, repo, v)[d] {
		if artifactType == "" || r.ArtifactType == artifactType {
			out = append(out, r)
		}
	}
	return out, nil
}

// referrersOf maps each subject to the manifests of the view that refer to
// it. It reads every manifest of the repository (only their heads: no
// layers) once per version of index.json, not once per query. A map built
// while a manifest could not be read (a layout still being copied in) is
// used for this query only: absence is never remembered.
func (s *Store) referrersOf(ctx context.Context, repo string, v *repoView) map[digest.Digest][]ispec.Descriptor {
	v.refMu.Lock()
	defer v.refMu.Unlock()
	if v.referrers != nil {
		return v.referrers
	}
	bySubject := map[digest.Digest][]ispec.Descriptor{}
	seen := map[digest.Digest]bool{}
	whole := true
	for _, desc := range v.index.Manifests {
		if seen[desc.Digest] || !oci.IsManifestType(desc.MediaType) && desc.MediaType != "" {
			continue
		}
		seen[desc.Digest] = true
		var h *manifestHead
		err := s.readManifest(ctx, repo, desc.Digest, func(body []byte) (err error) {
			h, err = decodeHead(body)
			return err
		})
		if err != nil {
			whole = false
			if ctx.Err() != nil {
				break
			}
			s.log.Warn("referrers: cannot read manifest", "repo", repo, "digest", desc.Digest, "err", err)
			continue
		}
		if h.Subject == nil {
			continue
		}
		if h.MediaType == "" {
			h.MediaType = desc.MediaType
		}
		bySubject[h.Subject.Digest] = append(bySubject[h.Subject.Digest], h.referrerDescriptor(desc.Digest, desc.Size))
	}
	if whole {
		v.referrers = bySubject
	}
	return bySubject
}
