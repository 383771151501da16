package store

import (
	"os"
	"syscall"
	"time"
)

// changeTime is a file's ctime: when its inode last changed. Every way a
// blob enters a repository (rename of an upload, a hard link, a copy) sets
// it, and unlike the mtime a hard link to an old inode cannot carry an old
// ctime in, so it is the age garbage collection trusts. Anything else that
// touches the inode only makes the blob look younger, which only delays
// its collection.
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec))
	}
	return fi.ModTime()
}
