package bench

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// The limits every figure is a ratio to. Each is measured in the run that
// uses it, on the same CPU and disk, best of attempts like the figures.

var sha256Limit struct {
	once sync.Once
	mibs float64
}

// sha256MiBs is Go's sha256 throughput on this CPU: the ceiling of a push,
// which must hash every byte it stores. Measured once per run, on the 256
// MiB blob the push benchmarks send.
func sha256MiBs(b *testing.B) float64 {
	b.Helper()
	sha256Limit.once.Do(func() {
		data, _ := blob256(b)
		d := bestOf(b, attempts, func() time.Duration {
			start := time.Now()
			sha256.Sum256(data)
			return time.Since(start)
		})
		sha256Limit.mibs = mibps(int64(len(data)), d)
		b.Logf("limit: sha256 %.0f MiB/s (256 MiB, best of %d)", sha256Limit.mibs, attempts)
	})
	return sha256Limit.mibs
}

// pageCacheMiBs is how fast this process reads files sequentially from the
// page cache, with the buffer size a pull client uses: the ceiling of a
// pull of the same bytes. The files are read once to warm the cache, then
// attempts times; the best counts.
func pageCacheMiBs(b *testing.B, paths ...string) float64 {
	b.Helper()
	buf := make([]byte, pullBufSize)
	readAll := func() (int64, error) {
		var total int64
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				return 0, err
			}
			n, err := drain(f, buf)
			f.Close()
			if err != nil {
				return 0, fmt.Errorf("read %s: %w", p, err)
			}
			total += n
		}
		return total, nil
	}
	size, err := readAll()
	if err != nil {
		b.Fatal(err)
	}
	d := bestOf(b, attempts, func() time.Duration {
		return timed(b, func() error { _, err := readAll(); return err })
	})
	mibs := mibps(size, d)
	b.Logf("limit: page-cache read %.0f MiB/s (%d files, %.0f MiB, best of %d)", mibs, len(paths), float64(size)/MiB, attempts)
	return mibs
}

// drain reads r to its end with reads of len(buf) bytes and discards what
// it read. (io.Copy to io.Discard would read in 8 KiB pieces, paying a
// syscall per 8 KiB that neither a real client nor the limit should.)
func drain(r io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
