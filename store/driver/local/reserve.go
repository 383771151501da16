package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/store/driver"
)

// A full disk must not lock the operator out: deleting a tag or a
// manifest, and collecting garbage, rewrite index.json (a new file, then a
// rename), which needs free space before it frees any. So the driver can
// keep a small file of allocated blocks, <dir>/.pier/reserve
// (Options.Reserve). Writes that add content first make sure it is there
// (Reserve), and fail with the disk full when it cannot be. A write that
// frees space and finds the disk full removes it (Release) and tries
// again; the next Reserve makes it again once space has come back.

// reserveKey is where the kept space is.
const reserveKey = ".pier/reserve"

type reserve struct {
	size int64

	mu      sync.Mutex
	present bool // the file is there at its full size, as far as the driver knows
}

var _ driver.Reserver = (*Driver)(nil)

// Reserve makes the reserve file if it is not there.
func (d *Driver) Reserve(ctx context.Context) error {
	r := &d.reserve
	if r.size == 0 || d.ro {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.present {
		return nil
	}
	if st, err := d.root.stat(reserveKey); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == r.size && st.Blocks*512 >= r.size {
		r.present = true
		return nil
	}
	if err := d.mkdirAll(path.Dir(reserveKey)); err != nil {
		return fmt.Errorf("keep space for deletes: %w", err)
	}
	tmp := besideKey(reserveKey, ".tmp-")
	f, _, err := d.root.openFile(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("keep space for deletes: %w", mapErr(err))
	}
	err = allocate(f, r.size)
	if err == nil {
		err = d.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.root.rename(tmp, reserveKey)
	}
	if err != nil {
		d.root.remove(tmp)
		return fmt.Errorf("keep space for deletes: %w", mapErr(err))
	}
	r.present = true
	return nil
}

// Release removes the reserve file.
func (d *Driver) Release() bool {
	r := &d.reserve
	if r.size == 0 || d.ro {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.present = false
	return d.root.remove(reserveKey) == nil
}

// allocate gives f size bytes of real blocks: fallocate where the
// filesystem has it, else written zeros (a sparse file holds nothing back).
func allocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if err == nil || !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	zeros := make([]byte, 64<<10)
	for written := int64(0); written < size; {
		n, err := f.Write(zeros[:min(int64(len(zeros)), size-written)])
		written += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}
