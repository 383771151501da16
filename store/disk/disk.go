// Package disk holds the file primitives the store is built on: writing a
// file so that readers never see it torn, making a rename survive a power
// cut, and creating directories durably.
//
// The protocol is always the same: write to a temporary name on the same
// filesystem, fsync the file, rename it over the final name, fsync the
// directory that holds the final name. Without the last fsync ext4 may lose
// the rename itself after a power cut, even though the data is on the disk.
// When durability is off (zot's commit: false) the fsyncs are skipped but the
// rename still makes every replacement atomic.
package disk

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// FS performs durable (or merely atomic) file operations below one root.
// It is safe for concurrent use.
type FS struct {
	// Sync makes every write fsync the file and its directory before it
	// returns (zot's `commit` key).
	Sync bool

	syncs atomic.Int64 // fsync calls made, for tests and benchmarks
}

// Syncs reports how many fsync calls this FS has made.
func (f *FS) Syncs() int64 { return f.syncs.Load() }

// TempName returns a fresh random file name with the given prefix, for
// temporary files that will be renamed into place.
func TempName(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return prefix + hex.EncodeToString(b[:])
}

// CreateTemp creates a new empty file with a random name in dir, readable
// by other tools that share the layout (0644, unlike os.CreateTemp).
func (f *FS) CreateTemp(dir string) (*os.File, error) {
	file, err := os.OpenFile(filepath.Join(dir, TempName(".tmp-")), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create temp: %w", err)
	}
	return file, nil
}

// SyncFile fsyncs f when durability is on.
func (f *FS) SyncFile(file *os.File) error {
	if !f.Sync || skipSync {
		return nil
	}
	f.syncs.Add(1)
	if err := file.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", file.Name(), err)
	}
	return nil
}

// SyncDir fsyncs a directory so that the entries created or renamed in it
// survive a power cut.
func (f *FS) SyncDir(dir string) error {
	if !f.Sync || skipSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	defer d.Close()
	f.syncs.Add(1)
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// WriteFile replaces path with data atomically: a reader sees the old
// content or the new, never a mix. The temporary file is created in tmpDir,
// which must be on the same filesystem as path.
func (f *FS) WriteFile(path, tmpDir string, data []byte) error {
	return f.WriteFrom(path, tmpDir, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFrom is WriteFile for content produced by a function.
func (f *FS) WriteFrom(path, tmpDir string, produce func(io.Writer) error) error {
	tmp, err := f.CreateTemp(tmpDir)
	if err != nil {
		return fmt.Errorf("create temp for %s: %w", path, err)
	}
	tmpPath := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmpPath)
		}
	}()
	if err := produce(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.SyncFile(tmp); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpPath, err)
	}
	if err := f.Rename(tmpPath, path); err != nil {
		return err
	}
	committed = true
	return nil
}

// Rename moves oldPath to newPath and makes the new name durable. The file
// itself must already be synced by the caller when durability matters.
func (f *FS) Rename(oldPath, newPath string) error {
	if err := os.Rename(oldPath, newPath); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return f.SyncDir(filepath.Dir(newPath))
}

// MkdirAll creates dir and any missing parents, and makes each new entry
// durable by fsyncing the directory that holds it. Directories that already
// exist are not touched.
func (f *FS) MkdirAll(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := f.MkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Created concurrently: its creator may not have made the
			// entry durable yet, and the caller is about to rely on it.
			return f.SyncDir(parent)
		}
		return fmt.Errorf("mkdir: %w", err)
	}
	return f.SyncDir(parent)
}

// ErrLinkUnsupported means a hard link cannot be made here: the paths are
// on different filesystems, the inode has too many links, or the
// filesystem has no hard links (FAT on a USB stick).
var ErrLinkUnsupported = errors.New("hard link not possible")

// Link makes newPath a hard link to oldPath without ever removing an
// existing newPath first: it links to a temporary name in tmpDir (on the
// same filesystem) and renames that over newPath, so newPath always names
// a complete file.
func (f *FS) Link(oldPath, newPath, tmpDir string) error {
	tmp := filepath.Join(tmpDir, TempName(".link-"))
	if err := os.Link(oldPath, tmp); err != nil {
		if linkUnsupported(err) {
			return fmt.Errorf("%w: %v", ErrLinkUnsupported, err)
		}
		return fmt.Errorf("link %s: %w", oldPath, err)
	}
	if err := f.Rename(tmp, newPath); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Copy replaces dst with a copy of src, atomically, through a temporary
// file in tmpDir.
func (f *FS) Copy(src, dst, tmpDir string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	return f.WriteFrom(dst, tmpDir, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// SyncDisabled reports a test build (pier_nosync) that never fsyncs.
func SyncDisabled() bool { return skipSync }

// ReadOnlyFS reports whether dir is on a filesystem mounted read-only.
func ReadOnlyFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Flags&unix.ST_RDONLY != 0
}
