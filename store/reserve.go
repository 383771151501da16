package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/store/disk"
)

// A full disk must not lock the operator out: deleting a tag or a
// manifest, and collecting garbage, rewrite index.json (a new file, then a
// rename), which needs free space before it frees any. So pier keeps a
// small file of allocated blocks, <root>/.pier/reserve. Pushes never eat
// into it: each first makes sure it is there, and fails with the disk full
// when it cannot be. A delete or a collection that finds the disk full
// removes it and tries again, and the next push makes it again once space
// has come back.

// reserveSize is the space held back: the index.json of a repository with
// thousands of tags, with room to spare.
const reserveSize = 1 << 20

// ErrStorageFull is a write the storage has no room for (ENOSPC, or a
// quota's EDQUOT). The errors the store returns wrap the system's error:
// test them with IsStorageFull.
var ErrStorageFull = errors.New("no space left on the storage")

// IsStorageFull reports whether err is a write refused for lack of space.
func IsStorageFull(err error) bool {
	return errors.Is(err, ErrStorageFull) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// reserve is the held-back space of one root.
type reserve struct {
	path string
	fs   *disk.FS

	mu      sync.Mutex
	present bool // the file is there at its full size, as far as pier knows
}

func newReserve(s *Store) *reserve {
	return &reserve{path: filepath.Join(s.pierDir(), "reserve"), fs: s.fs}
}

// ensure makes the reserve if it is not there. It fails when the storage
// has no room for it: the disk is full, and a push must not go on.
func (r *reserve) ensure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.present {
		return nil
	}
	if fi, err := os.Stat(r.path); err == nil && fi.Mode().IsRegular() && fi.Size() == reserveSize && diskUsage(fi) >= reserveSize {
		r.present = true
		return nil
	}
	if err := r.fs.MkdirAll(filepath.Dir(r.path)); err != nil {
		return fmt.Errorf("keep space for deletes: %w", err)
	}
	f, err := r.fs.CreateTemp(filepath.Dir(r.path))
	if err != nil {
		return fmt.Errorf("keep space for deletes: %w", err)
	}
	tmp := f.Name()
	err = allocate(f, reserveSize)
	if err == nil {
		err = r.fs.SyncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.fs.Rename(tmp, r.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keep space for deletes: %w", err)
	}
	r.present = true
	return nil
}

// release removes the reserve, giving its space to a delete or a
// collection that found the disk full. It reports whether there was one.
func (r *reserve) release() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.present = false
	return os.Remove(r.path) == nil
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

// diskUsage is the space a file's blocks take.
func diskUsage(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// freeing runs a write that a delete or a collection needs before it can
// free anything (an index.json rewrite). When the disk is full it releases
// the reserve and runs it once more.
func (s *Store) freeing(write func() error) error {
	err := write()
	if err == nil || !IsStorageFull(err) || s.reserve == nil || !s.reserve.release() {
		return err
	}
	s.log.Warn("the storage is full: the space kept for deletes is used; pushes are refused until space is freed (delete images, then garbage collection frees their blobs)")
	return write()
}
