package drivertest

import (
	"errors"
	"io/fs"
	"maps"
	"slices"
	"testing"

	"github.com/pier-oci/pier/store/driver"
)

// Copy makes an independent copy; an existing dst is replaced.
func testCopy(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	small, large := content(30, 70_000), content(31, LargeSize)
	mustWrite(t, d, "a/blobs/sha256/s", small)
	if err := d.Copy(ctx, "a/blobs/sha256/s", "b/blobs/sha256/s"); err != nil {
		t.Fatalf("Copy: %v", err)
	}
	wantContent(t, d, "b/blobs/sha256/s", small)
	wantContent(t, d, "a/blobs/sha256/s", small)

	// Above any multipart threshold, from an upload's commit.
	w := mustCreate(t, d, uploadKey)
	writeUpload(t, w, large, 2)
	mustCommit(t, w, "a/blobs/sha256/l")
	mustWrite(t, d, "b/blobs/sha256/l", []byte("to be replaced"))
	if err := d.Copy(ctx, "a/blobs/sha256/l", "b/blobs/sha256/l"); err != nil {
		t.Fatalf("Copy of a large object: %v", err)
	}
	wantContent(t, d, "b/blobs/sha256/l", large)

	// The copy is its own object.
	mustWrite(t, d, "a/blobs/sha256/s", []byte("changed"))
	wantContent(t, d, "b/blobs/sha256/s", small)

	// Keys with characters a URL or a query must escape.
	odd := "a/blobs/odd name+%20?x=1&y#z;é"
	mustWrite(t, d, odd, small)
	if err := d.Copy(ctx, odd, odd+" copy"); err != nil {
		t.Fatalf("Copy of %q: %v", odd, err)
	}
	wantContent(t, d, odd+" copy", small)
	w = mustCreate(t, d, "a/.uploads/odd name+%20?")
	writeUpload(t, w, large, 1)
	mustCommit(t, w, odd+" large")
	wantContent(t, d, odd+" large", large)
	if err := d.Move(ctx, odd+" large", odd+" moved"); err != nil {
		t.Fatalf("Move of %q: %v", odd, err)
	}
	wantContent(t, d, odd+" moved", large)
	entries, err := d.List(ctx, "a/blobs")
	if err != nil || len(entries) != 4 || entries[0].Key != "a/blobs/odd name+%20?x=1&y#z;é" {
		t.Fatalf("List of odd keys: %v, %v", keys(entries), err)
	}

	wantErr(t, "Copy of a missing key", d.Copy(ctx, "a/missing", "b/x"), driver.ErrNotFound)
	wantGone(t, d, "b/x")
}

// Move leaves dst and no src; an existing dst is replaced.
func testMove(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	data := content(32, 9000)
	mustWrite(t, d, "r/.uploads/x", data)
	mustWrite(t, d, "r/blobs/sha256/x", []byte("old"))
	if err := d.Move(ctx, "r/.uploads/x", "r/blobs/sha256/x"); err != nil {
		t.Fatalf("Move: %v", err)
	}
	wantGone(t, d, "r/.uploads/x")
	wantContent(t, d, "r/blobs/sha256/x", data)
	wantErr(t, "Move of a missing key", d.Move(ctx, "r/.uploads/x", "r/y"), driver.ErrNotFound)
	wantGone(t, d, "r/y")
}

// Delete removes several keys at once; a missing key is no error.
func testDelete(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	for _, k := range []string{"r/a", "r/b", "r/c/d", "s/e"} {
		mustWrite(t, d, k, []byte(k))
	}
	if err := d.Delete(ctx, "r/a", "r/missing", "r/c/d", "nowhere/at/all"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	want := map[string]int64{"r/b": 3, "s/e": 3}
	if got := tree(t, d); !maps.Equal(got, want) {
		t.Fatalf("after Delete the root holds %v, want %v", got, want)
	}
	if err := d.Delete(ctx); err != nil {
		t.Fatalf("Delete of no keys: %v", err)
	}
	if err := d.Delete(ctx, "r/a"); err != nil {
		t.Fatalf("Delete of a deleted key: %v", err)
	}
}

// layout is a small repository tree; "a-b" sorts between "a" and "a/…" as
// bytes, which a listing must not let change its order.
var layout = []string{"a/1", "a/b/2", "a/b/3", "a/c", "a-b", "z/y/x/w", ".pier/state"}

func writeLayout(t *testing.T, d driver.Driver) {
	for i, k := range layout {
		mustWrite(t, d, k, content(uint64(40+i), i+1))
	}
}

func keys(entries []driver.Info) []string {
	var ks []string
	for _, e := range entries {
		k := e.Key
		if e.IsDir {
			k += "/"
		}
		ks = append(ks, k)
	}
	return ks
}

// List gives the entries right below a directory, sorted by key, files with
// their size and directories marked; an empty or missing directory is an
// empty list.
func testList(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	writeLayout(t, d)
	for _, c := range []struct {
		dir  string
		want []string
	}{
		{"", []string{".pier/", "a/", "a-b", "z/"}},
		{"a", []string{"a/1", "a/b/", "a/c"}},
		{"a/b", []string{"a/b/2", "a/b/3"}},
		{"z", []string{"z/y/"}},
		{"missing", nil},
		{"a/b/2", nil}, // an object, not a directory
	} {
		entries, err := d.List(ctx, c.dir)
		if err != nil && !(c.dir == "a/b/2" && errors.Is(err, driver.ErrNotFound)) {
			t.Fatalf("List(%q): %v", c.dir, err)
		}
		if got := keys(entries); !slices.Equal(got, c.want) {
			t.Fatalf("List(%q) = %q, want %q", c.dir, got, c.want)
		}
		for _, e := range entries {
			if !e.IsDir && (e.Size != int64(slices.Index(layout, e.Key)+1) || e.Version == "") {
				t.Fatalf("List(%q): %+v, want Size %d and a Version", c.dir, e, slices.Index(layout, e.Key)+1)
			}
		}
	}
}

// Prune removes an empty directory and nothing else; where a backend has
// no directories a directory emptied by Delete is not listed anyway.
func testPrune(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	writeLayout(t, d)
	if err := d.Delete(ctx, "a/b/2", "a/b/3"); err != nil {
		t.Fatal(err)
	}
	if err := d.Prune(ctx, "a/b"); err != nil {
		t.Fatalf("Prune of an empty directory: %v", err)
	}
	if err := d.Prune(ctx, "a"); err != nil {
		t.Fatalf("Prune of a directory with files: %v", err)
	}
	if err := d.Prune(ctx, "missing/dir"); err != nil {
		t.Fatalf("Prune of a missing directory: %v", err)
	}
	entries, err := d.List(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(entries), []string{"a/1", "a/c"}; !slices.Equal(got, want) {
		t.Fatalf("after Prune List(a) = %q, want %q", got, want)
	}
	wantContent(t, d, "a/1", content(40, 1))
}

// Walk visits every entry below a directory depth first, each directory's
// entries in key order, as fs.WalkDir.
func testWalk(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	writeLayout(t, d)
	var got []string
	walk := func(dir string) []string {
		got = nil
		err := d.Walk(ctxOf(t), dir, func(fi driver.Info) error {
			got = append(got, keys([]driver.Info{fi})...)
			return nil
		})
		if err != nil {
			t.Fatalf("Walk(%q): %v", dir, err)
		}
		return got
	}
	want := []string{".pier/", ".pier/state", "a/", "a/1", "a/b/", "a/b/2", "a/b/3", "a/c", "a-b", "z/", "z/y/", "z/y/x/", "z/y/x/w"}
	if got := walk(""); !slices.Equal(got, want) {
		t.Fatalf("Walk of the root: %q, want %q", got, want)
	}
	if got, want := walk("a"), []string{"a/1", "a/b/", "a/b/2", "a/b/3", "a/c"}; !slices.Equal(got, want) {
		t.Fatalf("Walk(a): %q, want %q", got, want)
	}
	if got := walk("missing"); len(got) != 0 {
		t.Fatalf("Walk of a missing directory: %q, want nothing", got)
	}
}

// fs.SkipDir on a directory skips it, on a file the rest of its directory;
// fs.SkipAll ends the walk without an error, any other error ends it with
// that error.
func testWalkSkip(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	writeLayout(t, d)
	walk := func(fn func(driver.Info) error) ([]string, error) {
		var got []string
		err := d.Walk(ctxOf(t), "", func(fi driver.Info) error {
			got = append(got, keys([]driver.Info{fi})...)
			return fn(fi)
		})
		return got, err
	}

	got, err := walk(func(fi driver.Info) error {
		if fi.IsDir && (fi.Key == "a/b" || fi.Key == ".pier") {
			return fs.SkipDir
		}
		return nil
	})
	if want := []string{".pier/", "a/", "a/1", "a/b/", "a/c", "a-b", "z/", "z/y/", "z/y/x/", "z/y/x/w"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("SkipDir on directories: %q, %v; want %q", got, err, want)
	}

	got, err = walk(func(fi driver.Info) error {
		if fi.Key == "a/1" {
			return fs.SkipDir
		}
		return nil
	})
	if want := []string{".pier/", ".pier/state", "a/", "a/1", "a-b", "z/", "z/y/", "z/y/x/", "z/y/x/w"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("SkipDir on a file: %q, %v; want %q", got, err, want)
	}

	got, err = walk(func(fi driver.Info) error {
		if fi.Key == "a/b/2" {
			return fs.SkipAll
		}
		return nil
	})
	if want := []string{".pier/", ".pier/state", "a/", "a/1", "a/b/", "a/b/2"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("SkipAll: %q, %v; want %q", got, err, want)
	}

	stop := errors.New("stop")
	got, err = walk(func(fi driver.Info) error {
		if fi.Key == "a/c" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || got[len(got)-1] != "a/c" {
		t.Fatalf("an error from fn: walk gave %v after %q, want it to stop there with that error", err, got)
	}
}
