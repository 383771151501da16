package drivertest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/driver"
)

// Several uploads and reads at once, each through its own stream, do not
// mix their bytes.
func testConcurrentStreams(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	ctx := ctxOf(t)
	const n = 4
	big := content(50, LargeSize)
	mustWrite(t, d, "r/blobs/sha256/big", big)

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("r/.uploads/%08d-0000-4000-8000-000000000000", i)
			data := content(uint64(60+i), 6<<20+i*1001)
			w, err := d.Create(ctx, key)
			if err != nil {
				t.Errorf("Create: %v", err)
				return
			}
			for off, turn := 0, i; off < len(data); turn++ {
				k := min(oddWrites[turn%len(oddWrites)], len(data)-off)
				if _, err := w.Write(data[off : off+k]); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				off += k
			}
			dst := fmt.Sprintf("r/blobs/sha256/%d", i)
			if err := w.Commit(ctx, dst); err != nil {
				t.Errorf("Commit: %v", err)
				return
			}
			got, _, err := d.ReadFile(ctx, dst, 1<<30)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("upload %d: read back %d bytes, %v; want its own %d bytes", i, len(got), err, len(data))
			}
		}()
		go func() {
			defer wg.Done()
			r, _, err := d.Open(ctx, "r/blobs/sha256/big")
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			defer r.Close()
			h := sha256.New()
			if _, err := io.CopyBuffer(h, r, make([]byte, 32<<10+i)); err != nil {
				t.Errorf("read: %v", err)
				return
			}
			if got, want := h.Sum(nil), sha256.Sum256(big); !bytes.Equal(got, want[:]) {
				t.Errorf("reader %d: read other bytes than the object's", i)
			}
		}()
	}
	wg.Wait()
}

// A Toucher makes an object changed now and leaves its content.
func testToucher(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	touch, ok := d.(driver.Toucher)
	if !ok {
		t.Skip("the driver is no driver.Toucher")
	}
	data := content(70, 1000)
	mustWrite(t, d, "r/blobs/sha256/t", data)
	before, err := d.Stat(ctxOf(t), "r/blobs/sha256/t")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past a whole second, the coarsest clock a backend keeps
	if err := touch.Touch(ctxOf(t), "r/blobs/sha256/t"); err != nil {
		t.Fatalf("Touch: %v", err)
	}
	after, err := d.Stat(ctxOf(t), "r/blobs/sha256/t")
	if err != nil {
		t.Fatal(err)
	}
	if !after.Changed.After(before.Changed) {
		t.Fatalf("Touch: Changed %v, was %v; want later", after.Changed, before.Changed)
	}
	wantContent(t, d, "r/blobs/sha256/t", data)
	wantErr(t, "Touch of a missing key", touch.Touch(ctxOf(t), "r/missing"), driver.ErrNotFound)
}

// A Linker gives an object a second key (or says it cannot here); the two
// keys are one object.
func testLinker(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	link, ok := d.(driver.Linker)
	if !ok {
		t.Skip("the driver is no driver.Linker")
	}
	data := content(71, 5000)
	mustWrite(t, d, "a/blobs/sha256/l", data)
	mustWrite(t, d, "b/blobs/sha256/l", []byte("replaced by the link"))
	err := link.Link(ctxOf(t), "a/blobs/sha256/l", "b/blobs/sha256/l")
	if errors.Is(err, driver.ErrUnsupported) {
		t.Skipf("Link: %v", err)
	}
	if err != nil {
		t.Fatalf("Link: %v", err)
	}
	wantContent(t, d, "b/blobs/sha256/l", data)
	a, _ := d.Stat(ctxOf(t), "a/blobs/sha256/l")
	b, _ := d.Stat(ctxOf(t), "b/blobs/sha256/l")
	if a.ID == "" || a.ID != b.ID || a.Links != 2 || b.Links != 2 {
		t.Fatalf("linked keys: ID %q and %q, Links %d and %d; want one ID and 2 links", a.ID, b.ID, a.Links, b.Links)
	}
	wantErr(t, "Link of a missing key", link.Link(ctxOf(t), "a/missing", "b/x"), driver.ErrNotFound)
}

// A Spacer reports free space within its total.
func testSpacer(t *testing.T, storage Storage) {
	d, _ := fresh(t, storage)
	sp, ok := d.(driver.Spacer)
	if !ok {
		t.Skip("the driver is no driver.Spacer")
	}
	free, total, err := sp.Space()
	if err != nil || total <= 0 || free < 0 || free > total {
		t.Fatalf("Space: free %d, total %d, %v", free, total, err)
	}
}
