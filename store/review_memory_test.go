package store

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Review: the view cache bounds the manifest bodies it keeps (4 MiB in
// all) but not the indexes: up to 512 parsed index.json files of up to
// maxIndexSize (64 MiB) each stay in memory for as long as the repository
// is not evicted. A repository that CI tags on every commit has thousands
// of entries; before the views, an index was garbage once the request
// ended. On a board with GOMEMLIMIT=64MiB, reading the tags of five such
// repositories keeps their parsed indexes for good.
func TestReviewViewsBoundTheMemoryOfIndexes(t *testing.T) {
	s := newStore(t, false)
	const repos, tags = 5, 10_000
	var file int
	for r := range repos {
		var b strings.Builder
		b.WriteString(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`)
		for i := range tags {
			if i > 0 {
				b.WriteByte(',')
			}
			d := digest.FromString(fmt.Sprint(r, i))
			fmt.Fprintf(&b, `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1234,"annotations":{"org.opencontainers.image.ref.name":"build-%06d"}}`, d, i)
		}
		b.WriteString(`]}`)
		file = b.Len()
		writeHostedLayout(t, s.Root(), fmt.Sprintf("ci/app%d", r), b.String())
	}
	before := heapInUse()
	for r := range repos {
		if _, err := s.Tags(ctx, fmt.Sprintf("ci/app%d", r)); err != nil {
			t.Fatal(err)
		}
	}
	held := heapInUse() - before
	t.Logf("%d repositories, index.json of %d KiB each: %d MiB held after the requests ended", repos, file>>10, held>>20)
	if limit := int64(16 << 20); held > limit {
		t.Errorf("the views hold %d MiB of parsed indexes after the requests ended (index files total %d MiB); nothing bounds it", held>>20, int64(repos*file)>>20)
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
