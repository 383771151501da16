// Package testimage makes small, real, deterministic OCI images offline:
// gzipped tar layers, an image config, manifests and multi-arch indexes,
// written to and read from OCI image layouts on disk.
//
// It uses only the standard library so that what a client copies can be
// compared against bytes that no client produced.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
)

// OCI media types used here.
const (
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Blob is content with its media type; its digest is computed from Data.
type Blob struct {
	MediaType string
	Data      []byte
}

// Digest is "sha256:<hex>" of Data.
func (b Blob) Digest() string { return Digest(b.Data) }

// Descriptor points at b.
func (b Blob) Descriptor() Descriptor {
	return Descriptor{MediaType: b.MediaType, Digest: b.Digest(), Size: int64(len(b.Data))}
}

// Digest is the sha256 digest string of data.
func Digest(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Platform is the os/architecture an image runs on.
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
}

// Image is a manifest with its config and layers.
type Image struct {
	Manifest Blob
	Config   Blob
	Layers   []Blob
}

// Blobs are every blob the image needs besides its manifest.
func (im Image) Blobs() []Blob { return append([]Blob{im.Config}, im.Layers...) }

// Index is a multi-platform image index with its images.
type Index struct {
	Manifest Blob
	Images   []Image
}

// Layer is a gzipped tar holding files (name → content), in the given
// order, with fixed times so that the same files give the same digest.
func Layer(files ...File) Blob {
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	for _, f := range files {
		hdr := &tar.Header{
			Name:    f.Name,
			Mode:    0o644,
			Size:    int64(len(f.Data)),
			ModTime: time.Unix(0, 0),
			Format:  tar.FormatPAX,
		}
		must(tw.WriteHeader(hdr))
		_, err := tw.Write(f.Data)
		must(err)
	}
	must(tw.Close())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz) // no name and zero ModTime: deterministic
	_, err := zw.Write(tarball.Bytes())
	must(err)
	must(zw.Close())
	return Blob{MediaType: MediaTypeLayer, Data: gz.Bytes()}
}

// File is one regular file in a layer.
type File struct {
	Name string
	Data []byte
}

// NewImage is an image of n layers for platform. Each layer holds a text
// file and 32 KiB of incompressible bytes drawn from seed, so different
// seeds give different blobs and a truncated or altered blob shows.
func NewImage(seed string, n int, p Platform) Image {
	rng := rand.New(rand.NewChaCha8(sha256.Sum256([]byte(seed))))
	var im Image
	diffIDs := []string{}
	for i := range n {
		noise := make([]byte, 32<<10)
		for j := range noise {
			noise[j] = byte(rng.Uint32())
		}
		layer := Layer(
			File{fmt.Sprintf("etc/%s-%d.txt", seed, i), []byte(fmt.Sprintf("layer %d of %s\n", i, seed))},
			File{fmt.Sprintf("var/lib/%s/%d.bin", seed, i), noise},
		)
		im.Layers = append(im.Layers, layer)
		diffIDs = append(diffIDs, diffID(layer))
	}
	cfg := map[string]any{
		"created":      "2024-01-01T00:00:00Z",
		"architecture": p.Architecture,
		"os":           p.OS,
		"config":       map[string]any{"Cmd": []string{"/bin/true"}, "Labels": map[string]string{"seed": seed}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	im.Config = Blob{MediaType: MediaTypeConfig, Data: mustJSON(cfg)}
	layers := make([]Descriptor, len(im.Layers))
	for i, l := range im.Layers {
		layers[i] = l.Descriptor()
	}
	im.Manifest = Blob{MediaType: MediaTypeManifest, Data: mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeManifest,
		"config":        im.Config.Descriptor(),
		"layers":        layers,
		"annotations":   map[string]string{"org.opencontainers.image.title": seed},
	})}
	return im
}

// NewIndex is an index over images, each described with its platform.
func NewIndex(platforms []Platform, images []Image) Index {
	descs := make([]Descriptor, len(images))
	for i, im := range images {
		d := im.Manifest.Descriptor()
		d.Platform = &platforms[i]
		descs[i] = d
	}
	return Index{
		Images: images,
		Manifest: Blob{MediaType: MediaTypeIndex, Data: mustJSON(map[string]any{
			"schemaVersion": 2,
			"mediaType":     MediaTypeIndex,
			"manifests":     descs,
		})},
	}
}

// NewMultiArch is an index of one n-layer image per platform.
func NewMultiArch(seed string, n int, platforms ...Platform) Index {
	images := make([]Image, len(platforms))
	for i, p := range platforms {
		images[i] = NewImage(fmt.Sprintf("%s-%s-%s", seed, p.OS, p.Architecture), n, p)
	}
	return NewIndex(platforms, images)
}

// diffID is the digest of the uncompressed layer, as the config lists it.
func diffID(layer Blob) string {
	zr, err := gzip.NewReader(bytes.NewReader(layer.Data))
	must(err)
	var raw bytes.Buffer
	_, err = raw.ReadFrom(zr)
	must(err)
	return Digest(raw.Bytes())
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	must(err)
	return data
}

// must panics on errors that cannot happen when writing to memory.
func must(err error) {
	if err != nil {
		panic(err)
	}
}
