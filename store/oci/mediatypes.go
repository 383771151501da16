package oci

import (
	"strings"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize is the largest manifest pier accepts or serves (4 MiB, as
// the Distribution Spec suggests and every registry enforces).
const MaxManifestSize = 4 << 20

// Manifest media types pier stores. Docker's schema 2 types are accepted
// always: docker and podman push them, and zot's http.compat switch for
// them only exists because zot refused them at first.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	mediaTypeNondistributable   = "application/vnd.oci.image.layer.nondistributable."
)

// IsIndexType reports whether mediaType names a list of manifests.
func IsIndexType(mediaType string) bool {
	return mediaType == ispec.MediaTypeImageIndex || mediaType == MediaTypeDockerManifestList
}

// IsManifestType reports whether pier stores manifests of this media type.
func IsManifestType(mediaType string) bool {
	switch mediaType {
	case ispec.MediaTypeImageManifest, ispec.MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList:
		return true
	}
	return false
}

// IsForeignLayer reports whether a layer is, by definition, fetched from
// elsewhere and never pushed (non-distributable or Docker foreign layers).
func IsForeignLayer(mediaType string) bool {
	return strings.HasPrefix(mediaType, mediaTypeNondistributable) || mediaType == MediaTypeDockerForeignLayer
}
