package keylock

import (
	"sync"
	"testing"
	"time"
)

// A writer excludes readers and writers of its key, not of other keys,
// and the table forgets a key once nobody uses it.
func TestLocksAreByKeyAndForgotten(t *testing.T) {
	var m Map
	unlock := m.Lock("a")
	other := make(chan struct{})
	go func() { m.Lock("b")(); close(other) }()
	select {
	case <-other:
	case <-time.After(5 * time.Second):
		t.Fatal("a lock on a blocked another key")
	}
	read := make(chan struct{})
	go func() { m.RLock("a")(); close(read) }()
	for m.Users("a") != 2 {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-read:
		t.Fatal("a reader got in past a writer")
	default:
	}
	unlock()
	<-read
	if n := m.Users("a"); n != 0 {
		t.Fatalf("%d users of a released key", n)
	}
	if len(m.locks) != 0 {
		t.Fatalf("table keeps %d unused keys", len(m.locks))
	}
}

// Readers share a key.
func TestReadersShare(t *testing.T) {
	var m Map
	var wg sync.WaitGroup
	unlock := m.RLock("a")
	wg.Add(1)
	go func() { defer wg.Done(); m.RLock("a")() }()
	wg.Wait()
	unlock()
}
