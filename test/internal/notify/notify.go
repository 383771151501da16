// Package notify is systemd's side of sd_notify, for tests: a unix datagram
// socket that collects every message a pier sends to NOTIFY_SOCKET.
package notify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Socket collects the messages sent to Path.
type Socket struct {
	Path string
	mu   sync.Mutex
	msgs []string
}

// Listen opens a socket at path (in a temporary directory when path is
// empty), writable by any user so that an unprivileged pier can send to
// it. It closes when the test ends.
func Listen(t testing.TB, path string) *Socket {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "notify.sock")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	s := &Socket{Path: path}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:k]))
			s.mu.Unlock()
		}
	}()
	return s
}

// Wait waits up to limit for a message, after the first `after` ones, that
// contains every one of parts, and returns its index.
func (s *Socket) Wait(limit time.Duration, after int, parts ...string) (int, error) {
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		s.mu.Lock()
		for i := after; i < len(s.msgs); i++ {
			if containsAll(s.msgs[i], parts) {
				s.mu.Unlock()
				return i, nil
			}
		}
		msgs := append([]string(nil), s.msgs...)
		s.mu.Unlock()
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no sd_notify message with %q after #%d within %v; got %q", parts, after, limit, msgs)
		}
	}
}

// WaitFor is Wait with a 10 s limit that fails the test.
func (s *Socket) WaitFor(t testing.TB, after int, parts ...string) int {
	t.Helper()
	return s.WaitForWithin(t, 10*time.Second, after, parts...)
}

// WaitForWithin is Wait that fails the test.
func (s *Socket) WaitForWithin(t testing.TB, limit time.Duration, after int, parts ...string) int {
	t.Helper()
	i, err := s.Wait(limit, after, parts...)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// Count is how many messages contain part.
func (s *Socket) Count(part string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := 0
	for _, m := range s.msgs {
		if strings.Contains(m, part) {
			c++
		}
	}
	return c
}

// Message is message i.
func (s *Socket) Message(i int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[i]
}

func containsAll(msg string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			return false
		}
	}
	return true
}
