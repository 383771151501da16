package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"

	"github.com/pier-oci/pier/store/driver"
	"golang.org/x/sys/unix"
)

// An upload is a file that grows by appends; commit renames it into place.

// Create starts an empty upload file at key.
func (d *Driver) Create(ctx context.Context, key string) (driver.Writer, error) {
	if err := d.check(key, true); err != nil {
		return nil, err
	}
	if err := d.mkdirAll(path.Dir(key)); err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	f, _, err := d.root.openFile(key, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", key, mapErr(err))
	}
	return &writer{d: d, key: key, f: f}, nil
}

// Append reopens the upload file at key.
func (d *Driver) Append(ctx context.Context, key string) (driver.Writer, error) {
	if err := d.check(key, true); err != nil {
		return nil, err
	}
	f, st, err := d.root.openFile(key, unix.O_WRONLY|unix.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("append to %s: %w", key, mapErr(err))
	}
	return &writer{d: d, key: key, f: f, start: st.Size, size: st.Size}, nil
}

type writer struct {
	d     *Driver
	key   string
	f     *os.File
	start int64 // the size when opened: what Abort returns to
	size  int64
	done  bool
}

// Write appends p. A short write (a full disk) is cut back to the size
// before it, so the file never holds bytes the writer did not count.
func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write to a closed upload")
	}
	n, err := w.f.Write(p)
	if err != nil {
		if n > 0 {
			if terr := w.f.Truncate(w.size); terr == nil {
				n = 0
			}
		}
		w.size += int64(n)
		return n, fmt.Errorf("write %s: %w", w.key, mapErr(err))
	}
	w.size += int64(n)
	return n, nil
}

func (w *writer) Size() int64 { return w.size }

func (w *writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", w.key, mapErr(err))
	}
	return nil
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	err := w.f.Truncate(w.start)
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("abort %s: %w", w.key, mapErr(err))
	}
	return nil
}

// Commit fsyncs the file and renames it to dst, then fsyncs dst's
// directory: two fsyncs, the least a durable new name costs.
func (w *writer) Commit(ctx context.Context, dst string) error {
	if w.done {
		return errors.New("commit of a closed upload")
	}
	d := w.d
	if err := d.check(dst, true); err != nil {
		return err
	}
	w.done = true
	if err := d.syncFile(w.f); err != nil {
		// A failed fsync may have dropped the dirty pages it could not
		// write, and marked them clean: a retry through a new descriptor
		// would succeed over lost bytes (PostgreSQL's "fsyncgate"). The
		// upload is no longer to be trusted; the client sends it again.
		w.f.Close()
		w.d.root.remove(w.key)
		return fmt.Errorf("commit %s: %w (the upload is dropped)", w.key, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", w.key, mapErr(err))
	}
	if err := d.mkdirAll(path.Dir(dst)); err != nil {
		return fmt.Errorf("commit %s: %w", w.key, err)
	}
	if err := d.root.rename(w.key, dst); err != nil {
		return fmt.Errorf("commit %s to %s: %w", w.key, dst, mapErr(err))
	}
	return d.syncDir(path.Dir(dst))
}

func (w *writer) Cancel(ctx context.Context) error {
	if !w.done {
		w.done = true
		w.f.Close()
	}
	if err := w.d.root.remove(w.key); err != nil {
		if err := mapErr(err); !driver.IsNotFound(err) {
			return fmt.Errorf("cancel %s: %w", w.key, err)
		}
	}
	return nil
}
