package drivertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/driver"
)

// badKeys name nothing inside a root, or name it in a way that is not the
// one clean spelling.
var badKeys = []string{
	".", "..", "../x", "a/../../x", "/x", "/", "x/", "a//b", "a/./b", "a/../b", "./a",
	"a\\b", "..\\x", "a\x00b", "\x00",
}

// Every operation refuses an invalid key with ErrInvalidKey, and touches
// nothing.
func testInvalidKeys(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	mustWrite(t, d, "ok/file", []byte("canary"))
	before := tree(t, d)

	for _, key := range append(badKeys, "") {
		check := func(op string, err error) {
			t.Helper()
			wantErr(t, fmt.Sprintf("%s(%q)", op, key), err, driver.ErrInvalidKey)
		}
		_, err := d.Stat(ctx, key)
		check("Stat", err)
		_, _, err = d.Open(ctx, key)
		check("Open", err)
		_, _, err = d.ReadFile(ctx, key, 10)
		check("ReadFile", err)
		_, err = d.WriteFile(ctx, key, []byte("x"))
		check("WriteFile", err)
		_, err = d.ReplaceFile(ctx, key, []byte("x"), "")
		check("ReplaceFile", err)
		_, err = d.Create(ctx, key)
		check("Create", err)
		_, err = d.Append(ctx, key)
		check("Append", err)
		check("Copy from", d.Copy(ctx, key, "ok/copy"))
		check("Copy to", d.Copy(ctx, "ok/file", key))
		check("Move from", d.Move(ctx, key, "ok/moved"))
		check("Move to", d.Move(ctx, "ok/file", key))
		check("Delete", d.Delete(ctx, "ok/file", key))

		w, err := d.Create(ctx, "ok/upload")
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if _, err := w.Write([]byte("data")); err != nil {
			t.Fatalf("Write: %v", err)
		}
		check("Commit to", w.Commit(ctx, key))
		if err := w.Cancel(ctx); err != nil {
			t.Fatalf("Cancel after a refused Commit: %v", err)
		}

		if key == "" {
			continue // the root, for the calls that take a directory
		}
		check("Prune", d.Prune(ctx, key))
		_, err = d.List(ctx, key)
		check("List", err)
		check("Walk", d.Walk(ctx, key, func(driver.Info) error { return nil }))
	}

	if after := tree(t, d); !maps.Equal(before, after) {
		t.Fatalf("after refused calls the root holds %v, want %v", after, before)
	}
	wantContent(t, d, "ok/file", []byte("canary"))
}

// A missing key is ErrNotFound for every read, including a key through an
// object and a key that names only a directory.
func testNotFound(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	mustWrite(t, d, "a/index.json", []byte("{}"))
	for _, key := range []string{"missing", "a/missing", "a/index.json/x", "a", "b/c/d"} {
		_, err := d.Stat(ctx, key)
		wantErr(t, "Stat "+key, err, driver.ErrNotFound)
		_, _, err = d.Open(ctx, key)
		wantErr(t, "Open "+key, err, driver.ErrNotFound)
		_, _, err = d.ReadFile(ctx, key, 100)
		wantErr(t, "ReadFile "+key, err, driver.ErrNotFound)
	}
}

// WriteFile creates what the key needs and replaces whole; Stat and the
// reads agree with what was written, and the Version changes with it.
func testWriteFile(t *testing.T, storage Storage) {
	d, reopen := fresh(t, storage)
	ctx := ctxOf(t)
	start := time.Now().Add(-time.Minute) // clocks of a server may differ a little

	one := content(1, 1000)
	fi := mustWrite(t, d, "r/blobs/sha256/one", one)
	if fi.Size != 1000 || fi.Version == "" {
		t.Fatalf("WriteFile: Info %+v, want Size 1000 and a Version", fi)
	}
	st, err := d.Stat(ctx, "r/blobs/sha256/one")
	if err != nil {
		t.Fatal(err)
	}
	if st.Key != "r/blobs/sha256/one" || st.Size != 1000 || st.IsDir || st.Version != fi.Version {
		t.Fatalf("Stat after WriteFile: %+v, want the key, Size 1000 and Version %q", st, fi.Version)
	}
	if st.ModTime.Before(start) || st.ModTime.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Stat: ModTime %v, want about now", st.ModTime)
	}
	if st.Changed.IsZero() || st.Links < 1 {
		t.Fatalf("Stat: Changed %v, Links %d; want a time and at least 1", st.Changed, st.Links)
	}
	data, rf, err := d.ReadFile(ctx, "r/blobs/sha256/one", 1000)
	if err != nil || !bytes.Equal(data, one) || rf.Version != fi.Version {
		t.Fatalf("ReadFile: %d bytes, Version %q, %v; want what was written, Version %q", len(data), rf.Version, err, fi.Version)
	}

	two := content(2, 3000)
	fi2 := mustWrite(t, d, "r/blobs/sha256/one", two)
	if fi2.Version == fi.Version {
		t.Fatalf("WriteFile of other content kept Version %q", fi.Version)
	}
	wantContent(t, d, "r/blobs/sha256/one", two)
	wantContent(t, reopen(), "r/blobs/sha256/one", two)

	// An empty object is an object.
	mustWrite(t, d, "r/empty", nil)
	wantContent(t, d, "r/empty", []byte{})
}

func testReadFileLimit(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	data := content(3, 4096)
	mustWrite(t, d, "f", data)
	got, _, err := d.ReadFile(ctx, "f", 4096)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadFile with a limit of the size: %d bytes, %v", len(got), err)
	}
	_, _, err = d.ReadFile(ctx, "f", 4095)
	wantErr(t, "ReadFile over the limit", err, driver.ErrTooLarge)
	_, _, err = d.ReadFile(ctx, "f", 0)
	wantErr(t, "ReadFile with limit 0", err, driver.ErrTooLarge)
}

// Open's reader seeks as http.ServeContent uses it: to the end for the
// size, then to each range.
func testOpenSeek(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	data := content(4, 300_000)
	mustWrite(t, d, "blob", data)
	r, fi, err := d.Open(ctxOf(t), "blob")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if fi.Size != int64(len(data)) {
		t.Fatalf("Open: Size %d, want %d", fi.Size, len(data))
	}
	if end, err := r.Seek(0, io.SeekEnd); err != nil || end != int64(len(data)) {
		t.Fatalf("Seek to the end: %d, %v", end, err)
	}
	for _, rg := range [][2]int{{0, 10}, {299_990, 300_000}, {1234, 100_000}, {5, 6}, {0, 300_000}, {150_000, 150_001}} {
		if _, err := r.Seek(int64(rg[0]), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, rg[1]-rg[0])
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[rg[0]:rg[1]]) {
			t.Fatalf("bytes %d-%d: %v, or not the object's", rg[0], rg[1], err)
		}
	}
	if _, err := r.Seek(-1, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	last := make([]byte, 2)
	if n, err := r.Read(last); n != 1 || last[0] != data[len(data)-1] || (err != nil && err != io.EOF) {
		t.Fatalf("read of the last byte: %d, %v", n, err)
	}
	if n, err := r.Read(last); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v; want 0, io.EOF", n, err)
	}
}

// A reader never sees a torn object: while one writer replaces an object
// again and again with either of two contents, every read is one of them.
func testWriteFileAtomic(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	a, b := content(5, 1<<20), content(6, 1<<20+1<<19)
	mustWrite(t, d, "r/index.json", a)

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 40 && !stop.Load(); i++ {
			data := a
			if i%2 == 0 {
				data = b
			}
			if _, err := d.WriteFile(ctx, "r/index.json", data); err != nil {
				t.Errorf("WriteFile: %v", err)
				return
			}
		}
	}()
	var reads atomic.Int64
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40 && !t.Failed(); i++ {
				got, _, err := d.ReadFile(ctx, "r/index.json", 4<<20)
				if err != nil {
					t.Errorf("ReadFile during replaces: %v", err)
					return
				}
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					t.Errorf("read %d bytes that are neither version: a torn object", len(got))
					stop.Store(true)
					return
				}
				reads.Add(1)
			}
		}()
	}
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("no read completed")
	}
}

// Content moves with the bytes (a replace), and is the same for two
// stats of an unchanged object.
func testContent(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := context.Background()
	if _, err := d.WriteFile(ctx, "r/blob", []byte("first")); err != nil {
		t.Fatal(err)
	}
	a, _ := d.Stat(ctx, "r/blob")
	b, _ := d.Stat(ctx, "r/blob")
	if a.Content == "" || a.Content != b.Content {
		t.Fatalf("Content of an unchanged object: %q then %q", a.Content, b.Content)
	}
	time.Sleep(10 * time.Millisecond)
	if _, err := d.WriteFile(ctx, "r/blob", []byte("other")); err != nil {
		t.Fatal(err)
	}
	if c, _ := d.Stat(ctx, "r/blob"); c.Content == a.Content {
		t.Fatal("Content kept across a replace with other bytes")
	}
}
