package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pier-oci/pier/store/budget"
	s3driver "github.com/pier-oci/pier/store/driver/s3"
)

// The s3 driver against the S3 server of test/services/s3.sh (versitygw
// on loopback): a put and a get of 256 MiB through the driver, as ratios to
// the same bytes put and got directly with the SDK, through the driver's
// own client (the same connection pool, signing and checksums), and the
// peak RSS of a process making 4 uploads of 256 MiB at once.

const (
	s3PutTarget     = 0.6
	s3GetTarget     = 0.7
	s3PeakRSSTarget = 64 * MiB
	s3Concurrent    = 4
)

func s3Config(b testing.TB, prefix string) s3driver.Config {
	endpoint, bucket := os.Getenv("PIER_TEST_S3_ENDPOINT"), os.Getenv("PIER_TEST_S3_BUCKET")
	if endpoint == "" || bucket == "" {
		b.Fatal("no S3 server: PIER_TEST_S3_ENDPOINT and PIER_TEST_S3_BUCKET are unset; run under test/services.sh (make bench does)")
	}
	return s3driver.Config{
		Endpoint: endpoint, Bucket: bucket, Region: os.Getenv("PIER_TEST_S3_REGION"), ForcePathStyle: true,
		AccessKey: os.Getenv("PIER_TEST_S3_ACCESS_KEY"), SecretKey: os.Getenv("PIER_TEST_S3_SECRET_KEY"),
		Prefix: prefix,
	}
}

func BenchmarkS3Transfer(b *testing.B) {
	data, _ := blob256(b)
	size := int64(len(data))
	cfg := s3Config(b, fmt.Sprintf("bench-%d/", time.Now().UnixNano()))
	ctx := context.Background()
	d, err := s3driver.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	client, bucket := d.Client(), cfg.Bucket
	sdkKey := cfg.Prefix + "sdk/blob"
	defer d.Delete(ctx, "r/blobs/sha256/blob")
	defer client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &sdkKey})

	var sdkPut, drvPut, sdkGet, drvGet time.Duration
	for range b.N {
		sdkPut = bestOf(b, attempts, func() time.Duration {
			return timed(b, func() error {
				_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &sdkKey,
					Body: bytes.NewReader(data), ContentLength: aws.Int64(size)})
				return err
			})
		})
		drvPut = bestOf(b, attempts, func() time.Duration {
			return timed(b, func() error {
				w, err := d.Create(ctx, "r/.uploads/u")
				if err != nil {
					return err
				}
				for off := 0; off < len(data); off += pullBufSize { // as a PATCH body arrives
					if _, err := w.Write(data[off:min(off+pullBufSize, len(data))]); err != nil {
						w.Cancel(ctx)
						return err
					}
				}
				return w.Commit(ctx, "r/blobs/sha256/blob")
			})
		})
		buf := make([]byte, pullBufSize)
		sdkGet = bestOf(b, attempts, func() time.Duration {
			return timed(b, func() error {
				out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &sdkKey})
				if err != nil {
					return err
				}
				defer out.Body.Close()
				return readAll(out.Body, buf, size)
			})
		})
		drvGet = bestOf(b, attempts, func() time.Duration {
			return timed(b, func() error {
				r, _, err := d.Open(ctx, "r/blobs/sha256/blob")
				if err != nil {
					return err
				}
				defer r.Close()
				return readAll(r, buf, size)
			})
		})
	}
	record(b, measure{name: "s3 driver put 256MiB", value: mibps(size, drvPut), unit: "MiB/s",
		limit: mibps(size, sdkPut), limitName: "SDK PutObject", metric: "x_sdk_put"}, ratioAtLeast(s3PutTarget))
	record(b, measure{name: "s3 driver get 256MiB", value: mibps(size, drvGet), unit: "MiB/s",
		limit: mibps(size, sdkGet), limitName: "SDK GetObject", metric: "x_sdk_get"}, ratioAtLeast(s3GetTarget))
}

func readAll(r io.Reader, buf []byte, want int64) error {
	n, err := io.CopyBuffer(io.Discard, r, buf)
	if err == nil && n != want {
		err = fmt.Errorf("read %d bytes, want %d", n, want)
	}
	return err
}

// s3ChildEnv makes this test binary the process measured by
// BenchmarkS3PeakRSS (see TestS3UploadsProcess).
const s3ChildEnv = "PIER_BENCH_S3_UPLOADS"

// BenchmarkS3PeakRSS is the peak resident size of a process (this binary,
// run again) making 4 uploads of 256 MiB at once through the driver, with
// the data made as it is sent and pier's unit's GOMEMLIMIT, and the budget
// of chunk buffers pier serve gives its s3 roots (store/backend): the
// uploads take turns at two chunks of 10 MiB. Target: <= 64 MiB.
func BenchmarkS3PeakRSS(b *testing.B) {
	var peak int64
	for range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^TestS3UploadsProcess$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), s3ChildEnv+"=bench-rss-"+strconv.FormatInt(time.Now().UnixNano(), 10)+"/", "GOMEMLIMIT=64MiB")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("the uploads process: %v\n%s", err, out)
		}
		// The child's own VmHWM: its rusage would count the parent's pages
		// too (Go starts children with vfork).
		_, after, ok := strings.Cut(string(out), s3HWMLine)
		kib, err := strconv.ParseInt(strings.Fields(after + " x")[0], 10, 64)
		if !ok || err != nil {
			b.Fatalf("the uploads process did not report its peak RSS:\n%s", out)
		}
		peak = kib * 1024
		b.Logf("%d uploads of 256 MiB at once: %v, peak RSS %.1f MiB", s3Concurrent, time.Since(start).Round(time.Millisecond), float64(peak)/MiB)
	}
	record(b, measure{name: "s3 peak RSS, 4x256MiB uploads", value: float64(peak) / MiB, unit: "MiB",
		limit: s3PeakRSSTarget / MiB, limitName: "target", metric: "x_target"}, ratioAtMost(1))
}

// TestS3UploadsProcess is the process BenchmarkS3PeakRSS measures; run
// otherwise it does nothing.
func TestS3UploadsProcess(t *testing.T) {
	prefix := os.Getenv(s3ChildEnv)
	if prefix == "" {
		t.Skip("run by BenchmarkS3PeakRSS")
	}
	ctx := context.Background()
	cfg := s3Config(t, prefix)
	cfg.Buffers = budget.New(24 << 20) // store/backend.ChunkBuffers
	d, err := s3driver.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range s3Concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("r/.uploads/%d", i)
			w, err := d.Create(ctx, key)
			if err != nil {
				t.Error(err)
				return
			}
			// In reads of 256 KiB, as the store copies a request body.
			if _, err := io.CopyBuffer(w, randomStream(uint64(i), 256*MiB), make([]byte, 256<<10)); err != nil {
				t.Error(err)
				return
			}
			if err := w.Commit(ctx, fmt.Sprintf("r/blobs/sha256/%d", i)); err != nil {
				t.Error(err)
			}
			d.Delete(ctx, fmt.Sprintf("r/blobs/sha256/%d", i))
		}()
	}
	wg.Wait()
	_, hwm, err := procStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%d\n", s3HWMLine, hwm)
}

// s3HWMLine starts the line on which the uploads process reports its VmHWM
// in KiB.
const s3HWMLine = "s3 uploads VmHWM KiB: "
