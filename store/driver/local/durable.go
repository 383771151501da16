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

	"golang.org/x/sys/unix"
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
	if err := d.fsync(f); err != nil {
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
	f, err := d.root.openDir(dir)
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
// made durable by an fsync of its parent before anything is put in it. A
// directory another goroutine is creating right now is waited for: found
// by a stat, it may not be durable yet.
func (d *Driver) mkdirAll(dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	if st, err := d.root.stat(dir); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("mkdir %s: %w (a file is in the way)", dir, mapErr(unix.ENOTDIR))
		}
		d.creating.Lock(dir)() // its creator, if any, has synced it
		return nil
	}
	if err := d.mkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	unlock := d.creating.Lock(dir)
	defer unlock()
	if err := d.root.mkdir(dir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
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
// temporary directory when that is on target's filesystem, else beside
// target (a rename or a link cannot cross filesystems, and a layout may
// be a mount of its own inside the root).
func (d *Driver) tempKey(target, prefix string) string {
	if d.tmpDir != "" && d.sameDevice(path.Dir(target)) {
		return path.Join(d.tmpDir, tempName(prefix))
	}
	return besideKey(target, prefix)
}

// besideKey is a temporary key in target's own directory: a dot file no
// OCI tool takes for a blob or a repository.
func besideKey(target, prefix string) string { return path.Join(path.Dir(target), tempName(prefix)) }

// sameDevice reports whether the directory dir (which exists) is on the
// temporary directory's filesystem.
func (d *Driver) sameDevice(dir string) bool {
	if dir == "" {
		dir = "."
	}
	st, err := d.root.stat(dir)
	return err != nil || uint64(st.Dev) == d.tmpDev // an error: the operation itself will say
}

// replace writes target atomically (and durably) from produce, which may
// be called a second time: a bind mount of the same filesystem into the
// root has the temporary directory's device but refuses a rename from it
// (EXDEV), and the content is then written beside target instead.
func (d *Driver) replace(target string, produce func(io.Writer) error) error {
	if err := d.mkdirAll(path.Dir(target)); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	tmp := d.tempKey(target, ".tmp-")
	err := d.replaceVia(tmp, target, produce)
	if errors.Is(err, unix.EXDEV) && path.Dir(tmp) != path.Dir(target) {
		err = d.replaceVia(besideKey(target, ".tmp-"), target, produce)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", target, mapErr(err))
	}
	return nil
}

func (d *Driver) replaceVia(tmpKey, target string, produce func(io.Writer) error) error {
	f, _, err := d.root.openFile(tmpKey, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			d.root.remove(tmpKey)
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
	if err := d.root.rename(tmpKey, target); err != nil {
		return err
	}
	committed = true
	return d.syncDir(path.Dir(target))
}

// resetTemp makes sure the temporary directory exists and, when this
// driver holds the directory's lock (no other writer can be using it),
// empties it of what a crash left.
func (d *Driver) resetTemp(locked bool) error {
	if err := d.mkdirAll(d.tmpDir); err != nil {
		return fmt.Errorf("create %s: %w", d.tmpDir, err)
	}
	if locked {
		if err := d.root.clearDir(d.tmpDir); err != nil {
			return fmt.Errorf("clear %s: %w", d.tmpDir, mapErr(err))
		}
	}
	st, err := d.root.stat(d.tmpDir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", d.tmpDir, mapErr(err))
	}
	d.tmpDev = uint64(st.Dev)
	return nil
}
