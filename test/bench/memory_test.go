package bench

import (
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

const (
	idleRSSTarget = 16 * MiB
	peakRSSTarget = 40 * MiB
	bigBlobSize   = 1 << 30
)

// BenchmarkIdleRSS is the resident size of a server with an empty store,
// 2 s after it answered its first request. Target: <= 16 MiB.
func BenchmarkIdleRSS(b *testing.B) {
	var rss, anon int64
	for range b.N {
		p := startPier(b, pierproc.Options{})
		time.Sleep(2 * time.Second)
		var err error
		if rss, _, err = procStatus(p.Pid); err != nil {
			b.Fatal(err)
		}
		if anon, err = procAnon(p.Pid); err != nil {
			b.Fatal(err)
		}
	}
	record(b, measure{
		name: "idle RSS (empty store)", value: float64(rss) / 1024, unit: "MiB",
		limit: idleRSSTarget / MiB, limitName: "target", metric: "x_target",
	}, ratioAtMost(1))
	record(b, measure{
		name: "idle private memory (RssAnon)", value: float64(anon) / 1024, unit: "MiB",
		limit: float64(rss) / 1024, limitName: "idle RSS", metric: "x_rss",
	}, nil)
}

// BenchmarkPeakRSS1GiB is the peak resident size (VmHWM) of a server that
// receives a 1 GiB blob (POST + one streamed PUT) and then serves it. A
// server that streams holds a few buffers whatever the size of the blob.
// Target: <= 40 MiB.
func BenchmarkPeakRSS1GiB(b *testing.B) {
	const seed = 1 << 30
	d, err := streamDigest(seed, bigBlobSize)
	if err != nil {
		b.Fatal(err)
	}
	var hwm int64
	for range b.N {
		p := startPier(b, pierproc.Options{})
		const repo = "rss/big"
		took := timed(b, func() error {
			return p.Client.PushBlobStream(repo, d, randomStream(seed, bigBlobSize), bigBlobSize)
		})
		_, afterPush, err := procStatus(p.Pid)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("push 1 GiB (data generated while sent): %v; VmHWM after push %.1f MiB", took.Round(time.Millisecond), float64(afterPush)/1024)
		took = timed(b, func() error { return getBlob(p.Client, repo, d, bigBlobSize, make([]byte, pullBufSize)) })
		if _, hwm, err = procStatus(p.Pid); err != nil {
			b.Fatal(err)
		}
		b.Logf("pull 1 GiB: %v; VmHWM after pull %.1f MiB", took.Round(time.Millisecond), float64(hwm)/1024)
	}
	record(b, measure{
		name: "peak RSS, push+pull 1GiB", value: float64(hwm) / 1024, unit: "MiB",
		limit: peakRSSTarget / MiB, limitName: "target", metric: "x_target",
	}, ratioAtMost(1))
}
