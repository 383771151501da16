package roots

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/driver/local"
)

func config(t *testing.T, json string) *configs.Config {
	t.Helper()
	cfg, _, err := configs.Parse([]byte(json))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The default root first, then subpaths in key order; every root opened
// under its lock, routed by the controller; a second opener of the same
// roots (another pier) is refused, a read-only one is not.
func TestOpenRoutesAndLocksEveryRoot(t *testing.T) {
	dir := t.TempDir()
	cfg := config(t, `{"storage": {"rootDirectory": "`+filepath.Join(dir, "def")+`", "subPaths": {
		"/z": {"rootDirectory": "`+filepath.Join(dir, "z")+`"},
		"/a": {"rootDirectory": "`+filepath.Join(dir, "a")+`", "dedupe": true}}}}`)
	rs, ctl, closeAll, err := Open(cfg, slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	var keys []string
	for _, r := range rs {
		keys = append(keys, r.Key)
	}
	if !slices.Equal(keys, []string{"", "/a", "/z"}) {
		t.Fatalf("roots in order %q", keys)
	}
	if ctl.StoreFor("a/app") != rs[1].Store || ctl.StoreFor("app") != rs[0].Store || ctl.StoreFor("z") != rs[2].Store {
		t.Fatal("the controller routes names to the wrong roots")
	}
	if _, _, _, err := Open(cfg, slog.New(slog.DiscardHandler), false); !errors.Is(err, local.ErrBusy) {
		t.Fatalf("a second writer of the same roots: %v, want ErrBusy", err)
	}
	ro, _, closeRO, err := Open(cfg, slog.New(slog.DiscardHandler), true)
	if err != nil {
		t.Fatalf("a read-only opener beside a writer: %v", err)
	}
	defer closeRO()
	if !ro[0].Store.ReadOnly() {
		t.Fatal("opened read-only, but writable")
	}
}

// Each root gets its own retention policies, quotas (refusals naming the
// subpath's keys) and collection window.
func TestRootsGetTheirLimits(t *testing.T) {
	dir := t.TempDir()
	cfg := config(t, `{"storage": {"rootDirectory": "`+filepath.Join(dir, "def")+`", "gcTimeWindow": "01:00-05:00",
		"retention": {"policies": [{"keepTags": [{"pulledWithin": "24h"}]}]},
		"subPaths": {"/a": {"rootDirectory": "`+filepath.Join(dir, "a")+`", "maxRepos": 1}}}}`)
	rs, ctl, closeAll, err := Open(cfg, slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	if w := GCSchedule(rs[0].Cfg).Window; w == nil || fmt.Sprint(w) != "01:00-05:00" {
		t.Fatalf("default root's window = %v", w)
	}
	if w := GCSchedule(rs[1].Cfg).Window; w != nil {
		t.Fatalf("/a has a window it was not given: %v", w)
	}
	if len(rs[0].Store.Retention().Policies) != 1 || len(rs[1].Store.Retention().Policies) != 0 {
		t.Fatal("retention policies not applied to their root alone")
	}
	ctx := context.Background()
	if _, err := ctl.PutBlob(ctx, "a/one", digest.FromString("x"), strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	_, err = ctl.PutBlob(ctx, "a/two", digest.FromString("x"), strings.NewReader("x"))
	if !errors.Is(err, store.ErrQuota) || !strings.Contains(err.Error(), "storage.subPaths./a.maxRepos") {
		t.Fatalf("a second repository in /a: %v; want refused, naming storage.subPaths./a.maxRepos", err)
	}
}
