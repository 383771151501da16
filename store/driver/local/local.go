// Package local is the storage driver for a directory on a local
// filesystem (an SD card, a disk, a USB stick, NFS): keys are paths below
// the directory.
//
// Every operation goes through an os.Root, so no key, and no symbolic link
// a layout copied from elsewhere brings, reaches outside the directory.
//
// Durability (see durable.go) follows one protocol: write a temporary file,
// fsync it, rename it over the final name, fsync the directory that holds
// the name. Without the last fsync ext4 may lose the rename itself after a
// power cut, though the data is on the disk. With durability off (zot's
// commit: false) the fsyncs are skipped but every replacement is still a
// rename, so readers never see a torn file.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/keylock"
)

// Options configures a Driver.
type Options struct {
	// Sync makes every write durable before it returns (zot's commit).
	Sync bool
	// ReadOnly refuses every write. A directory on a read-only mount is
	// read-only whatever this says (see Driver.ReadOnly).
	ReadOnly bool
	// Lock takes the directory's process lock (<dir>/.pier/lock) so that
	// no other pier writes to it at the same time; Open fails with
	// ErrBusy if another process holds it. A read-only driver takes none.
	Lock bool
	// Reserve is the space, in bytes, the driver keeps back for writes
	// that free space on a full disk (reserve.go); 0 keeps none.
	Reserve int64
	// TempDir is the key of the directory for temporary files, on the
	// same filesystem as the rest ("" puts each next to its target, as a
	// dot file). It is emptied at Open: what is in it is what a crash
	// left.
	TempDir string
}

// ErrBusy means another process holds the directory's lock.
var ErrBusy = errors.New("another pier process is using this storage directory")

// Driver is a local directory.
type Driver struct {
	dir    string // absolute
	root   *tree
	sync   bool
	ro     bool
	tmpDir string // key of the temporary directory, "" for in place
	tmpDev uint64 // its filesystem
	unlock func()
	locked bool // the directory's process lock is held

	fsync    func(*os.File) error // (*os.File).Sync; tests fail it
	syncs    atomic.Int64
	creating keylock.Map // held by mkdirAll from a directory's creation to its fsync
	reserve  reserve
}

var (
	_ driver.Driver      = (*Driver)(nil)
	_ driver.Linker      = (*Driver)(nil)
	_ driver.Toucher     = (*Driver)(nil)
	_ driver.Notifier    = (*Driver)(nil)
	_ driver.Syncer      = (*Driver)(nil)
	_ driver.Spacer      = (*Driver)(nil)
	_ driver.Checker     = (*Driver)(nil)
	_ driver.SyncCounter = (*Driver)(nil)
)

// Open opens (creating, unless read-only) the directory dir.
func Open(dir string, opts Options) (*Driver, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage directory %q: %w", dir, err)
	}
	d := &Driver{dir: abs, sync: opts.Sync, tmpDir: opts.TempDir, unlock: func() {}, reserve: reserve{size: opts.Reserve}, fsync: (*os.File).Sync}
	d.ro = opts.ReadOnly || (readOnlyMount(abs) && existsDir(abs))
	if !d.ro {
		if err := d.mkdirAllOS(abs); err != nil {
			return nil, fmt.Errorf("create storage directory %s: %w", abs, mapErr(err))
		}
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("storage directory %s is not a directory", abs)
	}
	if d.root, err = openTree(abs); err != nil {
		return nil, fmt.Errorf("open storage directory %s: %w", abs, err)
	}
	if !d.ro && opts.Lock {
		if d.unlock, err = d.lock(); err != nil {
			d.root.close()
			return nil, err
		}
		d.locked = true
	}
	if !d.ro && d.tmpDir != "" {
		if err := d.resetTemp(opts.Lock); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// Dir is the absolute directory the driver serves.
func (d *Driver) Dir() string { return d.dir }

func (d *Driver) String() string { return "local " + d.dir }

// ReadOnly reports whether the driver was opened read-only or found its
// directory on a read-only mount.
func (d *Driver) ReadOnly() bool { return d.ro }

// Exclusive reports whether the directory's process lock is held: no
// other pier writes to it while the driver is open.
func (d *Driver) Exclusive() bool { return d.locked }

// Syncs reports the fsync calls made so far.
func (d *Driver) Syncs() int64 { return d.syncs.Load() }

// Close releases the directory and its lock.
func (d *Driver) Close() error {
	d.unlock()
	return d.root.close()
}

// check validates key and, for a write, that writes are allowed.
func (d *Driver) check(key string, write bool) error {
	if !driver.ValidKey(key) {
		return fmt.Errorf("%w: %q", driver.ErrInvalidKey, key)
	}
	if write && d.ro {
		return fmt.Errorf("%w: %s", driver.ErrReadOnly, d.dir)
	}
	return nil
}

// checkDir is check for a directory key, where "" is the root.
func (d *Driver) checkDir(dir string, write bool) error {
	if dir == "" && !write {
		return nil
	}
	return d.check(dir, write)
}

func (d *Driver) Stat(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(key, false); err != nil {
		return driver.Info{}, err
	}
	st, err := d.root.stat(key)
	if err != nil {
		return driver.Info{}, fmt.Errorf("stat %s: %w", key, mapErr(err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return driver.Info{}, fmt.Errorf("stat %s: %w %w", key, driver.ErrNotFound, driver.ErrNotObject)
	}
	return infoOf(key, &st), nil
}

// Open returns an *os.File, so that net/http sends it with sendfile.
func (d *Driver) Open(ctx context.Context, key string) (io.ReadSeekCloser, driver.Info, error) {
	if err := d.check(key, false); err != nil {
		return nil, driver.Info{}, err
	}
	f, st, err := d.root.openRegular(key)
	if err != nil {
		return nil, driver.Info{}, fmt.Errorf("open %s: %w", key, mapErr(err))
	}
	return f, infoOf(key, &st), nil
}

func (d *Driver) ReadFile(ctx context.Context, key string, limit int64) ([]byte, driver.Info, error) {
	r, info, err := d.Open(ctx, key)
	if err != nil {
		return nil, info, err
	}
	defer r.Close()
	if info.Size > limit {
		return nil, info, fmt.Errorf("read %s: %w: %d bytes, the limit is %d", key, driver.ErrTooLarge, info.Size, limit)
	}
	b := make([]byte, 0, info.Size+1) // +1: room to see the file grew
	b, err = readAtMost(r, b, limit)
	if err != nil {
		return nil, info, fmt.Errorf("read %s: %w", key, err)
	}
	return b, info, nil
}

// readAtMost appends r to b, failing with ErrTooLarge past limit bytes.
func readAtMost(r io.Reader, b []byte, limit int64) ([]byte, error) {
	for {
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes", driver.ErrTooLarge, limit)
		}
		if len(b) == cap(b) {
			b = slices.Grow(b, 512)
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			if int64(len(b)) > limit {
				return nil, fmt.Errorf("%w: more than %d bytes", driver.ErrTooLarge, limit)
			}
			return b, nil
		}
		if err != nil {
			return nil, mapErr(err)
		}
	}
}

func (d *Driver) WriteFile(ctx context.Context, key string, data []byte) (driver.Info, error) {
	if err := d.check(key, true); err != nil {
		return driver.Info{}, err
	}
	if err := d.replace(key, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		return driver.Info{}, err
	}
	return d.Stat(ctx, key)
}

// ReplaceFile compares and swaps under an flock of the key's directory,
// which orders every writer that takes it: goroutines, and other
// processes on the same directory (an offline pier gc beside a
// read-only pier, two drivers in a test). A tool that writes into the
// directory by hand can still race it, as it can race any reader.
func (d *Driver) ReplaceFile(ctx context.Context, key string, data []byte, version string) (driver.Info, error) {
	if err := d.check(key, true); err != nil {
		return driver.Info{}, err
	}
	if err := d.mkdirAll(path.Dir(key)); err != nil {
		return driver.Info{}, fmt.Errorf("replace %s: %w", key, err)
	}
	dir, err := d.root.openDir(path.Dir(key))
	if err != nil {
		return driver.Info{}, fmt.Errorf("replace %s: %w", key, mapErr(err))
	}
	defer dir.Close() // and with it the lock
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return driver.Info{}, fmt.Errorf("replace %s: lock: %w", key, err)
	}
	cur, err := d.Stat(ctx, key)
	switch {
	case driver.IsNotFound(err) && version == "":
	case err != nil && !driver.IsNotFound(err):
		return driver.Info{}, err
	case err != nil || cur.Version != version:
		return driver.Info{}, fmt.Errorf("replace %s: %w", key, driver.ErrConflict)
	}
	return d.WriteFile(ctx, key, data)
}

func (d *Driver) Copy(ctx context.Context, src, dst string) error {
	if err := d.check(src, false); err != nil {
		return err
	}
	if err := d.check(dst, true); err != nil {
		return err
	}
	if _, err := d.Stat(ctx, src); err != nil {
		return err
	}
	return d.replace(dst, func(w io.Writer) error {
		in, _, err := d.Open(ctx, src)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(w, in)
		return err
	})
}

func (d *Driver) Move(ctx context.Context, src, dst string) error {
	if err := d.check(src, true); err != nil {
		return err
	}
	if err := d.check(dst, true); err != nil {
		return err
	}
	if _, err := d.Stat(ctx, src); err != nil {
		return err
	}
	if err := d.mkdirAll(path.Dir(dst)); err != nil {
		return fmt.Errorf("move %s: %w", src, err)
	}
	if err := d.root.rename(src, dst); err != nil {
		return fmt.Errorf("move %s to %s: %w", src, dst, mapErr(err))
	}
	if err := d.syncDir(path.Dir(dst)); err != nil {
		return err
	}
	return d.syncDir(path.Dir(src))
}

func (d *Driver) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := d.check(k, true); err != nil {
			return err
		}
	}
	dirs := map[string]bool{}
	var errs []error
	for _, k := range keys {
		st, err := d.root.stat(k)
		if err != nil {
			if !driver.IsNotFound(mapErr(err)) {
				errs = append(errs, fmt.Errorf("delete %s: %w", k, mapErr(err)))
			}
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			errs = append(errs, fmt.Errorf("delete %s: a directory, not an object", k))
			continue
		}
		if err := d.root.remove(k); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete %s: %w", k, mapErr(err)))
			continue
		}
		dirs[path.Dir(k)] = true
	}
	// One fsync per directory, however many names left it.
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		if err := d.syncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) Prune(ctx context.Context, dir string) error {
	if err := d.check(dir, true); err != nil {
		return err
	}
	st, err := d.root.stat(dir)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	if err := d.root.rmdir(dir); err != nil {
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("prune %s: %w", dir, mapErr(err))
	}
	return d.syncDir(path.Dir(dir))
}

// List lists a directory. Links are not listed: none is ever followed
// (see tree.go), so they name nothing.
func (d *Driver) List(ctx context.Context, dir string) ([]driver.Info, error) {
	if err := d.checkDir(dir, false); err != nil {
		return nil, err
	}
	name := dir
	if name == "" {
		name = "."
	}
	f, err := d.root.openDir(name)
	if err != nil {
		if err := mapErr(err); driver.IsNotFound(err) {
			return nil, nil
		} else {
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, mapErr(err))
	}
	dirfd := int(f.Fd())
	out := make([]driver.Info, 0, len(names))
	for _, n := range names {
		key := path.Join(dir, n)
		if key == d.tmpDir {
			continue // the driver's own, not the caller's
		}
		if !driver.ValidKey(key) {
			continue // a name no key can spell (a backslash, say): not ours
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // gone since the listing
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			out = append(out, driver.Info{Key: key, IsDir: true})
		case unix.S_IFREG:
			out = append(out, infoOf(key, &st))
		}
	}
	slices.SortFunc(out, func(a, b driver.Info) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Walk lists dir and each directory below it in turn (driver.WalkList).
func (d *Driver) Walk(ctx context.Context, dir string, fn func(driver.Info) error) error {
	return driver.WalkList(ctx, d.List, dir, fn)
}

// infoOf describes a file from its stat. It runs on every stat of the
// read path, so it builds its strings by hand.
func infoOf(key string, st *unix.Stat_t) driver.Info {
	mtime := time.Unix(st.Mtim.Unix())
	ctime := time.Unix(st.Ctim.Unix())
	info := driver.Info{Key: key, Size: st.Size, ModTime: mtime, Changed: ctime, Links: int(st.Nlink)}
	var buf [96]byte
	b := strconv.AppendUint(buf[:0], uint64(st.Dev), 16)
	b = append(b, ':')
	b = strconv.AppendUint(b, st.Ino, 16)
	info.ID = string(b)
	b = append(b, ':')
	b = strconv.AppendInt(b, st.Size, 16)
	sized := len(b)
	b = append(b, ':')
	b = strconv.AppendInt(b, ctime.UnixNano(), 16)
	info.Version = string(b)
	b = append(b[:sized], ':')
	b = strconv.AppendInt(b, mtime.UnixNano(), 16)
	info.Content = string(b)
	return info
}

// mapErr turns a filesystem error into the contract's kinds, keeping the
// original for the message.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ELOOP),
		errors.Is(err, syscall.EISDIR), errors.Is(err, errNotRegular):
		return fmt.Errorf("%w: %v", driver.ErrNotFound, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %v", driver.ErrNoSpace, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: %v", driver.ErrReadOnly, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %v", driver.ErrExists, err)
	}
	return err
}

// linkUnsupported reports whether a link(2) failure means "keep a copy"
// rather than a real error: another filesystem, too many links to the
// inode, or a filesystem without hard links (FAT on a USB stick).
func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EMLINK) ||
		errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP)
}

// readOnlyMount reports whether dir is on a filesystem mounted read-only.
func readOnlyMount(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Flags&unix.ST_RDONLY != 0
}

func existsDir(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}
