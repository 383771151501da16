package local

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// tree is the driver's directory, held open, and every file operation
// below it. A key is resolved component by component without following
// any symbolic link: not at its end, not in its middle, not one that stays
// inside the directory. A layout copied from elsewhere (a USB stick) may
// bring links; through them it could make pier serve, link, or delete
// files that are not its own (another repository's blobs, the cache, a
// TLS key), so none is ever followed. Nothing is opened that could block
// (a named pipe), and only regular files are read.
//
// Linux's openat2 (5.6) with RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS does
// the resolution in one call; older kernels get a walk with O_NOFOLLOW
// (keys never hold "..", so a walk cannot climb out either).
type tree struct {
	fd      int // the directory, O_PATH
	dir     string
	openat2 bool
}

func openTree(dir string) (*tree, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	t := &tree{fd: fd, dir: dir, openat2: true}
	if probe, err := t.resolve2(".", unix.O_PATH|unix.O_DIRECTORY, 0); err == nil {
		unix.Close(probe)
	} else if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.openat2 = false // an old kernel, or a seccomp filter that refuses it
	}
	return t, nil
}

func (t *tree) close() error { return unix.Close(t.fd) }

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func (t *tree) resolve2(key string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolveFlags}
	for {
		fd, err := unix.Openat2(t.fd, key, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a rename raced the resolution, or a signal: try again
		}
		return fd, err
	}
}

// open resolves key below the tree and opens it with flags.
func (t *tree) open(key string, flags int, mode uint32) (int, error) {
	if t.openat2 {
		fd, err := t.resolve2(key, flags, mode)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: key, Err: err}
		}
		return fd, nil
	}
	dirfd, base, done, err := t.walkParent(key)
	if err != nil {
		return -1, err
	}
	defer done()
	fd, err := unix.Openat(dirfd, base, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: key, Err: err}
	}
	return fd, nil
}

// walkParent opens key's directory by walking from the tree with
// O_NOFOLLOW, for kernels without openat2.
func (t *tree) walkParent(key string) (dirfd int, base string, done func(), err error) {
	dir, base := path.Split(key)
	fd := t.fd
	done = func() {}
	for c := range strings.SplitSeq(strings.TrimSuffix(dir, "/"), "/") {
		if c == "" {
			continue
		}
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		done()
		if err != nil {
			return -1, "", nil, &os.PathError{Op: "open", Path: key, Err: err}
		}
		fd = next
		done = func() { unix.Close(next) }
	}
	return fd, base, done, nil
}

// parent opens key's directory (the tree itself for a key of one
// component) and returns it with key's last component.
func (t *tree) parent(key string) (dirfd int, base string, done func(), err error) {
	dir, base := path.Split(key)
	if dir == "" {
		return t.fd, base, func() {}, nil
	}
	if !t.openat2 {
		return t.walkParent(key)
	}
	fd, err := t.open(strings.TrimSuffix(dir, "/"), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", nil, err
	}
	return fd, base, func() { unix.Close(fd) }, nil
}

// stat describes key itself (a link is a link, not what it points at).
func (t *tree) stat(key string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if key == "." {
		return st, unix.Fstat(t.fd, &st)
	}
	dirfd, base, done, err := t.parent(key)
	if err != nil {
		return st, err
	}
	defer done()
	if err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "stat", Path: key, Err: err}
	}
	return st, nil
}

// openRegular opens the regular file at key for reading: without waiting
// on a named pipe, and not anything else.
func (t *tree) openRegular(key string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := t.open(key, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, st, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "stat", Path: key, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "open", Path: key, Err: errNotRegular}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "open", Path: key, Err: err}
	}
	return os.NewFile(uintptr(fd), path.Join(t.dir, key)), st, nil
}

// errNotRegular: something other than a regular file where one is read.
var errNotRegular = errors.New("not a regular file")

// openFile opens key with flags for writing (never a pipe: O_NONBLOCK
// makes an open of one fail rather than wait) and checks it is a regular
// file.
func (t *tree) openFile(key string, flags int, mode uint32) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := t.open(key, flags|unix.O_NONBLOCK, mode)
	if err != nil {
		return nil, st, err
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = errNotRegular
		}
		return nil, st, &os.PathError{Op: "open", Path: key, Err: err}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "open", Path: key, Err: err}
	}
	return os.NewFile(uintptr(fd), path.Join(t.dir, key)), st, nil
}

// openDir opens the directory at key ("." for the tree) for listing.
func (t *tree) openDir(key string) (*os.File, error) {
	fd, err := t.open(key, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Join(t.dir, key)), nil
}

// at runs op on key's directory and last component.
func (t *tree) at(opName, key string, op func(dirfd int, base string) error) error {
	dirfd, base, done, err := t.parent(key)
	if err != nil {
		return err
	}
	defer done()
	if err := op(dirfd, base); err != nil {
		return &os.PathError{Op: opName, Path: key, Err: err}
	}
	return nil
}

func (t *tree) mkdir(key string, mode uint32) error {
	return t.at("mkdir", key, func(dirfd int, base string) error { return unix.Mkdirat(dirfd, base, mode) })
}

// remove unlinks the file (or link) at key; never a directory.
func (t *tree) remove(key string) error {
	return t.at("remove", key, func(dirfd int, base string) error { return unix.Unlinkat(dirfd, base, 0) })
}

// rmdir removes the empty directory at key.
func (t *tree) rmdir(key string) error {
	return t.at("rmdir", key, func(dirfd int, base string) error { return unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR) })
}

// at2 runs op on the directories and last components of two keys.
func (t *tree) at2(opName, from, to string, op func(fromfd int, fromBase string, tofd int, toBase string) error) error {
	fromfd, fromBase, doneFrom, err := t.parent(from)
	if err != nil {
		return err
	}
	defer doneFrom()
	tofd, toBase, doneTo, err := t.parent(to)
	if err != nil {
		return err
	}
	defer doneTo()
	if err := op(fromfd, fromBase, tofd, toBase); err != nil {
		return &os.LinkError{Op: opName, Old: from, New: to, Err: err}
	}
	return nil
}

// rename moves from to to; a link at from is moved as a link, never
// followed.
func (t *tree) rename(from, to string) error { return t.at2("rename", from, to, unix.Renameat) }

// link makes to a new name of the file at from (a link at from is not
// followed: linkat without AT_SYMLINK_FOLLOW).
func (t *tree) link(from, to string) error {
	return t.at2("link", from, to, func(fromfd int, fromBase string, tofd int, toBase string) error {
		return unix.Linkat(fromfd, fromBase, tofd, toBase, 0)
	})
}

// touch sets key's times to now, without following a link.
func (t *tree) touch(key string) error {
	return t.at("touch", key, func(dirfd int, base string) error {
		now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		return unix.UtimesNanoAt(dirfd, base, now, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// clearDir removes every file directly in the directory at key (the
// temporary directory: it holds no subdirectories).
func (t *tree) clearDir(key string) error {
	d, err := t.openDir(key)
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := t.remove(path.Join(key, n)); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("clear %s: %w", key, err)
		}
	}
	return nil
}
