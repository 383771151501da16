package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"

	"github.com/pier-oci/pier/store/driver"
)

// Notify watches the directory tree with inotify and reports every object
// or directory created, written or renamed into place, except below dot
// directories (uploads, pier's own state). It returns ErrUnsupported when
// the kernel cannot watch the tree (another kind of filesystem, or the
// inotify watch limit), so the caller falls back to rescans.
func (d *Driver) Notify(ctx context.Context, changed func(key string, isDir bool)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("%w: %v", driver.ErrUnsupported, err)
	}
	defer w.Close()
	if err := d.watchTree(w, d.dir); err != nil {
		return fmt.Errorf("%w: watch %s: %v", driver.ErrUnsupported, d.dir, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost: say the whole root changed.
				changed("", true)
			}
		case ev := <-w.Events:
			if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Rename) == 0 || ev.Op&fsnotify.Remove != 0 {
				continue
			}
			rel, err := filepath.Rel(d.dir, ev.Name)
			if err != nil || !driver.ValidKey(filepath.ToSlash(rel)) || hidden(rel) {
				continue
			}
			key := filepath.ToSlash(rel)
			fi, err := os.Lstat(ev.Name)
			if err != nil {
				continue
			}
			if fi.IsDir() {
				if ev.Op&fsnotify.Create != 0 {
					d.watchTree(w, ev.Name) // files may land before the watch: the caller looks at it all
				}
				changed(key, true)
				continue
			}
			changed(key, false)
		}
	}
}

// watchTree watches dir and every directory below it but dot directories.
func (d *Driver) watchTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !e.IsDir() {
			return nil
		}
		if p != d.dir && strings.HasPrefix(e.Name(), ".") {
			return filepath.SkipDir
		}
		return w.Add(p)
	})
}

// hidden reports whether a relative path has a dot component.
func hidden(rel string) bool {
	for _, c := range strings.Split(filepath.ToSlash(rel), "/") {
		if strings.HasPrefix(c, ".") {
			return true
		}
	}
	return false
}
