package store

import "sync"

// repoLocks hands out one RWMutex per repository, created on first use and
// dropped when nobody holds or waits for it, so the table stays as small as
// the set of repositories being written right now.
//
// Writers of index.json (manifest and tag changes, deletes, GC) take the
// write lock; blob commits take the read lock so that many layers of one
// image land in parallel while GC cannot decide in the middle of them.
type repoLocks struct {
	mu    sync.Mutex
	locks map[string]*repoLock
}

type repoLock struct {
	sync.RWMutex
	refs int
}

func newRepoLocks() *repoLocks { return &repoLocks{locks: map[string]*repoLock{}} }

func (l *repoLocks) acquire(repo string) *repoLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	rl, ok := l.locks[repo]
	if !ok {
		rl = &repoLock{}
		l.locks[repo] = rl
	}
	rl.refs++
	return rl
}

func (l *repoLocks) release(repo string, rl *repoLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rl.refs--
	if rl.refs == 0 {
		delete(l.locks, repo)
	}
}

// lock takes repo's write lock and returns its unlock function.
func (l *repoLocks) lock(repo string) (unlock func()) {
	rl := l.acquire(repo)
	rl.Lock()
	return func() {
		rl.Unlock()
		l.release(repo, rl)
	}
}

// rlock takes repo's read lock and returns its unlock function.
func (l *repoLocks) rlock(repo string) (unlock func()) {
	rl := l.acquire(repo)
	rl.RLock()
	return func() {
		rl.RUnlock()
		l.release(repo, rl)
	}
}
