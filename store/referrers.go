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
	x, err := s.readIndex(repo)
	if errors.Is(err, ErrNameUnknown) {
		return []ispec.Descriptor{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []ispec.Descriptor{}
	seen := map[digest.Digest]bool{}
	for _, desc := range x.Manifests {
		if seen[desc.Digest] || !oci.IsManifestType(desc.MediaType) && desc.MediaType != "" {
			continue
		}
		seen[desc.Digest] = true
		var m *manifestHead
		err := s.readManifest(ctx, repo, desc.Digest, func(body []byte) (err error) {
			m, err = decodeHead(body)
			return err
		})
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if err != nil {
			s.log.Warn("referrers: cannot read manifest", "repo", repo, "digest", desc.Digest, "err", err)
			continue
		}
		if m.Subject == nil || m.Subject.Digest != d {
			continue
		}
		if m.MediaType == "" {
			m.MediaType = desc.MediaType
		}
		r := m.referrerDescriptor(desc.Digest, desc.Size)
		if artifactType != "" && r.ArtifactType != artifactType {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
