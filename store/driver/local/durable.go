package local

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// The durability protocol, implemented once: content reaches a final name
// only by rename of a complete, fsynced temporary file, and the directory
// holding the name is fsynced after. A temporary file lives in the
// driver's TempDir (or, without one, beside its target as a dot file) so
// that the rename stays on one filesystem.

// syncFile fsyncs f when durability is on.
func (d *Driver) syncFile(f *os.File) error {
	if !d.sync || skipSync {
		return nil
	}
	d.syncs.Add(1)
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.Name(), mapErr(err))
	}
	return nil
}

// syncDir fsyncs the directory dir (a key, "." or "" for the root) so that
// the names created, renamed or removed in it survive a power cut.
func (d *Driver) syncDir(dir string) error {
	if !d.sync || skipSync {
		return nil
	}
	if dir == "" {
		dir = "."
	}
	f, err := d.root.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s for fsync: %w", dir, mapErr(err))
	}
	defer f.Close()
	d.syncs.Add(1)
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, mapErr(err))
	}
	return nil
}

// mkdirAll creates the directory dir (a key) and its missing parents, each
// made durable by an fsync of its parent. Directories that exist are not
// touched, but one created concurrently by another goroutine is synced
// again: its creator may not have made it durable yet.
func (d *Driver) mkdirAll(dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	if fi, err := d.root.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("mkdir %s: %w (a file is in the way)", dir, mapErr(syscall.ENOTDIR))
		}
		return nil
	}
	if err := d.mkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	if err := d.root.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("mkdir %s: %w", dir, mapErr(err))
	}
	return d.syncDir(path.Dir(dir))
}

// mkdirAllOS is mkdirAll for the driver's own directory, before the root
// is open.
func (d *Driver) mkdirAllOS(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := d.mkdirAllOS(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if d.sync && !skipSync {
		if f, err := os.Open(parent); err == nil {
			d.syncs.Add(1)
			f.Sync()
			f.Close()
		}
	}
	return nil
}

// tempName is a fresh random name with the given prefix.
func tempName(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return prefix + hex.EncodeToString(b[:])
}

// tempKey is a new temporary key for content bound for target: in the
// temporary directory when that is on target's filesystem (a rename or a
// link cannot cross filesystems, and a layout may be a mount of its own
// inside the root), else beside target.
func (d *Driver) tempKey(target, prefix string) string {
	if d.tmpDir != "" && d.sameDevice(path.Dir(target)) {
		return path.Join(d.tmpDir, tempName(prefix))
	}
	return path.Join(path.Dir(target), tempName(prefix))
}

// sameDevice reports whether the directory dir (which exists) is on the
// temporary directory's filesystem.
func (d *Driver) sameDevice(dir string) bool {
	if dir == "" {
		dir = "."
	}
	fi, err := d.root.Stat(dir)
	if err != nil {
		return true // the operation itself will say what is wrong
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || uint64(st.Dev) == d.tmpDev
}

// createTemp creates a new empty temporary file for target, readable by
// other tools that share the layout (0644), and returns it with its key.
// A temporary directory on another filesystem than target (a layout
// mounted into the root) is given up for the target's own directory.
func (d *Driver) createTemp(target, prefix string) (*os.File, string, error) {
	key := d.tempKey(target, prefix)
	f, err := d.root.OpenFile(key, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, "", fmt.Errorf("create temporary file for %s: %w", target, mapErr(err))
	}
	return f, key, nil
}

// replace writes target atomically (and durably) from produce.
func (d *Driver) replace(target string, produce func(io.Writer) error) error {
	if err := d.mkdirAll(path.Dir(target)); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := d.replaceVia(d.tempKey(target, ".tmp-"), target, produce); err != nil {
		return fmt.Errorf("write %s: %w", target, mapErr(err))
	}
	return nil
}

func (d *Driver) replaceVia(tmpKey, target string, produce func(io.Writer) error) error {
	f, err := d.root.OpenFile(tmpKey, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			d.root.Remove(tmpKey)
		}
	}()
	if err := produce(f); err != nil {
		return err
	}
	if err := d.syncFile(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := d.root.Rename(tmpKey, target); err != nil {
		return err
	}
	committed = true
	return d.syncDir(path.Dir(target))
}

// resetTemp empties the temporary directory (what is there a crash left)
// and makes sure it exists.
func (d *Driver) resetTemp() error {
	if err := d.root.RemoveAll(d.tmpDir); err != nil {
		return fmt.Errorf("clear %s: %w", d.tmpDir, mapErr(err))
	}
	if err := d.mkdirAll(d.tmpDir); err != nil {
		return fmt.Errorf("create %s: %w", d.tmpDir, err)
	}
	fi, err := d.root.Stat(d.tmpDir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", d.tmpDir, mapErr(err))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		d.tmpDev = uint64(st.Dev)
	}
	return nil
}
