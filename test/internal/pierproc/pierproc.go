// Package pierproc runs a real `pier serve` process for end-to-end tests:
// a config in a temporary directory, a free loopback port, and a wait until
// /v2/ answers.
package pierproc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is the pier binary under test: $PIER_BIN, set by `make test`.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("PIER_BIN")
	if bin == "" {
		t.Fatal("PIER_BIN is not set; run the end-to-end tests with `make test`")
	}
	return bin
}

// Run runs a pier subcommand (gc, scrub, verify, ...) to completion and
// returns its exit code and its output, stdout and stderr together.
func Run(t testing.TB, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatalf("run pier %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// Server is a running pier process.
type Server struct {
	Addr   string // host:port on 127.0.0.1
	Root   string // storage root directory
	Config string // path of the config file it was started with
	Cmd    *exec.Cmd

	env    []string
	mu     sync.Mutex
	stderr bytes.Buffer
	noWait bool
}

// Options adjust the config a server starts with.
type Options struct {
	Root    string         // storage root; a new temp dir when empty
	Storage map[string]any // extra storage keys (commit, dedupe, ...)
	HTTP    map[string]any // extra http keys (auth, accessControl, tls, ...)
	Extra   map[string]any // extra top-level keys
	// NoWait returns once the process started, for servers /v2/ over
	// plain HTTP cannot reach (TLS): the caller waits its own way.
	NoWait bool
	// Env is added to the process's environment (NOTIFY_SOCKET, ...).
	Env []string
}

// Start writes a config and starts `pier serve` on a free port, waiting
// until it answers. The process is killed when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	root := opts.Root
	if root == "" {
		root = filepath.Join(dir, "data")
	}
	port := FreePort(t)
	storage := map[string]any{"rootDirectory": root}
	for k, v := range opts.Storage {
		storage[k] = v
	}
	httpSection := map[string]any{"address": "127.0.0.1", "port": fmt.Sprint(port)}
	for k, v := range opts.HTTP {
		httpSection[k] = v
	}
	cfg := map[string]any{
		"distSpecVersion": "1.1.1",
		"storage":         storage,
		"http":            httpSection,
		"log":             map[string]any{"level": "warn"},
	}
	for k, v := range opts.Extra {
		cfg[k] = v
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Root: root, Config: path, noWait: opts.NoWait, env: opts.Env}
	s.start(t)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	s.Cmd = exec.Command(Binary(t), "serve", s.Config)
	s.Cmd.Stderr = &lockedWriter{s}
	if s.env != nil {
		s.Cmd.Env = append(os.Environ(), s.env...)
	}
	if err := s.Cmd.Start(); err != nil {
		t.Fatalf("start pier: %v", err)
	}
	cmd := s.Cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	if s.noWait {
		return
	}
	if err := s.WaitReady(10 * time.Second); err != nil {
		t.Fatalf("pier did not become ready: %v\nstderr:\n%s", err, s.Stderr())
	}
}

// Restart starts the server again on the same config after it stopped.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.start(t)
}

// WaitReady polls /v2/ until it answers 200, or 401 when it wants a login.
func (s *Server) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(s.URL("/v2/"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is the server's http URL for path.
func (s *Server) URL(path string) string { return "http://" + s.Addr + path }

// Kill stops the process with SIGKILL, as a crash or power cut would.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.Cmd.Process.Kill()
	s.Cmd.Wait()
}

// Stop sends SIGTERM and waits for the exit, returning the exit code.
func (s *Server) Stop(t testing.TB) int {
	t.Helper()
	s.Cmd.Process.Signal(syscall.SIGTERM)
	s.Cmd.Wait()
	return s.Cmd.ProcessState.ExitCode()
}

// Stderr is what the process has logged so far.
func (s *Server) Stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.stderr.Write(p)
}

// FreePort asks the kernel for a free loopback port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
