package local

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// lock takes the directory's process lock, <dir>/.pier/lock: one
// serving pier, or one offline `pier gc` or `pier scrub`, per directory,
// since the store's repository locks live in memory. The kernel releases
// it when the process dies.
func (d *Driver) lock() (unlock func(), err error) {
	if err := d.mkdirAll(".pier"); err != nil {
		return nil, fmt.Errorf("lock storage directory: %w", err)
	}
	f, _, err := d.root.openFile(".pier/lock", unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock storage directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrBusy, d.dir)
		}
		return nil, fmt.Errorf("lock storage directory: %w", err)
	}
	return func() { f.Close() }, nil
}
