package disk

import (
	"errors"

	"golang.org/x/sys/unix"
)

// linkUnsupported reports whether a link(2) failure means "use a copy"
// rather than a real error: another filesystem, too many links to the
// inode, or a filesystem without hard links (FAT on a USB stick).
func linkUnsupported(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EMLINK) ||
		errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP)
}
