package drivertest

import (
	"bytes"
	"io"
	"maps"
	"testing"

	"github.com/pier-oci/pier/store/driver"
)

const uploadKey = "r/.uploads/0b5a4e3e-8d1c-4a6f-9f7e-2c1d5e6f7a8b"

func mustCreate(t *testing.T, d driver.Driver, key string) driver.Writer {
	t.Helper()
	w, err := d.Create(ctxOf(t), key)
	if err != nil {
		t.Fatalf("Create %s: %v", key, err)
	}
	if w.Size() != 0 {
		t.Fatalf("Create %s: Size %d, want 0", key, w.Size())
	}
	return w
}

func mustAppend(t *testing.T, d driver.Driver, key string, size int64) driver.Writer {
	t.Helper()
	w, err := d.Append(ctxOf(t), key)
	if err != nil {
		t.Fatalf("Append %s: %v", key, err)
	}
	if w.Size() != size {
		t.Fatalf("Append %s: Size %d, want %d", key, w.Size(), size)
	}
	return w
}

func mustClose(t *testing.T, w driver.Writer) {
	t.Helper()
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func mustCommit(t *testing.T, w driver.Writer, dst string) {
	t.Helper()
	if err := w.Commit(ctxOf(t), dst); err != nil {
		t.Fatalf("Commit to %s: %v", dst, err)
	}
}

// An upload grows by Writes, is kept by Close and can then be read, and
// Commit makes it the object at dst, whole, and ends it.
func testUpload(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	data := content(10, 300_000)
	dst := "r/blobs/sha256/aa"

	w := mustCreate(t, d, uploadKey)
	writeUpload(t, w, data[:100_000], 0)
	if w.Size() != 100_000 {
		t.Fatalf("Size after writes: %d, want 100000", w.Size())
	}
	mustClose(t, w)
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	wantContent(t, d, uploadKey, data[:100_000])
	wantGone(t, d, dst)

	w = mustAppend(t, d, uploadKey, 100_000)
	writeUpload(t, w, data[100_000:], 3)
	if w.Size() != int64(len(data)) {
		t.Fatalf("Size: %d, want %d", w.Size(), len(data))
	}
	wantGone(t, d, dst) // nothing at dst before Commit
	mustCommit(t, w, dst)
	wantContent(t, d, dst, data)
	wantGone(t, d, uploadKey)
	_, err := d.Append(ctxOf(t), uploadKey)
	wantErr(t, "Append after Commit", err, driver.ErrNotFound)
}

// An upload outlives its driver: each part of it is written through a new
// driver on the same storage, as after a restart or on another replica.
func testUploadResumed(t *testing.T, storage Storage) {
	_, reopen := fresh(t, storage)
	data := content(11, 2_500_000)
	cuts := []int{0, 1, 70_000, 70_001, 1_000_000, 2_400_000, len(data)}

	mustClose(t, mustCreate(t, reopen(), uploadKey))
	for i := 1; i < len(cuts); i++ {
		d := reopen()
		w := mustAppend(t, d, uploadKey, int64(cuts[i-1]))
		writeUpload(t, w, data[cuts[i-1]:cuts[i]], i)
		mustClose(t, w)
		wantContent(t, reopen(), uploadKey, data[:cuts[i]])
	}
	d := reopen()
	mustCommit(t, mustAppend(t, d, uploadKey, int64(len(data))), "r/blobs/sha256/bb")
	wantContent(t, reopen(), "r/blobs/sha256/bb", data)
	wantGone(t, d, uploadKey)
}

// Closes after small writes (a chunked push of small chunks: less than any
// part or page a backend may use) and Appends after them.
func testUploadSmallTails(t *testing.T, storage Storage) {
	d, reopen := fresh(t, storage)
	var data []byte
	w := mustCreate(t, d, uploadKey)
	for i, n := range []int{3, 1, 100, 4096, 65537, 2, 1 << 20, 5, 6<<20 + 1, 9} {
		chunk := content(uint64(20+i), n)
		if _, err := w.Write(chunk); err != nil {
			t.Fatalf("Write: %v", err)
		}
		data = append(data, chunk...)
		mustClose(t, w)
		w = mustAppend(t, reopen(), uploadKey, int64(len(data)))
	}
	mustCommit(t, w, "r/blobs/sha256/cc")
	wantContent(t, d, "r/blobs/sha256/cc", data)
}

// An object larger than a few chunks, written in writes of odd sizes, with
// a Close in the middle of a chunk.
func testUploadLarge(t *testing.T, storage Storage) {
	d, reopen := fresh(t, storage)
	data := content(12, LargeSize)
	w := mustCreate(t, d, uploadKey)
	half := LargeSize/2 + 12345
	writeUpload(t, w, data[:half], 0)
	mustClose(t, w)
	wantContent(t, d, uploadKey, data[:half])

	w = mustAppend(t, reopen(), uploadKey, int64(half))
	writeUpload(t, w, data[half:], 5)
	mustCommit(t, w, "r/blobs/sha256/dd")
	wantContent(t, reopen(), "r/blobs/sha256/dd", data)

	// And read back in ranges across wherever it was cut.
	r, _, err := d.Open(ctxOf(t), "r/blobs/sha256/dd")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, off := range []int{0, 5<<20 - 3, half - 1, LargeSize - 100} {
		if _, err := r.Seek(int64(off), 0); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, min(100_000, LargeSize-off))
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[off:off+len(got)]) {
			t.Fatalf("read at %d: %v, or not the object's bytes", off, err)
		}
	}
}

// An upload with nothing written commits an empty object.
func testUploadEmpty(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	w := mustCreate(t, d, uploadKey)
	mustClose(t, w)
	wantContent(t, d, uploadKey, []byte{})
	mustCommit(t, mustAppend(t, d, uploadKey, 0), "r/blobs/sha256/e3")
	wantContent(t, d, "r/blobs/sha256/e3", []byte{})
}

// Commit replaces an object at dst, and moves nothing else.
func testUploadCommitReplaces(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	mustWrite(t, d, "r/blobs/sha256/ff", []byte("old"))
	mustWrite(t, d, "r/other", []byte("other"))
	w := mustCreate(t, d, uploadKey)
	writeUpload(t, w, []byte("new content"), 0)
	mustCommit(t, w, "r/blobs/sha256/ff")
	wantContent(t, d, "r/blobs/sha256/ff", []byte("new content"))
	want := map[string]int64{"r/blobs/sha256/ff": 11, "r/other": 5}
	if got := tree(t, d); !maps.Equal(got, want) {
		t.Fatalf("after Commit the root holds %v, want %v", got, want)
	}
}

// Cancel ends an upload and leaves nothing of it.
func testUploadCancel(t *testing.T, storage Storage) {
	d, reopen := fresh(t, storage)
	mustWrite(t, d, "r/index.json", []byte("{}"))
	before := tree(t, d)

	w := mustCreate(t, d, uploadKey)
	writeUpload(t, w, content(13, 6<<20+5), 0)
	mustClose(t, w)
	w = mustAppend(t, reopen(), uploadKey, 6<<20+5)
	writeUpload(t, w, content(14, 1000), 0)
	if err := w.Cancel(ctxOf(t)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	wantGone(t, d, uploadKey)
	if after := tree(t, d); !maps.Equal(before, after) {
		t.Fatalf("after Cancel the root holds %v, want %v", after, before)
	}
	// The key is free again.
	mustClose(t, mustCreate(t, d, uploadKey))
	wantContent(t, d, uploadKey, []byte{})
}

func testUploadErrors(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	_, err := d.Append(ctx, uploadKey)
	wantErr(t, "Append of a missing upload", err, driver.ErrNotFound)

	mustClose(t, mustCreate(t, d, uploadKey))
	_, err = d.Create(ctx, uploadKey)
	wantErr(t, "Create of an existing upload", err, driver.ErrExists)

	mustWrite(t, d, "r/index.json", []byte("{}"))
	_, err = d.Create(ctx, "r/index.json")
	wantErr(t, "Create over an object", err, driver.ErrExists)
	wantContent(t, d, "r/index.json", []byte("{}"))
}

// Deleting an upload's key removes the upload: nothing of it is left, and
// the key can start a new one.
func testUploadDelete(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	other := "r/.uploads/11111111-2222-4333-8444-555555555555"
	w := mustCreate(t, d, uploadKey)
	writeUpload(t, w, content(15, 6<<20+1), 0)
	mustClose(t, w)
	w = mustCreate(t, d, other)
	writeUpload(t, w, []byte("kept"), 0)
	mustClose(t, w)

	if err := d.Delete(ctxOf(t), uploadKey); err != nil {
		t.Fatalf("Delete of an upload: %v", err)
	}
	wantGone(t, d, uploadKey)
	_, err := d.Append(ctxOf(t), uploadKey)
	wantErr(t, "Append of a deleted upload", err, driver.ErrNotFound)
	wantContent(t, d, other, []byte("kept"))
	if got := tree(t, d); len(got) != 1 {
		t.Fatalf("after Delete the root holds %v, want only %s", got, other)
	}
	mustClose(t, mustCreate(t, d, uploadKey))
	wantContent(t, d, uploadKey, []byte{})
}

// A driver whose writers keep a checkpoint returns it with the length it
// was set at, across drivers; one set before more was written is stale.
func testCheckpoint(t *testing.T, storage Storage) {
	d, reopen := fresh(t, storage)
	w := mustCreate(t, d, uploadKey)
	c, ok := w.(driver.Checkpointer)
	if !ok {
		t.Skip("the writer keeps no checkpoint (driver.Checkpointer)")
	}
	if state, _ := c.Checkpoint(); state != nil {
		t.Fatalf("new upload: Checkpoint %q, want none", state)
	}
	writeUpload(t, w, content(16, 5000), 0)
	c.SetCheckpoint([]byte("after 5000"))
	mustClose(t, w)

	w = mustAppend(t, reopen(), uploadKey, 5000)
	state, size := w.(driver.Checkpointer).Checkpoint()
	if string(state) != "after 5000" || size != 5000 {
		t.Fatalf("Checkpoint after a restart: %q at %d, want \"after 5000\" at 5000", state, size)
	}
	writeUpload(t, w, content(17, 100), 0)
	mustClose(t, w) // without a new checkpoint

	w = mustAppend(t, reopen(), uploadKey, 5100)
	if state, size := w.(driver.Checkpointer).Checkpoint(); state != nil && size == 5100 {
		t.Fatalf("Checkpoint %q claims length 5100, but was set at 5000", state)
	}
	if err := w.Cancel(ctxOf(t)); err != nil {
		t.Fatal(err)
	}
}

// Abort takes back everything the writer wrote, large or small, and the
// upload is as Append found it, for this driver and the next.
func testUploadAbort(t *testing.T, storage Storage) {
	_, reopen := fresh(t, storage)
	data := content(12, 3_000_000)
	w := mustCreate(t, reopen(), uploadKey)
	writeUpload(t, w, data[:1_000_001], 1)
	mustClose(t, w)
	for _, n := range []int{3, LargeSize} { // less than a page, more than two chunks
		d := reopen()
		w := mustAppend(t, d, uploadKey, 1_000_001)
		writeUpload(t, w, content(13, n), 2)
		if err := w.Abort(); err != nil {
			t.Fatalf("Abort after %d bytes: %v", n, err)
		}
		wantContent(t, reopen(), uploadKey, data[:1_000_001])
	}
	w = mustAppend(t, reopen(), uploadKey, 1_000_001)
	writeUpload(t, w, data[1_000_001:], 3)
	mustCommit(t, w, "r/blobs/sha256/ab")
	wantContent(t, reopen(), "r/blobs/sha256/ab", data)
}
