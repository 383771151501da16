package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// The fleet of BenchmarkImages20: every image has the same base layers
// and one or two layers of its own, as the images of one product do.
const (
	fleetImages     = 20
	fleetBaseLayers = 3
	fleetBaseSize   = 8 * MiB
)

// fleet builds the images and the set of shared (base) layer digests.
func fleet() ([]image, map[digest.Digest]bool) {
	var base [][]byte
	shared := map[digest.Digest]bool{}
	for i := range fleetBaseLayers {
		l := randomBytes(uint64(1000+i), fleetBaseSize)
		base = append(base, l)
		shared[digest.FromBytes(l)] = true
	}
	var imgs []image
	for i := range fleetImages {
		layers := append([][]byte{}, base...)
		for j := range 1 + i%2 {
			size := (1 + (i*7+j*3)%4) * MiB // 1 to 4 MiB
			layers = append(layers, randomBytes(uint64(2000+i*10+j), size))
		}
		config := fmt.Appendf(nil, `{"architecture":"arm64","os":"linux","config":{"Labels":{"app":"app%02d"}},"rootfs":{"type":"layers","diff_ids":[]}}`, i)
		imgs = append(imgs, newImage(config, layers...))
	}
	return imgs, shared
}

func fleetRepo(i int) string { return fmt.Sprintf("fleet/app%02d", i) }

// BenchmarkImages20 pushes 20 images that share three 8 MiB base layers
// to 20 repositories, one after another as a CI job would: the first
// uploads everything, the others HEAD each blob and mount the base layers
// from the first repository, uploading only their own layers. Then it
// pulls every image (manifest by tag, config, layers). Push is compared
// with sha256 (on the bytes sent), pull with reading the same blob files
// from the page cache. There is no target: many small requests, not
// hashing, bound this push. It runs with dedupe on (the default, as in zot)
// and off, since dedupe adds an index write to every blob commit and
// mount.
func BenchmarkImages20(b *testing.B) {
	imgs, shared := fleet()
	var logical int64
	for _, img := range imgs {
		logical += img.Size
	}
	for _, dedupe := range []bool{true, false} {
		name := "dedupe"
		if !dedupe {
			name = "nodedupe"
		}
		b.Run(name, func(b *testing.B) {
			sha := sha256MiBs(b)
			var pushTook, pullTook time.Duration
			var sent, received int64
			var pageCache float64
			var ops opTimes
			for range b.N {
				p := startPier(b, pierproc.Options{Storage: map[string]any{"dedupe": dedupe}})
				sent, received, ops = 0, 0, opTimes{}
				b.ResetTimer()
				pushTook = timed(b, func() error {
					for i, img := range imgs {
						from := ""
						if i > 0 {
							from = fleetRepo(0)
						}
						n, err := pushImage(p.Client, fleetRepo(i), "v1", img, from, shared, &ops)
						sent += n
						if err != nil {
							return err
						}
					}
					return nil
				})
				b.StopTimer()
				var files []string
				for i, img := range imgs {
					for d := range img.Blobs {
						files = append(files, blobFile(p, fleetRepo(i), d))
					}
				}
				pageCache = pageCacheMiBs(b, files...)
				buf := make([]byte, pullBufSize)
				b.StartTimer()
				pullTook = timed(b, func() error {
					for i := range imgs {
						n, err := pullImage(p.Client, fleetRepo(i), "v1", buf)
						received += n
						if err != nil {
							return err
						}
					}
					return nil
				})
				b.StopTimer()
			}
			b.Logf("fleet: %d images, %.0f MiB of images, %.0f MiB sent (the rest mounted); push %v, pull %v (%.0f MiB)",
				len(imgs), float64(logical)/MiB, float64(sent)/MiB, pushTook.Round(time.Millisecond), pullTook.Round(time.Millisecond), float64(received)/MiB)
			b.Logf("push requests: %v", &ops)
			record(b, measure{
				name:  fmt.Sprintf("push %d images, %s (%.0f MiB sent) in %.2fs", len(imgs), name, float64(sent)/MiB, pushTook.Seconds()),
				value: mibps(sent, pushTook), unit: "MiB/s", limit: sha, limitName: "sha256", metric: "x_sha256",
			}, nil)
			record(b, measure{
				name:  fmt.Sprintf("pull %d images, %s (%.0f MiB) in %.2fs", len(imgs), name, float64(received)/MiB, pullTook.Seconds()),
				value: mibps(received, pullTook), unit: "MiB/s", limit: pageCache, limitName: "page-cache read", metric: "x_pagecache",
			}, nil)
		})
	}
}
