package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrRootBusy means another pier process holds the root.
var ErrRootBusy = errors.New("another pier process is using this storage root")

// LockRoot takes the root's process lock (<root>/.pier/lock): one serving
// pier, or one offline `pier gc`/`pier scrub`, per root, since their
// repository locks live in memory. The lock is released by the returned
// function, or by the kernel when the process dies.
func LockRoot(root string) (unlock func(), err error) {
	dir := filepath.Join(root, ".pier")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock storage root: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock storage root: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrRootBusy, root)
		}
		return nil, fmt.Errorf("lock storage root: %w", err)
	}
	return func() { f.Close() }, nil
}
