package store

import (
	"encoding/json"
	"os"
	"testing"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Review2: tagOf gives the same tag to "v1" and "example.com/app:v1", so
// a layout written by other tools can hold two entries for one tag. A push
// of v1 through pier replaces only the first; the other still says v1 and
// comes before the new entry, so the pushed v1 is acknowledged and a pull
// of v1 still gets an old image (and a delete of the tag leaves it
// resolving).
func TestReview2PushMovesEveryEntryOfATag(t *testing.T) {
	s := newStore(t, false)
	m1 := putManifest(t, s, "app", "a", imageManifest(t, s, "app", "1"))
	m2 := putManifest(t, s, "app", "b", imageManifest(t, s, "app", "2"))
	// Another tool (skopeo with a full reference, say) named both v1.
	idx := readIndexFile(t, s, "app")
	for i, e := range idx.Manifests {
		switch e.Digest {
		case m1:
			idx.Manifests[i].Annotations = map[string]string{ispec.AnnotationRefName: "v1"}
		case m2:
			idx.Manifests[i].Annotations = map[string]string{ispec.AnnotationRefName: "example.com/app:v1"}
		}
	}
	b, _ := json.Marshal(idx)
	if err := os.WriteFile(s.indexPath("app"), b, 0o644); err != nil {
		t.Fatal(err)
	}

	m3 := putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "3"))
	got, err := s.GetManifest(ctx, "app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != m3 {
		t.Fatalf("v1 was pushed as %s, but a pull of v1 gets %s (m1 %s, m2 %s)", m3, got.Digest, m1, m2)
	}
	if err := s.DeleteManifest(ctx, "app", "v1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetManifest(ctx, "app", "v1"); err == nil {
		t.Fatalf("tag v1 was deleted but still resolves to %s", got.Digest)
	}
}
