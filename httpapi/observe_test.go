package httpapi

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/storetest"
)

type seen struct {
	mu   sync.Mutex
	reqs []string
}

func (s *seen) Request(route, method string, status int, took time.Duration, received, sent int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, route+" "+method)
}

// Every request is observed once, by route; a method a client invents is
// "other", so it cannot grow the metrics' label sets.
func TestObserverLabels(t *testing.T) {
	o := &seen{}
	api := New(storetest.Local(t, t.TempDir(), false, false), nil, WithObserver(o), WithMetrics("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	for _, r := range []*http.Request{
		httptest.NewRequest("GET", "/v2/", nil),
		httptest.NewRequest("GET", "/v2/app/manifests/v1", nil),
		httptest.NewRequest("BREW", "/v2/app/manifests/v1", nil),
		httptest.NewRequest("GET", "/v2/BAD/tags/list", nil),
		httptest.NewRequest("GET", "/metrics", nil),
	} {
		api.ServeHTTP(httptest.NewRecorder(), r)
	}
	want := []string{"base GET", "manifest GET", "other other", "other GET", "metrics GET"}
	if len(o.reqs) != len(want) {
		t.Fatalf("observed %v, want %v", o.reqs, want)
	}
	for i := range want {
		if o.reqs[i] != want[i] {
			t.Errorf("request %d observed as %q, want %q", i, o.reqs[i], want[i])
		}
	}
}
