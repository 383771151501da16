package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// sessions bounds the upload sessions clients leave open. Each holds a
// file under the root until it is committed or cancelled; without a bound
// a client could open sessions until the disk runs out of inodes. A
// session nothing has touched for the idle timeout is cancelled to make
// room when a new one starts; past the cap (overall, or an eighth of it for
// one client address) a new session is refused with 429 until some finish.
// Sessions this process did not start (before a restart) are not counted;
// garbage collection removes them after gcDelay.
type sessions struct {
	max, perClient int
	idle           time.Duration
	now            func() time.Time

	mu   sync.Mutex
	open map[string]*session // by repo + "\x00" + id
}

type session struct {
	repo, id, client string
	last             time.Time
	active           int // requests using it now; never cancelled while > 0
}

func newSessions(l Limits) *sessions {
	return &sessions{max: l.MaxUploadSessions, perClient: max(1, l.MaxUploadSessions/8), idle: l.UploadIdleTimeout,
		now: time.Now, open: map[string]*session{}}
}

func sessionKey(repo, id string) string { return repo + "\x00" + id }

// admit makes room for a new session of client: it cancels sessions idle
// past the timeout, and refuses when the client or pier holds too many.
func (s *sessions) admit(ctx context.Context, reg Registry, client string) *Refusal {
	s.mu.Lock()
	now := s.now()
	var stale []*session
	mine := 0
	for k, ss := range s.open {
		if ss.active == 0 && now.Sub(ss.last) > s.idle {
			stale = append(stale, ss)
			delete(s.open, k)
			continue
		}
		if ss.client == client {
			mine++
		}
	}
	total := len(s.open)
	s.mu.Unlock()
	for _, ss := range stale {
		reg.CancelUpload(ctx, ss.repo, ss.id) // gone already (committed, collected): nothing to free
	}
	if mine >= s.perClient || total >= s.max {
		return &Refusal{Status: http.StatusTooManyRequests, Code: "TOOMANYREQUESTS",
			Message: "too many upload sessions open; finish or cancel some first", RetryAfter: time.Minute}
	}
	return nil
}

// started records a new session.
func (s *sessions) started(repo, id, client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open[sessionKey(repo, id)] = &session{repo: repo, id: id, client: client, last: s.now()}
}

// use marks a session busy for one request; the returned func ends the
// use, and forgets the session when done says it is finished.
func (s *sessions) use(repo, id string) (end func(done bool)) {
	key := sessionKey(repo, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.open[key]
	if ss != nil {
		ss.active++
	}
	return func(done bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ss == nil {
			return
		}
		ss.active--
		ss.last = s.now()
		if done {
			delete(s.open, key)
		}
	}
}
