package store

import (
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// errNotRegular is a path that is something other than a regular file: to
// pier, nothing it could serve is there.
var errNotRegular = fmt.Errorf("%w: not a regular file", fs.ErrNotExist)

// openRegular opens a file under the root for reading, refusing anything
// but a regular file. The open does not block: a named pipe left in a
// layout (at a blob's path, or as index.json) would otherwise hang the
// request, the scrub or the dedupe walk that opens it until something
// writes to the pipe. O_NONBLOCK changes nothing for a regular file.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: path, Err: errNotRegular}
	}
	return f, nil
}
