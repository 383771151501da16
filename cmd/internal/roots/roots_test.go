package roots

import (
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pier-oci/pier/configs"
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

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 30: "3.0 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
