package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"iter"
	"mime"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
)

// A manifest may be 4 MiB: 24,000 layers. Decoded into the image spec's
// generic structures (every descriptor with its annotations, platform and
// URLs, in slices grown by doubling) it took ten times its size, on every
// PUT, GET and referrers query. pier decodes only what it acts on: media
// types, digests, sizes and the subject, into slices sized once. Other
// fields are skipped by the decoder without being stored.

// descriptor is the part of an OCI descriptor pier acts on.
type descriptor struct {
	MediaType mediaType     `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// spec is d as an image-spec descriptor.
func (d descriptor) spec() ispec.Descriptor {
	return ispec.Descriptor{MediaType: string(d.MediaType), Digest: d.Digest, Size: d.Size}
}

// mediaType is a media type from a manifest. The few that nearly every
// descriptor carries are shared rather than allocated once per layer.
type mediaType string

var knownMediaTypes = func() map[string]mediaType {
	m := map[string]mediaType{}
	for _, t := range []string{
		ispec.MediaTypeImageManifest, ispec.MediaTypeImageIndex, ispec.MediaTypeImageConfig,
		ispec.MediaTypeImageLayer, ispec.MediaTypeImageLayerGzip, ispec.MediaTypeImageLayerZstd,
		ispec.MediaTypeEmptyJSON,
		oci.MediaTypeDockerManifest, oci.MediaTypeDockerManifestList, oci.MediaTypeDockerForeignLayer,
		"application/vnd.docker.container.image.v1+json",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
	} {
		m[t] = mediaType(t)
	}
	return m
}()

// UnmarshalJSON implements json.Unmarshaler.
func (t *mediaType) UnmarshalJSON(b []byte) error {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		if known, ok := knownMediaTypes[string(b[1:len(b)-1])]; ok {
			*t = known
			return nil
		}
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*t = mediaType(s)
	return nil
}

// descriptors is a JSON array of descriptors, decoded into a slice of
// exactly its length: the elements are counted before they are decoded,
// so a long list is allocated once instead of grown (and copied) about
// twenty times.
type descriptors []descriptor

// UnmarshalJSON implements json.Unmarshaler.
func (ds *descriptors) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*ds = nil
		return nil
	}
	out := make([]descriptor, 0, countElements(b))
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	*ds = out
	return nil
}

// countElements counts the elements of a JSON array (valid JSON: the
// decoder checked it before handing it over), or returns 0 for anything
// else.
func countElements(b []byte) int {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '[' {
		return 0
	}
	n, depth, inString, escaped, empty := 0, 0, false, false, true
	for _, c := range b[1 : len(b)-1] {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ',' && depth == 0:
			n++
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		empty = false
	}
	if empty {
		return 0
	}
	return n + 1
}

// manifestDoc is the union of the manifest formats pier knows, as far as
// pier reads them: an image manifest has Config and Layers, an index has
// Manifests.
type manifestDoc struct {
	SchemaVersion int         `json:"schemaVersion"`
	MediaType     string      `json:"mediaType,omitempty"`
	Config        *descriptor `json:"config,omitempty"`
	Layers        descriptors `json:"layers,omitempty"`
	Manifests     descriptors `json:"manifests,omitempty"`
	Subject       *descriptor `json:"subject,omitempty"`
}

// manifestHead is what a referrers answer needs of a manifest: no layers.
type manifestHead struct {
	MediaType    string `json:"mediaType,omitempty"`
	ArtifactType string `json:"artifactType,omitempty"`
	Config       *struct {
		MediaType string `json:"mediaType"`
	} `json:"config,omitempty"`
	Subject     *descriptor       `json:"subject,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
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
	for d := range m.descriptors() {
		if !oci.ValidDigest(d.Digest) {
			return nil, fmt.Errorf("%w: it references an unusable digest %q", ErrManifestInvalid, d.Digest)
		}
	}
	return &m, nil
}

// decodeHead decodes what a referrers answer needs of a stored manifest.
func decodeHead(body []byte) (*manifestHead, error) {
	var h manifestHead
	if err := json.Unmarshal(body, &h); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrManifestInvalid, err)
	}
	if h.Subject != nil && !oci.ValidDigest(h.Subject.Digest) {
		return nil, fmt.Errorf("%w: its subject has an unusable digest %q", ErrManifestInvalid, h.Subject.Digest)
	}
	return &h, nil
}

// descriptors yields every descriptor of the manifest.
func (m *manifestDoc) descriptors() iter.Seq[descriptor] {
	return func(yield func(descriptor) bool) {
		if m.Config != nil && !yield(*m.Config) {
			return
		}
		for _, list := range []descriptors{m.Layers, m.Manifests} {
			for _, d := range list {
				if !yield(d) {
					return
				}
			}
		}
		if m.Subject != nil {
			yield(*m.Subject)
		}
	}
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
			// An index lists manifests (image spec, image-index.md);
			// pier stores no other kind, so nothing else can be here.
			if !oci.IsManifestType(string(d.MediaType)) {
				return fmt.Errorf("%w: manifests[%d] is a %s, not a manifest", ErrManifestInvalid, i, d.MediaType)
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

func checkDescriptor(d descriptor) error {
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

// requiredBlobs yields the descriptors that must already be in the
// repository before the manifest is accepted. Non-distributable layers
// (foreign layers) are by definition fetched from elsewhere, and a subject
// may be pushed after its referrers.
func (m *manifestDoc) requiredBlobs() iter.Seq[descriptor] {
	return func(yield func(descriptor) bool) {
		if oci.IsIndexType(m.MediaType) {
			for _, c := range m.Manifests {
				if !yield(c) {
					return
				}
			}
			return
		}
		if m.Config != nil && !yield(*m.Config) {
			return
		}
		for _, l := range m.Layers {
			if !oci.IsForeignLayer(string(l.MediaType)) && !yield(l) {
				return
			}
		}
	}
}

// references reports whether the manifest points at d (as config, layer or
// child), which a blob delete must respect.
func (m *manifestDoc) references(d digest.Digest) bool {
	if m.Config != nil && m.Config.Digest == d {
		return true
	}
	for _, list := range []descriptors{m.Layers, m.Manifests} {
		for _, x := range list {
			if x.Digest == d {
				return true
			}
		}
	}
	return false
}

// referrerDescriptor describes the manifest in a referrers response: its
// artifactType falls back to the config's media type, as the spec says.
func (h *manifestHead) referrerDescriptor(d digest.Digest, size int64) ispec.Descriptor {
	at := h.ArtifactType
	if at == "" && h.Config != nil {
		at = h.Config.MediaType
	}
	return ispec.Descriptor{
		MediaType:    h.MediaType,
		ArtifactType: at,
		Digest:       d,
		Size:         size,
		Annotations:  h.Annotations,
	}
}
