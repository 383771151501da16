package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	s3driver "github.com/pier-oci/pier/store/driver/s3"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// pier on a bucket (the S3 server of test/services.sh): a push and a pull
// of 256 MiB through pier against the same bytes put and got with the
// SDK; pier's peak RSS while 4 clients push 256 MiB each; and the
// store-wide lookup's uploads.

// s3Storage is a pier storage section on a fresh prefix of the test
// bucket.
func s3Storage(b *testing.B, name string, keys map[string]any) map[string]any {
	cfg := s3Config(b, "")
	root := fmt.Sprintf("bench-%s-%d", name, time.Now().UnixNano())
	m := map[string]any{"storageDriver": map[string]any{
		"name": "s3", "regionendpoint": cfg.Endpoint, "region": cfg.Region, "bucket": cfg.Bucket,
		"rootdirectory": "/" + root, "accesskey": cfg.AccessKey, "secretkey": cfg.SecretKey,
	}}
	for k, v := range keys {
		m[k] = v
	}
	return m
}

// BenchmarkS3Pier pushes 256 MiB to pier on s3 (POST and one streamed
// PUT, as oras does) and pulls it back, against a PutObject and a
// GetObject of the same bytes with the SDK. Targets: push >= 0.6x, pull >=
// 0.7x. Also reported, with no target: the push by one PATCH then an empty
// PUT (docker, crane, skopeo), and the pull with redirectBlobURL on.
func BenchmarkS3Pier(b *testing.B) {
	data, d := blob256(b)
	size := int64(len(data))
	ctx := context.Background()
	cfg := s3Config(b, fmt.Sprintf("bench-sdk-%d/", time.Now().UnixNano()))
	drv, err := s3driver.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	client, bucket, key := drv.Client(), cfg.Bucket, cfg.Prefix+"blob"
	defer client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key})
	var sdkPut, sdkGet, push, patchPush, pull, redirectPull time.Duration
	buf := make([]byte, pullBufSize)
	for range b.N {
		p := startPier(b, pierproc.Options{Storage: s3Storage(b, "pier", map[string]any{"dedupe": true})})
		// Every attempt pushes bytes the bucket does not hold yet: with
		// dedupe on, the same bytes again would be stored as a placeholder.
		own := slices.Clone(data)
		n := 0
		fresh := func() digest.Digest {
			n++
			binary.BigEndian.PutUint64(own, uint64(time.Now().UnixNano()))
			return digest.FromBytes(own)
		}
		// The SDK's put and pier's pushes take turns, each from a disk
		// with nothing left to write back (sync): the server's disk is
		// what the three measure, and the writeback of one would slow
		// the next.
		const never = time.Duration(1<<63 - 1)
		sdkPut, push, patchPush = never, never, never
		for range attempts {
			syscall.Sync()
			sdkPut = min(sdkPut, timed(b, func() error {
				_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(data), ContentLength: aws.Int64(size)})
				return err
			}))
			od := fresh()
			syscall.Sync()
			push = min(push, timed(b, func() error {
				return p.Client.PushBlobStream(fmt.Sprintf("bench/s3-%d", n), od, bytes.NewReader(own), size)
			}))
			od = fresh()
			syscall.Sync()
			patchPush = min(patchPush, timed(b, func() error {
				return p.Client.PushBlobPatch(fmt.Sprintf("bench/s3-%d", n), od, bytes.NewReader(own), size)
			}))
		}
		if err := p.Client.PushBlobStream("bench/s3-pull", d, bytes.NewReader(data), size); err != nil {
			b.Fatal(err)
		}
		// The SDK's get and pier's pull take turns too, so that both see
		// the machine as it is at that moment.
		sdkGet, pull = never, never
		for range attempts {
			sdkGet = min(sdkGet, timed(b, func() error {
				out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
				if err != nil {
					return err
				}
				defer out.Body.Close()
				return readAll(out.Body, buf, size)
			}))
			pull = min(pull, timed(b, func() error { return getBlob(p.Client, "bench/s3-pull", d, size, buf) }))
		}
		r := startPier(b, pierproc.Options{Storage: s3Storage(b, "redirect", map[string]any{"dedupe": true, "redirectBlobURL": true})})
		if err := r.Client.PushBlobStream("bench/s3-pull", d, bytes.NewReader(data), size); err != nil {
			b.Fatal(err)
		}
		redirectPull = bestOf(b, attempts, func() time.Duration {
			return timed(b, func() error { return getBlob(r.Client, "bench/s3-pull", d, size, buf) })
		})
	}
	record(b, measure{name: "pier on s3: push 256MiB", value: mibps(size, push), unit: "MiB/s",
		limit: mibps(size, sdkPut), limitName: "SDK PutObject", metric: "x_sdk_put"}, ratioAtLeast(s3PutTarget))
	// Pushed as docker, crane and skopeo push (the digest comes after the
	// bytes): the upload is copied to the blob's key on the server.
	record(b, measure{name: "pier on s3: push 256MiB by PATCH", value: mibps(size, patchPush), unit: "MiB/s",
		limit: mibps(size, sdkPut), limitName: "SDK PutObject", metric: "x_sdk_put_patch"}, nil)
	record(b, measure{name: "pier on s3: pull 256MiB", value: mibps(size, pull), unit: "MiB/s",
		limit: mibps(size, sdkGet), limitName: "SDK GetObject", metric: "x_sdk_get"}, ratioAtLeast(s3GetTarget))
	// With redirectBlobURL the client fetches from the bucket: pier only
	// checks the blob and answers 307.
	record(b, measure{name: "pier on s3: pull 256MiB, redirectBlobURL", value: mibps(size, redirectPull), unit: "MiB/s",
		limit: mibps(size, sdkGet), limitName: "SDK GetObject", metric: "x_sdk_get_redirect"}, nil)
}

// BenchmarkS3PierPeakRSS is pier's peak resident size (VmHWM) on s3, under
// the packaged unit's GOMEMLIMIT, while 4 clients push 256 MiB each at
// once (the data made as it is sent). Target: <= 64 MiB.
func BenchmarkS3PierPeakRSS(b *testing.B) {
	var hwm int64
	for range b.N {
		p := startPier(b, pierproc.Options{Storage: s3Storage(b, "rss", map[string]any{"dedupe": true}), Env: []string{"GOMEMLIMIT=64MiB"}})
		var wg sync.WaitGroup
		errs := make(chan error, s3Concurrent)
		start := time.Now()
		for i := range s3Concurrent {
			wg.Go(func() {
				seed := uint64(7000 + i)
				d, err := streamDigest(seed, 256*MiB)
				if err == nil {
					err = p.Client.PushBlobStream(fmt.Sprintf("rss/%d", i), d, randomStream(seed, 256*MiB), 256*MiB)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		var err error
		if _, hwm, err = procStatus(p.Pid); err != nil {
			b.Fatal(err)
		}
		b.Logf("%d pushes of 256 MiB at once to pier on s3: %v, VmHWM %.1f MiB", s3Concurrent, time.Since(start).Round(time.Millisecond), float64(hwm)/1024)
	}
	record(b, measure{name: "pier on s3: peak RSS, 4x256MiB pushes", value: float64(hwm) / 1024, unit: "MiB",
		limit: s3PeakRSSTarget / MiB, limitName: "target", metric: "x_target"}, ratioAtMost(1))
}

// BenchmarkLookupFleet pushes the fleet of BenchmarkImages20 (20 images
// sharing three 8 MiB base layers) into 20 repositories as a client that
// knows nothing of the others does (crane pushing image by image): HEAD
// each blob, upload what is missing, then the manifest. With
// storage.storeWideLookup on, the HEAD of a base layer finds it in another
// repository and the upload is skipped. Reported: MiB sent and the set's
// push time, on against off, on a local root and on s3. No target.
func BenchmarkLookupFleet(b *testing.B) {
	imgs, _ := fleet()
	for _, where := range []string{"local", "s3"} {
		b.Run(where, func(b *testing.B) {
			var sent [2]int64
			var took [2]time.Duration
			for range b.N {
				for i, on := range []bool{true, false} {
					keys := map[string]any{"dedupe": true, "storeWideLookup": on}
					storage := keys
					if where == "s3" {
						storage = s3Storage(b, "lookup", keys)
					}
					p := startPier(b, pierproc.Options{Storage: storage})
					sent[i] = 0
					took[i] = timed(b, func() error {
						for j, img := range imgs {
							n, err := pushImage(p.Client, fleetRepo(j), "v1", img, "", nil, nil)
							sent[i] += n
							if err != nil {
								return err
							}
						}
						return nil
					})
					buf := make([]byte, pullBufSize)
					for j := range imgs {
						if _, err := pullImage(p.Client, fleetRepo(j), "v1", buf); err != nil {
							b.Fatalf("lookup %v: %v", on, err)
						}
					}
				}
			}
			b.Logf("%s: lookup on: %.0f MiB sent in %v; off: %.0f MiB sent in %v", where,
				float64(sent[0])/MiB, took[0].Round(time.Millisecond), float64(sent[1])/MiB, took[1].Round(time.Millisecond))
			name := strings.ToUpper(where[:1]) + where[1:]
			record(b, measure{name: fmt.Sprintf("%s: 20-image push, lookup on (%.0f MiB sent) vs off (%.0f MiB)", name, float64(sent[0])/MiB, float64(sent[1])/MiB),
				value: float64(sent[0]) / MiB, unit: "MiB", limit: float64(sent[1]) / MiB, limitName: "lookup off", metric: "x_off_bytes"}, nil)
			record(b, measure{name: fmt.Sprintf("%s: 20-image push time, lookup on (%.2fs) vs off (%.2fs)", name, took[0].Seconds(), took[1].Seconds()),
				value: took[0].Seconds(), unit: "s", limit: took[1].Seconds(), limitName: "lookup off", metric: "x_off_time"}, nil)
		})
	}
}
