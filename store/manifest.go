package store

import (
	"encoding/json"
	"fmt"
	"mime"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
)

// manifestDoc is the union of the manifest formats pier knows: an image
// manifest has Config and Layers, an index has Manifests.
type manifestDoc struct {
	SchemaVersion int                `json:"schemaVersion"`
	MediaType     string             `json:"mediaType,omitempty"`
	ArtifactType  string             `json:"artifactType,omitempty"`
	Config        *ispec.Descriptor  `json:"config,omitempty"`
	Layers        []ispec.Descriptor `json:"layers,omitempty"`
	Manifests     []ispec.Descriptor `json:"manifests,omitempty"`
	Subject       *ispec.Descriptor  `json:"subject,omitempty"`
	Annotations   map[string]string  `json:"annotations,omitempty"`
}

// parseManifest decodes and checks a manifest body. contentType is the
// media type the client declared (may be empty); the result carries the
// media type the manifest is stored and served with.
func parseManifest(body []byte, contentType string) (*manifestDoc, error) {
	if len(body) > oci.MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrManifestTooLarge, len(body), oci.MaxManifestSize)
	}
	var m manifestDoc
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrManifestInvalid, err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion %d is not supported (only 2)", ErrManifestInvalid, m.SchemaVersion)
	}
	declared := ""
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return nil, fmt.Errorf("%w: Content-Type %q: %v", ErrManifestInvalid, contentType, err)
		}
		declared = mt
	}
	switch {
	case m.MediaType != "" && declared != "" && m.MediaType != declared:
		return nil, fmt.Errorf("%w: Content-Type %s does not match the manifest's mediaType %s", ErrManifestInvalid, declared, m.MediaType)
	case m.MediaType == "" && oci.IsManifestType(declared):
		m.MediaType = declared
	case m.MediaType == "" && m.Config != nil:
		m.MediaType = ispec.MediaTypeImageManifest
	case m.MediaType == "" && m.Manifests != nil:
		m.MediaType = ispec.MediaTypeImageIndex
	}
	if !oci.IsManifestType(m.MediaType) {
		return nil, fmt.Errorf("%w: media type %q is not a manifest type pier stores", ErrManifestInvalid, m.MediaType)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// decodeStored decodes a manifest read from the disk. Its digests are
// input like any other (a hosted layout may have been written by anything):
// one that pier cannot build a path from makes the manifest unusable.
func decodeStored(body []byte) (*manifestDoc, error) {
	var m manifestDoc
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrManifestInvalid, err)
	}
	for _, d := range m.descriptors() {
		if !oci.ValidDigest(d.Digest) {
			return nil, fmt.Errorf("%w: it references an unusable digest %q", ErrManifestInvalid, d.Digest)
		}
	}
	return &m, nil
}

// descriptors lists every descriptor of the manifest.
func (m *manifestDoc) descriptors() []ispec.Descriptor {
	var out []ispec.Descriptor
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	out = append(out, m.Layers...)
	out = append(out, m.Manifests...)
	if m.Subject != nil {
		out = append(out, *m.Subject)
	}
	return out
}

// check verifies the shape of the manifest for its media type and every
// descriptor's digest and size.
func (m *manifestDoc) check() error {
	if oci.IsIndexType(m.MediaType) {
		if m.Config != nil || m.Layers != nil {
			return fmt.Errorf("%w: an index has no config or layers", ErrManifestInvalid)
		}
		for i, d := range m.Manifests {
			if err := checkDescriptor(d); err != nil {
				return fmt.Errorf("manifests[%d]: %w", i, err)
			}
		}
	} else {
		if m.Config == nil {
			return fmt.Errorf("%w: an image manifest needs a config", ErrManifestInvalid)
		}
		if m.Manifests != nil {
			return fmt.Errorf("%w: an image manifest has no manifests list", ErrManifestInvalid)
		}
		if err := checkDescriptor(*m.Config); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		for i, d := range m.Layers {
			if err := checkDescriptor(d); err != nil {
				return fmt.Errorf("layers[%d]: %w", i, err)
			}
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor(*m.Subject); err != nil {
			return fmt.Errorf("subject: %w", err)
		}
	}
	return nil
}

func checkDescriptor(d ispec.Descriptor) error {
	if _, err := oci.ParseDigest(string(d.Digest)); err != nil {
		return fmt.Errorf("%w: descriptor digest: %v", ErrManifestInvalid, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: descriptor %s has a negative size", ErrManifestInvalid, d.Digest)
	}
	if d.MediaType == "" {
		return fmt.Errorf("%w: descriptor %s has no mediaType", ErrManifestInvalid, d.Digest)
	}
	return nil
}

// requiredBlobs lists the descriptors that must already be in the
// repository before the manifest is accepted. Non-distributable layers
// (foreign layers) are by definition fetched from elsewhere, and a subject
// may be pushed after its referrers.
func (m *manifestDoc) requiredBlobs() []ispec.Descriptor {
	if oci.IsIndexType(m.MediaType) {
		return m.Manifests
	}
	out := []ispec.Descriptor{*m.Config}
	for _, l := range m.Layers {
		if oci.IsForeignLayer(l.MediaType) {
			continue
		}
		out = append(out, l)
	}
	return out
}

// references lists every digest the manifest points at (config, layers,
// children), which a blob delete must respect.
func (m *manifestDoc) references() []digest.Digest {
	var out []digest.Digest
	if m.Config != nil {
		out = append(out, m.Config.Digest)
	}
	for _, d := range m.Layers {
		out = append(out, d.Digest)
	}
	for _, d := range m.Manifests {
		out = append(out, d.Digest)
	}
	return out
}

// referrerDescriptor describes the manifest in a referrers response: its
// artifactType falls back to the config's media type, as the spec says.
func (m *manifestDoc) referrerDescriptor(d digest.Digest, size int64) ispec.Descriptor {
	at := m.ArtifactType
	if at == "" && m.Config != nil {
		at = m.Config.MediaType
	}
	return ispec.Descriptor{
		MediaType:    m.MediaType,
		ArtifactType: at,
		Digest:       d,
		Size:         size,
		Annotations:  m.Annotations,
	}
}
