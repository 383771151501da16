package storage

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Whatever cache.db holds when pier starts, pier serve starts, serves
// every image, logs the damage once and dedupes again; pier gc and pier
// scrub exit 0 (issue 10, item 1). The damaged file is kept under .pier/,
// never at the root where a repository name would reach it.
func TestAnyCacheFileContent(t *testing.T) {
	pageSize := os.Getpagesize()
	outside := filepath.Join(t.TempDir(), "not-pier's")
	damages := map[string]func(t *testing.T, path string, good []byte){
		"empty":                     func(t *testing.T, path string, good []byte) { write(t, path, nil) },
		"cut inside the meta pages": func(t *testing.T, path string, good []byte) { write(t, path, good[:pageSize+100]) },
		"cut after the meta pages":  func(t *testing.T, path string, good []byte) { write(t, path, good[:2*pageSize]) },
		"cut short by a page":       func(t *testing.T, path string, good []byte) { write(t, path, good[:len(good)-pageSize]) },
		"garbage": func(t *testing.T, path string, good []byte) {
			write(t, path, bytes.Repeat([]byte{0x5a, 0xa5, 7}, len(good)/3))
		},
		"garbage after valid meta pages": func(t *testing.T, path string, good []byte) {
			write(t, path, append(bytes.Clone(good[:2*pageSize]), bytes.Repeat([]byte{0xff, 0x01}, (len(good)-2*pageSize)/2)...))
		},
		"a directory": func(t *testing.T, path string, good []byte) {
			os.Remove(path)
			os.Mkdir(path, 0o700)
		},
		"a symlink out of the root": func(t *testing.T, path string, good []byte) {
			os.Remove(path)
			os.WriteFile(outside, good, 0o600)
			os.Symlink(outside, path)
		},
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"dedupe": true, "gcDelay": "0s"}})
			c := ociclient.New(srv.Addr)
			base := random(200 << 10)
			var images []ociclient.Image
			for i := range 3 {
				img := ociclient.ImageManifest([]byte(fmt.Sprintf(`{"n":%d}`, i)), base, random(1000))
				if err := c.PushImage(fmt.Sprint("app", i), "v1", img); err != nil {
					t.Fatal(err)
				}
				images = append(images, img)
			}
			if code := srv.Stop(t); code != 0 {
				t.Fatalf("stop: exit %d", code)
			}
			cachePath := filepath.Join(srv.Root, "cache.db")
			good, err := os.ReadFile(cachePath)
			if err != nil || len(good) < 3*pageSize {
				t.Fatalf("cache.db after a clean stop: %d bytes, %v", len(good), err)
			}
			damage(t, cachePath, good)
			targetBefore, _ := os.ReadFile(outside)
			srv.Restart(t)
			for i, img := range images {
				for d, want := range img.Blobs {
					if got, err := c.GetBlob(fmt.Sprint("app", i), d); err != nil || !bytes.Equal(got, want) {
						t.Fatalf("app%d: blob %s: %v", i, d, err)
					}
				}
				if _, got, err := c.GetManifest(fmt.Sprint("app", i), "v1"); err != nil || got != img.Digest {
					t.Fatalf("app%d: manifest: %v", i, err)
				}
			}
			waitDedupes(t, c, srv.Root, base)
			if n := strings.Count(srv.Stderr(), "dedupe cache is damaged"); n != 1 {
				t.Fatalf("the damage was logged %d times:\n%s", n, srv.Stderr())
			}
			if _, err := os.Lstat(filepath.Join(srv.Root, ".pier", "cache.db.damaged")); err != nil {
				t.Fatalf("the damaged file is not kept under .pier/: %v", err)
			}
			if after, _ := os.ReadFile(outside); !bytes.Equal(after, targetBefore) {
				t.Fatal("the symlink's target out of the root was changed")
			}
			if strings.Contains(srv.Stderr(), "panic") {
				t.Fatalf("pier panicked:\n%s", srv.Stderr())
			}
			if code := srv.Stop(t); code != 0 {
				t.Fatalf("stop: exit %d", code)
			}

			for _, cmd := range []string{"gc", "scrub"} {
				damage(t, cachePath, good)
				code, out := pierproc.Run(t, cmd, srv.Config)
				if code != 0 || strings.Contains(out, "panic") {
					t.Fatalf("pier %s with a damaged cache.db: exit %d\n%s", cmd, code, out)
				}
			}
			entries, _ := os.ReadDir(srv.Root)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "cache.db") && e.Name() != "cache.db" {
					t.Fatalf("%s at the root, where a repository name reaches it", e.Name())
				}
			}
		})
	}
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	os.RemoveAll(path)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitDedupes pushes base to new repositories until one is linked to the
// copy in app0: the index was rebuilt and dedupes again.
func waitDedupes(t *testing.T, c *ociclient.Client, root string, base []byte) {
	t.Helper()
	d := digest.FromBytes(base)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		repo := fmt.Sprint("again", i)
		if _, err := c.PushBlob(repo, base); err != nil {
			t.Fatal(err)
		}
		if inode(t, blobPath(root, repo, d)) == inode(t, blobPath(root, "app0", d)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("pier does not dedupe again after the damaged cache was replaced")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
