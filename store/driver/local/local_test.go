package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pier-oci/pier/store/driver"
	"golang.org/x/sys/unix"
)

func open(t *testing.T, dir string, opts Options) *Driver {
	t.Helper()
	d, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// A layout copied from elsewhere may bring links; none is followed,
// whether it leads out of the root or stays in it.
func TestLinksOutOfTheRootAreNotFollowed(t *testing.T) {
	ctx := context.Background()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	os.WriteFile(secret, []byte("tls key"), 0o600)
	dir := t.TempDir()
	d := open(t, dir, Options{})
	os.MkdirAll(filepath.Join(dir, "app/blobs/sha256"), 0o755)
	os.Symlink(secret, filepath.Join(dir, "app/blobs/sha256/abs"))
	os.Symlink("../../../../"+filepath.Base(outside)+"/secret", filepath.Join(dir, "app/blobs/sha256/rel"))
	os.Symlink(outside, filepath.Join(dir, "evil"))
	os.WriteFile(filepath.Join(dir, "app/blobs/sha256/inside"), []byte("inside"), 0o644)
	os.Symlink("inside", filepath.Join(dir, "app/blobs/sha256/link"))

	for _, key := range []string{"app/blobs/sha256/abs", "app/blobs/sha256/rel", "evil/secret"} {
		if _, err := d.Stat(ctx, key); !driver.IsNotFound(err) {
			t.Errorf("Stat(%s) = %v, want ErrNotFound", key, err)
		}
		if f, _, err := d.Open(ctx, key); !driver.IsNotFound(err) {
			if f != nil {
				f.Close()
			}
			t.Errorf("Open(%s) = %v, want ErrNotFound", key, err)
		}
		if _, _, err := d.ReadFile(ctx, key, 1<<20); !driver.IsNotFound(err) {
			t.Errorf("ReadFile(%s) = %v, want ErrNotFound", key, err)
		}
	}
	entries, err := d.List(ctx, "app/blobs/sha256")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.Key)
	}
	if want := []string{"app/blobs/sha256/inside"}; !slices.Equal(keys, want) {
		t.Errorf("List = %v, want %v (links left out)", keys, want)
	}
	if _, _, err := d.ReadFile(ctx, "app/blobs/sha256/link", 100); !driver.IsNotFound(err) {
		t.Errorf("a link inside the root: %v, want ErrNotFound", err)
	}
	// Nor in the middle of a key: a repository whose blobs directory is a
	// link to another's.
	os.MkdirAll(filepath.Join(dir, "victim/blobs"), 0o755)
	os.WriteFile(filepath.Join(dir, "victim/blobs/x"), []byte("victim"), 0o644)
	os.MkdirAll(filepath.Join(dir, "usb"), 0o755)
	os.Symlink("../victim/blobs", filepath.Join(dir, "usb/blobs"))
	if err := d.Delete(ctx, "usb/blobs/x"); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "victim/blobs/x")); err != nil {
		t.Errorf("a delete through a link removed another repository's file: %v", err)
	}
	// Writing through a link that leaves the root fails too.
	if _, err := d.WriteFile(ctx, "evil/planted", []byte("x")); err == nil {
		t.Error("WriteFile through a link out of the root succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Error("a file was written outside the root")
	}
}

func TestInvalidKeysTouchNothing(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir(), Options{})
	for _, key := range []string{"", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/", "a\\b", "a\x00b"} {
		if _, err := d.WriteFile(ctx, key, []byte("x")); !errors.Is(err, driver.ErrInvalidKey) {
			t.Errorf("WriteFile(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := d.Stat(ctx, key); !errors.Is(err, driver.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
}

func TestReplaceFileIsACompareAndSwap(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir(), Options{Sync: true, TempDir: ".pier/tmp"})
	first, err := d.ReplaceFile(ctx, "a/index.json", []byte("1"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReplaceFile(ctx, "a/index.json", []byte("x"), ""); !errors.Is(err, driver.ErrConflict) {
		t.Errorf("create over an existing object: %v, want ErrConflict", err)
	}
	second, err := d.ReplaceFile(ctx, "a/index.json", []byte("2"), first.Version)
	if err != nil {
		t.Fatal(err)
	}
	if second.Version == first.Version {
		t.Error("a replace kept the version")
	}
	if _, err := d.ReplaceFile(ctx, "a/index.json", []byte("3"), first.Version); !errors.Is(err, driver.ErrConflict) {
		t.Errorf("replace of a stale version: %v, want ErrConflict", err)
	}
	if b, _, _ := d.ReadFile(ctx, "a/index.json", 10); string(b) != "2" {
		t.Errorf("content %q, want 2", b)
	}
}

// A chunk that fails half-way is taken back whole.
func TestAbortReturnsTheUploadToItsSize(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir(), Options{})
	w, err := d.Create(ctx, "a/.uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("hello "))
	w.Close()
	w, err = d.Append(ctx, "a/.uploads/u")
	if err != nil || w.Size() != 6 {
		t.Fatalf("Append: size %v, %v", w, err)
	}
	w.Write(bytes.Repeat([]byte("x"), 1000))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if info, err := d.Stat(ctx, "a/.uploads/u"); err != nil || info.Size != 6 {
		t.Errorf("after Abort: %+v, %v; want 6 bytes", info, err)
	}
}

func TestTempDirIsClearedAtOpen(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir, Options{Lock: true, TempDir: ".pier/tmp"})
	d.Close()
	os.WriteFile(filepath.Join(dir, ".pier/tmp/.tmp-left-by-a-crash"), []byte("x"), 0o644)
	open(t, dir, Options{Lock: true, TempDir: ".pier/tmp"})
	if entries, _ := os.ReadDir(filepath.Join(dir, ".pier/tmp")); len(entries) != 0 {
		t.Errorf("temporary directory holds %d leftovers", len(entries))
	}
}

func TestLockKeepsASecondWriterOut(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{Lock: true})
	if _, err := Open(dir, Options{Lock: true}); !errors.Is(err, ErrBusy) {
		t.Errorf("second Open: %v, want ErrBusy", err)
	}
	ro := open(t, dir, Options{Lock: true, ReadOnly: true}) // readers take no lock
	if _, err := ro.WriteFile(context.Background(), "x", nil); !errors.Is(err, driver.ErrReadOnly) {
		t.Errorf("write to a read-only driver: %v", err)
	}
}

func TestLinkSharesTheObject(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir(), Options{Sync: true, TempDir: ".pier/tmp"})
	d.WriteFile(ctx, "a/blobs/sha256/x", []byte("content"))
	if err := d.Link(ctx, "a/blobs/sha256/x", "b/blobs/sha256/x"); err != nil {
		t.Fatal(err)
	}
	a, _ := d.Stat(ctx, "a/blobs/sha256/x")
	b, _ := d.Stat(ctx, "b/blobs/sha256/x")
	if a.ID == "" || a.ID != b.ID || a.Links != 2 {
		t.Errorf("after Link: %+v and %+v", a, b)
	}
}

// A link shares an inode whose bytes another tool may have left in the
// page cache: Link fsyncs them as well as the new name's directory, so a
// power cut never leaves dst naming an empty file.
func TestLinkSyncsTheSharedBytes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := open(t, dir, Options{Sync: true, TempDir: ".pier/tmp"})
	for _, p := range []string{"a/blobs/sha256", "b/blobs/sha256"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Written behind the driver's back, as skopeo or cp would.
	if err := os.WriteFile(filepath.Join(dir, "a/blobs/sha256/x"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := d.Syncs()
	if err := d.Link(ctx, "a/blobs/sha256/x", "b/blobs/sha256/x"); err != nil {
		t.Fatal(err)
	}
	if n := d.Syncs() - before; n != 2 {
		t.Errorf("Link made %d fsyncs; want 2 (the shared file, then the new name's directory)", n)
	}
	off := open(t, t.TempDir(), Options{TempDir: ".pier/tmp"})
	off.WriteFile(ctx, "a/blobs/sha256/x", []byte("content"))
	if err := off.Link(ctx, "a/blobs/sha256/x", "b/blobs/sha256/x"); err != nil || off.Syncs() != 0 {
		t.Errorf("without commit: %v, %d fsyncs", err, off.Syncs())
	}
}

// The directory held open keeps answering after its path is renamed away
// or mounted over; Check sees that the path no longer leads to it.
func TestCheckNoticesTheDirectoryMovedAway(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "root")
	d := open(t, dir, Options{TempDir: ".pier/tmp"})
	if err := d.Check(ctx); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	if err := os.Rename(dir, dir+".gone"); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(ctx); err == nil {
		t.Fatal("renamed away: Check passed")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(ctx); err == nil {
		t.Fatal("replaced by another directory: Check passed")
	}
}

// An fsync that fails at commit drops the upload: the kernel may have
// marked the pages it could not write clean, so a retried commit through
// a new descriptor would succeed over lost bytes.
func TestCommitDropsTheUploadWhenFsyncFails(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir(), Options{Sync: true, TempDir: ".pier/tmp"})
	w, err := d.Create(ctx, "r/.uploads/u1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("layer bytes")); err != nil {
		t.Fatal(err)
	}
	d.fsync = func(*os.File) error { return unix.EIO }
	if err := w.Commit(ctx, "r/blobs/sha256/x"); err == nil {
		t.Fatal("commit succeeded with a failing fsync")
	}
	d.fsync = (*os.File).Sync
	for _, key := range []string{"r/.uploads/u1", "r/blobs/sha256/x"} {
		if _, err := d.Stat(ctx, key); !driver.IsNotFound(err) {
			t.Errorf("%s after the failed commit: %v, want not found", key, err)
		}
	}
	if _, err := d.Append(ctx, "r/.uploads/u1"); !driver.IsNotFound(err) {
		t.Errorf("resuming the dropped upload: %v, want not found", err)
	}
}
