package local

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes the directory's process lock, <dir>/.pier/lock: one
// serving pier, or one offline `pier gc` or `pier scrub`, per directory,
// since the store's repository locks live in memory. The kernel releases
// it when the process dies.
func lockDir(root *os.Root, dir string) (unlock func(), err error) {
	if err := root.MkdirAll(".pier", 0o755); err != nil {
		return nil, fmt.Errorf("lock storage directory: %w", err)
	}
	f, err := root.OpenFile(".pier/lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock storage directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrBusy, dir)
		}
		return nil, fmt.Errorf("lock storage directory: %w", err)
	}
	return func() { f.Close() }, nil
}
