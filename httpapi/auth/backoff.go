package auth

import (
	"sync"
	"time"
)

// backoff slows down a client that keeps failing to log in, so that
// guessing passwords gets nowhere whether the guesses come one after the
// other or on many connections at once: after freeFailures failures in a
// row, each further failure bars the client for twice as long as the last
// (1s, 2s, 4s, ... up to maxBar), during which its logins are refused
// unchecked. A success clears the count; so do forgetAfter without failing.
type backoff struct {
	now func() time.Time

	mu      sync.Mutex
	clients map[string]*failures
}

type failures struct {
	n     int
	until time.Time // barred until then
	last  time.Time
}

const (
	freeFailures = 3
	maxBar       = 5 * time.Minute
	forgetAfter  = 15 * time.Minute
	// maxBackoffClients bounds the memory a flood from many addresses
	// can take.
	maxBackoffClients = 4096
)

func newBackoff(now func() time.Time) *backoff {
	return &backoff{now: now, clients: map[string]*failures{}}
}

// barred is how long client must still wait, 0 if it may try.
func (b *backoff) barred(client string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.clients[client]
	if f == nil {
		return 0
	}
	return max(0, f.until.Sub(b.now()))
}

// failed counts a failed login of client.
func (b *backoff) failed(client string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	f := b.clients[client]
	if f == nil || now.Sub(f.last) > forgetAfter {
		if len(b.clients) >= maxBackoffClients {
			b.sweep(now)
		}
		f = &failures{}
		b.clients[client] = f
	}
	f.n++
	f.last = now
	if f.n > freeFailures {
		bar := time.Second << min(f.n-freeFailures-1, 20)
		f.until = now.Add(min(bar, maxBar))
	}
}

// succeeded clears client's failures.
func (b *backoff) succeeded(client string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.clients, client)
}

func (b *backoff) sweep(now time.Time) {
	for c, f := range b.clients {
		if now.Sub(f.last) > forgetAfter {
			delete(b.clients, c)
		}
	}
	for c := range b.clients {
		if len(b.clients) < maxBackoffClients {
			break
		}
		delete(b.clients, c)
	}
}
