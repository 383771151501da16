package cachetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/cache"
)

// BatchSize is the number of ops in one Apply of BenchApply: about what
// the store's writer gathers from a busy push, or a reconcile pass writes
// for one repository.
const BatchSize = 500

// BenchApply measures c: b.N rounds of one Apply of BatchSize puts of new
// digests, one Paths of each, and one Apply removing them. It reports
// ops/s for the writes and lookups/s for the reads.
func BenchApply(b *testing.B, c cache.Cache) {
	var write, read time.Duration
	ops := make([]cache.Op, BatchSize)
	b.ResetTimer()
	for i := range b.N {
		for j := range ops {
			d := dg(fmt.Sprint("bench ", i, " ", j))
			ops[j] = put(d, path(fmt.Sprint("repo", j%7), d))
		}
		start := time.Now()
		if err := c.Apply(bg, ops); err != nil {
			b.Fatal(err)
		}
		write += time.Since(start)
		start = time.Now()
		for _, op := range ops {
			if p, err := c.Paths(bg, op.Digest); err != nil || len(p) != 1 {
				b.Fatalf("Paths = %q, %v", p, err)
			}
		}
		read += time.Since(start)
		for j := range ops {
			ops[j].Remove = true
		}
		start = time.Now()
		if err := c.Apply(bg, ops); err != nil {
			b.Fatal(err)
		}
		write += time.Since(start)
	}
	b.ReportMetric(float64(2*BatchSize*b.N)/write.Seconds(), "ops/s")
	b.ReportMetric(float64(BatchSize*b.N)/read.Seconds(), "lookups/s")
}
