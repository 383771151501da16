package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The config file: Parse must never panic, and a config it accepts has an
// absolute root and parses the same way twice.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"default.json", "example.json", "example-pi.json", "example-zot.json",
		"testdata/zot/config-policy.json", "testdata/zot/config-anonymous-authz.json", "testdata/zot/config-ratelimit.json"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"storage":{"rootDirectory":"../../etc","subPaths":{"/../x":{"rootDirectory":"/tmp/x"}}},"http":{"accessControl":{"../**":{}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := Parse(data)
		if err != nil {
			return
		}
		if !filepath.IsAbs(cfg.Storage.RootDirectory) {
			t.Fatalf("root %q is not absolute", cfg.Storage.RootDirectory)
		}
		again, _, err := Parse(data)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("a second parse differs: %v", err)
		}
	})
}
