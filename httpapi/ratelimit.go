package httpapi

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// rateLimiter is zot's http.ratelimit: each client address may make rate
// requests per second, with bursts of as many, and per-method limits on
// top. Per address, as zot (through tollbooth) does, so a client that
// floods pier is slowed without shutting out the others.
type rateLimiter struct {
	now     func() time.Time
	all     *buckets // nil without an overall rate
	methods map[string]*buckets
}

func newRateLimiter(rate int, methods map[string]int, now func() time.Time) *rateLimiter {
	l := &rateLimiter{now: now, methods: map[string]*buckets{}}
	if rate > 0 {
		l.all = newBuckets(rate)
	}
	for m, r := range methods {
		l.methods[m] = newBuckets(r)
	}
	return l
}

// admit takes a token for r, or says how long its client must wait.
func (l *rateLimiter) admit(r *http.Request) *Refusal {
	if l == nil {
		return nil
	}
	client, now := ClientAddress(r), l.now()
	wait := l.all.take(client, now)
	if b := l.methods[r.Method]; b != nil {
		wait = max(wait, b.take(client, now))
	}
	if wait <= 0 {
		return nil
	}
	return &Refusal{Status: http.StatusTooManyRequests, Code: "TOOMANYREQUESTS",
		Message: "too many requests from " + client + "; slow down", RetryAfter: wait}
}

// maxBucketClients bounds the memory of a limiter: past it, buckets that
// have filled up again (their clients went quiet) are forgotten.
const maxBucketClients = 8192

// buckets are token buckets, one per client address.
type buckets struct {
	rate float64 // tokens a second; also the burst
	mu   sync.Mutex
	m    map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newBuckets(rate int) *buckets {
	return &buckets{rate: float64(rate), m: map[string]*bucket{}}
}

// take removes a token from client's bucket and returns 0, or, when it is
// empty, how long until it holds one again (without taking it: a refused
// request costs nothing).
func (b *buckets) take(client string, now time.Time) time.Duration {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.m[client]
	if !ok {
		if len(b.m) >= maxBucketClients {
			b.forget(now)
		}
		k = &bucket{tokens: b.rate, last: now}
		b.m[client] = k
	}
	k.tokens = min(b.rate, k.tokens+now.Sub(k.last).Seconds()*b.rate)
	k.last = now
	if k.tokens >= 1 {
		k.tokens--
		return 0
	}
	return time.Duration((1 - k.tokens) / b.rate * float64(time.Second))
}

// forget drops full buckets: their clients are as if new. If every
// client is busy, an arbitrary one is dropped, so memory stays bounded.
func (b *buckets) forget(now time.Time) {
	for c, k := range b.m {
		if k.tokens+now.Sub(k.last).Seconds()*b.rate >= b.rate {
			delete(b.m, c)
		}
	}
	for c := range b.m {
		if len(b.m) < maxBucketClients {
			break
		}
		delete(b.m, c)
	}
}

// ClientAddress is the address limits and back-offs key a client by: its
// IP, or its /64 for IPv6, where one host holds a whole prefix. Requests
// through a reverse proxy all share the proxy's address (pier trusts no
// forwarding header).
func ClientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
