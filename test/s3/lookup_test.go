package s3

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/tool"
)

// writeLayout writes img as an OCI layout in dir, for crane push.
func writeLayout(t *testing.T, dir string, img ociclient.Image) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	all := map[digest.Digest][]byte{img.Digest: img.Manifest}
	for d, data := range img.Blobs {
		all[d] = data
	}
	for d, data := range all {
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := json.Marshal(ispec.Index{Versioned: specsV2, MediaType: ispec.MediaTypeImageIndex,
		Manifests: []ispec.Descriptor{{MediaType: ispec.MediaTypeImageManifest, Digest: img.Digest, Size: int64(len(img.Manifest))}}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// With storage.storeWideLookup on, 20 images that share three base layers,
// pushed with crane into 20 repositories, send about their unique bytes
// once: crane's HEAD of a base layer in a new repository finds it in
// another, and the manifest push brings it in. Off, every repository gets
// every layer uploaded, as the spec has it. Every image pulls whole either
// way.
func TestStoreWideLookupFleet(t *testing.T) {
	tool.Path(t, "crane")
	var base [][]byte
	for range 3 {
		base = append(base, random(400_000))
	}
	var imgs []ociclient.Image
	var unique int64
	for i := range 20 {
		own := random(50_000 + i*1000)
		imgs = append(imgs, image(fmt.Sprintf("fleet/app%02d", i), append(append([][]byte{}, base...), own)...))
		unique += int64(len(own))
	}
	for _, b := range base {
		unique += int64(len(b))
	}
	dirs := make([]string, len(imgs))
	for i, img := range imgs {
		dirs[i] = filepath.Join(t.TempDir(), "layout")
		writeLayout(t, dirs[i], img)
	}
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("lookup=%v", on), func(t *testing.T) {
			b := bucket.New(t)
			p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{
				"dedupe": true, "remoteCache": true, "cacheDriver": redisIndex(t, b), "storeWideLookup": on})})
			addr, sent := counting(t, p.Addr)
			run := tool.Runner{Env: tool.Env(t), Dir: t.TempDir()}
			start := time.Now()
			for i := range imgs {
				run.Run(t, "crane", "--insecure", "push", dirs[i], fmt.Sprintf("%s/fleet/app%02d:v1", addr, i))
			}
			took := time.Since(start)
			mib := float64(sent.Load()) / (1 << 20)
			t.Logf("20 images (%.1f MiB unique) pushed with crane: %.1f MiB sent in %v", float64(unique)/(1<<20), mib, took.Round(time.Millisecond))
			if on && sent.Load() > unique*13/10 {
				t.Errorf("with the lookup on, crane sent %.1f MiB for %.1f MiB of unique layers", mib, float64(unique)/(1<<20))
			}
			if !on && sent.Load() < unique*3 {
				t.Errorf("with the lookup off, crane sent only %.1f MiB: the base layers should go to each repository", mib)
			}
			c := ociclient.New(p.Addr)
			for i, img := range imgs {
				wantImage(t, fmt.Sprintf("fleet/app%02d", i), "v1", img, c)
			}
		})
	}
}

// With the lookup on, a client HEADs a blob that only an unreferenced
// upload in another repository holds, and pushes a manifest naming it while
// garbage collection (gcDelay 0) takes that repository's blobs: each push
// either succeeds and the image pulls whole, or fails with
// MANIFEST_BLOB_UNKNOWN.
func TestStoreWideLookupRacesGC(t *testing.T) {
	b := bucket.New(t)
	p := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{
		"dedupe": true, "remoteCache": true, "cacheDriver": redisIndex(t, b), "storeWideLookup": true,
		"gc": true, "gcDelay": "0s", "gcInterval": "1s"})})
	c := ociclient.New(p.Addr)
	var ok, refused int
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; time.Now().Before(deadline) || ok == 0 || refused == 0; i++ {
		if i > 400 {
			break
		}
		layer := random(30_000)
		ld, err := c.PushBlob("src", layer) // garbage at once
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.HeadBlob("dst", ld); err != nil {
			continue // collected before the HEAD: the client would upload it
		}
		time.Sleep(time.Duration(i%7) * 20 * time.Millisecond)
		img := image("dst", layer)
		cfgD := digest.FromBytes(img.Blobs[firstOther(img, ld)])
		if _, err := c.PushBlob("dst", img.Blobs[cfgD]); err != nil {
			t.Fatal(err)
		}
		tag := fmt.Sprintf("t%d", i)
		_, err = c.PutManifest("dst", tag, ispec.MediaTypeImageManifest, img.Manifest)
		var se *ociclient.StatusError
		switch {
		case err == nil:
			ok++
			wantImage(t, "dst", tag, img, c)
		case errors.As(err, &se) && se.Status == http.StatusBadRequest && containsCode(se.Body, "MANIFEST_BLOB_UNKNOWN"):
			refused++
		default:
			t.Fatalf("a manifest push racing GC: %v; want success or MANIFEST_BLOB_UNKNOWN", err)
		}
	}
	t.Logf("%d pushes went through whole, %d were refused with MANIFEST_BLOB_UNKNOWN", ok, refused)
}

func firstOther(img ociclient.Image, not digest.Digest) digest.Digest {
	for d := range img.Blobs {
		if d != not {
			return d
		}
	}
	return ""
}

func containsCode(body, code string) bool { return json.Valid([]byte(body)) && contains(body, code) }
