package auth

import (
	"os"
	"sync"
	"syscall"
	"time"
)

// checkEvery bounds how often a file in use is stat'ed for changes: at
// most once a second, however many requests read it.
const checkEvery = time.Second

// stamp is what tells one version of a file from the next without reading
// it: which inode the path names (a rename over it is a new one), its size,
// and its modification and change times.
type stamp struct {
	dev, ino   uint64
	size       int64
	mtime, ctm int64
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path) // follows symlinks: a Kubernetes-style swap is seen
	if err != nil {
		return stamp{}, err
	}
	st := stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
		st.ctm = sys.Ctim.Nano()
	}
	return st, nil
}

// reloader keeps a value parsed from files current: get stats the files at
// most once per checkEvery and parses them again when any changed. A
// failed parse keeps the last good value (a half-edited file must not lock
// everyone out) and is reported once per change through onError.
type reloader[T any] struct {
	paths   []string
	parse   func() (T, error)
	onError func(error)
	now     func() time.Time

	mu      sync.Mutex
	val     T
	stamps  []stamp
	checked time.Time
}

// newReloader parses the files once; an error here is an error of the
// configuration.
func newReloader[T any](parse func() (T, error), onError func(error), paths ...string) (*reloader[T], error) {
	r := &reloader[T]{paths: paths, parse: parse, onError: onError, now: time.Now}
	stamps, _ := r.stampAll()
	v, err := parse()
	if err != nil {
		return nil, err
	}
	r.val, r.stamps, r.checked = v, stamps, r.now()
	return r, nil
}

func (r *reloader[T]) stampAll() ([]stamp, error) {
	out := make([]stamp, len(r.paths))
	for i, p := range r.paths {
		st, err := stampOf(p)
		if err != nil {
			return nil, err
		}
		out[i] = st
	}
	return out, nil
}

func sameStamps(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// get returns the current value, re-parsed if the files changed.
func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < checkEvery {
		return r.val
	}
	r.checked = now
	stamps, err := r.stampAll()
	if err == nil && sameStamps(stamps, r.stamps) {
		return r.val
	}
	if err == nil {
		var v T
		if v, err = r.parse(); err == nil {
			r.val, r.stamps = v, stamps
			return r.val
		}
	}
	if !sameStamps(stamps, r.stamps) {
		r.onError(err)
	}
	r.stamps = stamps // report this version's problem once
	return r.val
}
