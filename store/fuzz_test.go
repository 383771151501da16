package store

import (
	"bytes"
	"testing"

	"github.com/pier-oci/pier/store/oci"
)

// Manifests and indexes from the network: parseManifest must never panic,
// and what it accepts is a manifest pier can store and serve, with every
// descriptor's digest one pier can build a path from.
func FuzzParseManifest(f *testing.F) {
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}`
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":`+cfg+`,"layers":[`+cfg+`]}`), "application/vnd.oci.image.manifest.v1+json")
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`+cfg+`]}`), "")
	f.Add([]byte(`{"schemaVersion":2,"config":`+cfg+`,"subject":`+cfg+`}`), "application/vnd.docker.distribution.manifest.v2+json")
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:../../../etc/passwd","size":1}]}`), "")
	f.Add([]byte(`{"schemaVersion":2,"config":{"digest":"sha256:aa","size":-1}}`), "text/plain; charset=\x00")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		m, err := parseManifest(body, contentType)
		if err != nil {
			return
		}
		if !oci.IsManifestType(m.MediaType) {
			t.Fatalf("accepted with media type %q", m.MediaType)
		}
		for d := range m.descriptors() {
			if !oci.ValidDigest(d.Digest) || d.Size < 0 {
				t.Fatalf("accepted a descriptor %s of size %d", d.Digest, d.Size)
			}
		}
		// Stored, it reads back as the same document.
		if _, err := decodeStored(bytes.Clone(body)); err != nil {
			t.Fatalf("accepted, but unreadable once stored: %v", err)
		}
	})
}
