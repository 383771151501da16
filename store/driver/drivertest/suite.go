// Package drivertest is the suite every storage driver passes: the
// contract of store/driver, pinned down test by test, with nothing in it
// about any one backend. A backend's own _test.go calls Run:
//
//	func TestDriver(t *testing.T) {
//		drivertest.Run(t, func(t *testing.T) func() driver.Driver {
//			dir := t.TempDir()
//			return func() driver.Driver { return mustOpen(t, dir) }
//		})
//	}
package drivertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/driver"
)

// Storage makes a new, empty storage for one test and returns how to open
// a driver on it. Each call of open is a new driver over the same storage,
// as after a restart (or on another replica); the suite closes them.
type Storage func(t *testing.T) (open func() driver.Driver)

// Run runs the whole suite, each part as a subtest.
func Run(t *testing.T, storage Storage) {
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, storage) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, storage) })
	t.Run("WriteFile", func(t *testing.T) { testWriteFile(t, storage) })
	t.Run("ReadFileLimit", func(t *testing.T) { testReadFileLimit(t, storage) })
	t.Run("OpenSeek", func(t *testing.T) { testOpenSeek(t, storage) })
	t.Run("WriteFileAtomic", func(t *testing.T) { testWriteFileAtomic(t, storage) })
	t.Run("ReplaceFile", func(t *testing.T) { testReplaceFile(t, storage) })
	t.Run("ReplaceFileRace", func(t *testing.T) { testReplaceFileRace(t, storage) })
	t.Run("ReplaceFileCounter", func(t *testing.T) { testReplaceFileCounter(t, storage) })
	t.Run("Upload", func(t *testing.T) { testUpload(t, storage) })
	t.Run("UploadResumed", func(t *testing.T) { testUploadResumed(t, storage) })
	t.Run("UploadSmallTails", func(t *testing.T) { testUploadSmallTails(t, storage) })
	t.Run("UploadLarge", func(t *testing.T) { testUploadLarge(t, storage) })
	t.Run("UploadEmpty", func(t *testing.T) { testUploadEmpty(t, storage) })
	t.Run("UploadCommitReplaces", func(t *testing.T) { testUploadCommitReplaces(t, storage) })
	t.Run("UploadCancel", func(t *testing.T) { testUploadCancel(t, storage) })
	t.Run("UploadErrors", func(t *testing.T) { testUploadErrors(t, storage) })
	t.Run("UploadDelete", func(t *testing.T) { testUploadDelete(t, storage) })
	t.Run("UploadAbort", func(t *testing.T) { testUploadAbort(t, storage) })
	t.Run("Content", func(t *testing.T) { testContent(t, storage) })
	t.Run("Checkpoint", func(t *testing.T) { testCheckpoint(t, storage) })
	t.Run("Copy", func(t *testing.T) { testCopy(t, storage) })
	t.Run("Move", func(t *testing.T) { testMove(t, storage) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, storage) })
	t.Run("List", func(t *testing.T) { testList(t, storage) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, storage) })
	t.Run("Walk", func(t *testing.T) { testWalk(t, storage) })
	t.Run("WalkSkip", func(t *testing.T) { testWalkSkip(t, storage) })
	t.Run("ConcurrentStreams", func(t *testing.T) { testConcurrentStreams(t, storage) })
	t.Run("Toucher", func(t *testing.T) { testToucher(t, storage) })
	t.Run("Linker", func(t *testing.T) { testLinker(t, storage) })
	t.Run("Spacer", func(t *testing.T) { testSpacer(t, storage) })
}

// LargeSize is the length of the suite's large objects: more than two
// chunks of the s3 driver's smallest chunk size (5 MiB), and odd.
const LargeSize = 11<<20 + 4099

// oddWrites are the sizes of the writes that fill large uploads in turn:
// tiny, odd, around the usual buffer sizes, and over a megabyte.
var oddWrites = []int{1, 7, 4096, 4097, 65535, 256 << 10, 1<<20 + 3, 3 << 20}

// fresh opens a driver on a new storage, and returns it with the function
// that opens another driver on the same storage.
func fresh(t *testing.T, storage Storage) (driver.Driver, func() driver.Driver) {
	t.Helper()
	open := storage(t)
	reopen := func() driver.Driver {
		d := open()
		t.Cleanup(func() { d.Close() })
		return d
	}
	return reopen(), reopen
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// content returns n bytes that differ with seed, so a mix-up shows.
func content(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed*31+7))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func mustWrite(t *testing.T, d driver.Driver, key string, data []byte) driver.Info {
	t.Helper()
	fi, err := d.WriteFile(ctxOf(t), key, data)
	if err != nil {
		t.Fatalf("WriteFile %s: %v", key, err)
	}
	return fi
}

// mustRead reads key with Open, as a server sends it.
func mustRead(t *testing.T, d driver.Driver, key string) []byte {
	t.Helper()
	r, fi, err := d.Open(ctxOf(t), key)
	if err != nil {
		t.Fatalf("Open %s: %v", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if int64(len(data)) != fi.Size {
		t.Fatalf("Open %s: Info.Size %d, read %d bytes", key, fi.Size, len(data))
	}
	return data
}

func wantContent(t *testing.T, d driver.Driver, key string, want []byte) {
	t.Helper()
	got := mustRead(t, d, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: read %d bytes (sha256 %x), want %d bytes (sha256 %x)", key, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	fi, err := d.Stat(ctxOf(t), key)
	if err != nil {
		t.Fatalf("Stat %s: %v", key, err)
	}
	if fi.Size != int64(len(want)) {
		t.Fatalf("Stat %s: Size %d, want %d", key, fi.Size, len(want))
	}
}

func wantErr(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error %v, want %v", what, err, kind)
	}
}

func wantGone(t *testing.T, d driver.Driver, key string) {
	t.Helper()
	_, err := d.Stat(ctxOf(t), key)
	wantErr(t, "Stat "+key, err, driver.ErrNotFound)
}

// tree returns every object below the root with its size, from Walk.
func tree(t *testing.T, d driver.Driver) map[string]int64 {
	t.Helper()
	objs := map[string]int64{}
	err := d.Walk(ctxOf(t), "", func(fi driver.Info) error {
		if !fi.IsDir {
			objs[fi.Key] = fi.Size
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return objs
}

// writeUpload writes data to w in the odd sizes, from the one at turn.
func writeUpload(t *testing.T, w driver.Writer, data []byte, turn int) {
	t.Helper()
	for len(data) > 0 {
		n := min(oddWrites[turn%len(oddWrites)], len(data))
		turn++
		if k, err := w.Write(data[:n]); err != nil || k != n {
			t.Fatalf("Write of %d bytes: wrote %d, %v", n, k, err)
		}
		data = data[n:]
	}
}
