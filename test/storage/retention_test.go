package storage

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Retention through the binary: zot#3804's configuration (an entry
// keeping recent pushes ahead of entries keeping the latest tag of each
// prefix). `pier gc --dry-run` beside the serving pier prints every verdict
// and removes nothing; `pier gc` then drops the tags no entry keeps, and
// their images stay pullable by digest for the retention delay; a
// repository no policy matches keeps every tag.
func TestRetentionEndToEnd(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{
		"gcDelay": "0s",
		"retention": map[string]any{
			"delay": "1h",
			"policies": []any{
				map[string]any{"repositories": []string{"ci/**"}, "keepTags": []any{
					map[string]any{"patterns": []string{".*"}, "pushedWithin": "1ns"},
					map[string]any{"patterns": []string{"^env18-"}, "mostRecentlyPushedCount": 1},
					map[string]any{"patterns": []string{"^env19-"}, "mostRecentlyPushedCount": 1},
					map[string]any{"patterns": []string{`^v\d`}},
				}},
			},
		},
	}})
	c := ociclient.New(srv.Addr)
	images := map[string]ociclient.Image{}
	for _, tag := range []string{"env18-a", "env19-a", "feature", "env18-b", "env19-b", "v1"} {
		images[tag] = ociclient.ImageManifest([]byte(`{"tag":"`+tag+`"}`), random(4096))
		if err := c.PushImage("ci/app", tag, images[tag]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // distinct push times
	}
	if err := c.PushImage("other", "old", ociclient.ImageManifest([]byte(`{"o":1}`), random(4096))); err != nil {
		t.Fatal(err)
	}
	all := []string{"env18-a", "env18-b", "env19-a", "env19-b", "feature", "v1"}

	code, out := pierproc.Run(t, "gc", "--dry-run", srv.Config)
	if code != 0 {
		t.Fatalf("pier gc --dry-run beside a serving pier: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		`ci/app +env18-a +[0-9a-f]{12} .*remove tag +no keepTags entry keeps it`,
		`ci/app +feature .*remove tag`,
		`ci/app +env18-b .*keep +keepTags\[1\] mostRecentlyPushedCount 1`,
		`ci/app +v1 .*keep +keepTags\[3\] patterns`,
		`would remove 3 tags`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("pier gc --dry-run:\n%s", out)
	if tags, err := c.Tags("ci/app"); err != nil || !slices.Equal(tags, all) {
		t.Fatalf("after the dry run: tags %v, %v; want all", tags, err)
	}

	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	code, out = pierproc.Run(t, "gc", srv.Config)
	if code != 0 || !strings.Contains(out, "retention: removed 3 tags") {
		t.Fatalf("pier gc: exit %d\n%s", code, out)
	}
	srv.Restart(t)
	if tags, err := c.Tags("ci/app"); err != nil || !slices.Equal(tags, []string{"env18-b", "env19-b", "v1"}) {
		t.Fatalf("after retention: tags %v, %v", tags, err)
	}
	if _, _, err := c.GetManifest("ci/app", images["env18-a"].Digest.String()); err != nil {
		t.Fatalf("a dropped tag's image is not pullable by digest during the delay: %v", err)
	}
	if tags, err := c.Tags("other"); err != nil || !slices.Equal(tags, []string{"old"}) {
		t.Fatalf("a repository no policy matches: tags %v, %v", tags, err)
	}
}
