package local

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/pier-oci/pier/store/driver"
	"golang.org/x/sys/unix"
)

// The optional abilities of the contract (driver.Linker, Syncer, Toucher,
// Spacer) that a local directory has.

// Link makes dst a hard link to src through a temporary link renamed into
// place, so dst never stops naming a complete file. src must be a regular
// file (a link is never linked: see tree.go).
func (d *Driver) Link(ctx context.Context, src, dst string) error {
	if err := d.check(src, true); err != nil {
		return err
	}
	if err := d.check(dst, true); err != nil {
		return err
	}
	// The new name shares src's inode, whose bytes a layout copied in by
	// another tool (or a push acknowledged without commit) may still hold
	// only in the page cache: make them durable before dst is.
	f, _, err := d.root.openRegular(src)
	if err != nil {
		return fmt.Errorf("link %s to %s: %w", dst, src, mapErr(err))
	}
	err = d.syncFile(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("link %s to %s: %w", dst, src, err)
	}
	if err := d.mkdirAll(path.Dir(dst)); err != nil {
		return fmt.Errorf("link %s: %w", dst, err)
	}
	tmp := d.tempKey(dst, ".link-")
	err = d.root.link(src, tmp)
	if errors.Is(err, unix.EXDEV) && path.Dir(tmp) != path.Dir(dst) {
		tmp = besideKey(dst, ".link-") // a bind mount of the same filesystem
		err = d.root.link(src, tmp)
	}
	if err != nil {
		if linkUnsupported(err) {
			return fmt.Errorf("link %s to %s: %w: %v", dst, src, driver.ErrUnsupported, err)
		}
		return fmt.Errorf("link %s to %s: %w", dst, src, mapErr(err))
	}
	if err := d.root.rename(tmp, dst); err != nil {
		d.root.remove(tmp)
		return fmt.Errorf("link %s: %w", dst, mapErr(err))
	}
	return d.syncDir(path.Dir(dst))
}

// Sync fsyncs the file at key and its directory.
func (d *Driver) Sync(ctx context.Context, key string) error {
	if err := d.check(key, true); err != nil {
		return err
	}
	f, _, err := d.root.openRegular(key)
	if err != nil {
		return fmt.Errorf("sync %s: %w", key, mapErr(err))
	}
	err = d.syncFile(f)
	f.Close()
	if err != nil {
		return err
	}
	return d.syncDir(path.Dir(key))
}

// Touch sets the file's times to now, which also moves its ctime (the
// Changed time garbage collection ages from).
func (d *Driver) Touch(ctx context.Context, key string) error {
	if err := d.check(key, true); err != nil {
		return err
	}
	if _, err := d.Stat(ctx, key); err != nil {
		return err
	}
	if err := d.root.touch(key); err != nil {
		return fmt.Errorf("touch %s: %w", key, mapErr(err))
	}
	return nil
}

// Check reports whether the directory's path still leads to the
// directory the driver holds open. Renamed away, deleted, or mounted over
// (a USB stick plugged in at the root's path), it does not: pier would go
// on serving and writing a directory nobody sees.
func (d *Driver) Check(ctx context.Context) error {
	var held, named unix.Stat_t
	if err := unix.Fstat(d.root.fd, &held); err != nil {
		return fmt.Errorf("storage directory %s: %w", d.dir, err)
	}
	if err := unix.Stat(d.dir, &named); err != nil {
		return fmt.Errorf("storage directory %s is gone: %w", d.dir, err)
	}
	if held.Dev != named.Dev || held.Ino != named.Ino {
		return fmt.Errorf("storage directory %s was replaced (renamed, or mounted over) since pier opened it", d.dir)
	}
	return nil
}

// Space reports the free and total bytes of the directory's filesystem.
func (d *Driver) Space() (free, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", d.dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}
