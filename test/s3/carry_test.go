package s3

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// A bucket written by one pier is served by another started later, with a
// dedupe index of its own that starts empty (its BoltDB file is in another
// rootDirectory: the index lost): every placeholder resolves; and when the
// repository that holds a shared layer's content is deleted and collected,
// the content moves to one that still names it.
func TestBucketCarriesOver(t *testing.T) {
	b := bucket.New(t)
	first := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{"dedupe": true, "gc": false})})
	c := ociclient.New(first.Addr)
	base := random(300_000)
	repos := []string{"team/a", "team/b", "c"}
	imgs := map[string]ociclient.Image{}
	for _, repo := range repos {
		imgs[repo] = image(repo, base, random(40_000))
		if err := c.PushImage(repo, "v1", imgs[repo]); err != nil {
			t.Fatal(err)
		}
	}
	baseD := digest.FromBytes(base)
	if n := storedBytes(t, b, baseD, repos...); n != int64(len(base)) {
		t.Fatalf("a layer pushed to %d repositories takes %d bytes in the bucket, want one copy of %d", len(repos), n, len(base))
	}
	first.Stop(t)

	second := pierproc.Start(t, pierproc.Options{Storage: b.Storage(map[string]any{"dedupe": true, "gc": true, "gcDelay": "0s", "gcInterval": "1s"})})
	c = ociclient.New(second.Addr)
	for repo, img := range imgs {
		wantImage(t, repo, "v1", img, c)
	}
	holder := ""
	drv := b.Open(t)
	for _, repo := range repos {
		if info, err := drv.Stat(t.Context(), blobKey(repo, baseD)); err == nil && info.Size > 0 {
			holder = repo
		}
	}
	if holder == "" {
		t.Fatal("no repository holds the layer's content")
	}
	if err := c.Delete(holder, "manifests", imgs[holder].Digest.String()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the deleted image's layer was not collected", func() bool {
		_, err := c.HeadBlob(holder, baseD)
		var se *ociclient.StatusError
		return errors.As(err, &se) && se.Status == http.StatusNotFound
	})
	for repo, img := range imgs {
		if repo != holder {
			wantImage(t, repo, "v1", img, c)
		}
	}
	if n := storedBytes(t, b, baseD, repos...); n != int64(len(base)) {
		t.Fatalf("after the holder went, the layer takes %d bytes, want one copy of %d", n, len(base))
	}
}
