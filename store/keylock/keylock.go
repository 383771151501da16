// Package keylock hands out one lock per key (a repository, a file),
// created on first use and dropped when nobody holds or waits for it, so a
// table stays as small as the set of keys in use right now.
package keylock

import "sync"

// Map is a set of read-write locks by key. The zero Map is ready to use.
type Map struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	sync.RWMutex
	refs int // holders and waiters
}

// Lock takes key's write lock and returns its unlock function.
func (m *Map) Lock(key string) (unlock func()) {
	e := m.acquire(key)
	e.Lock()
	return func() {
		e.Unlock()
		m.release(key, e)
	}
}

// RLock takes key's read lock and returns its unlock function.
func (m *Map) RLock(key string) (unlock func()) {
	e := m.acquire(key)
	e.RLock()
	return func() {
		e.RUnlock()
		m.release(key, e)
	}
}

// Users reports how many hold or wait for key's lock.
func (m *Map) Users(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.locks[key]; e != nil {
		return e.refs
	}
	return 0
}

func (m *Map) acquire(key string) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks == nil {
		m.locks = map[string]*entry{}
	}
	e := m.locks[key]
	if e == nil {
		e = &entry{}
		m.locks[key] = e
	}
	e.refs++
	return e
}

func (m *Map) release(key string, e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(m.locks, key)
	}
}
