// Package tool finds and runs the client programs the end-to-end suites
// drive pier with: the pinned Go tools that test/setup.sh builds into
// $PIER_TOOLS (crane, oras, conformance) and Debian's skopeo on PATH.
//
// A missing tool fails the test: CI must never pass by skipping a client.
package tool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pinned are the tools built from test/tools/go.mod into $PIER_TOOLS; any
// other name is looked up on PATH.
var pinned = map[string]bool{"crane": true, "oras": true, "conformance": true}

// DefaultTimeout bounds one tool run when the caller gives none; every
// client operation here moves a few KiB over loopback.
const DefaultTimeout = 2 * time.Minute

// Path is the executable for name, or a test failure saying how to get it.
func Path(t testing.TB, name string) string {
	t.Helper()
	if pinned[name] {
		dir := os.Getenv("PIER_TOOLS")
		if dir == "" {
			t.Fatalf("PIER_TOOLS is not set; run the end-to-end tests with `make e2e` (it builds %s)", name)
		}
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing from PIER_TOOLS=%s: %v; run `make deps`", name, dir, err)
		}
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not on PATH: %v; run `make deps` (test/setup.sh installs it)", name, err)
	}
	return p
}

// Env is an environment for tools that keeps the user's registry logins and
// config out of the test: HOME and DOCKER_CONFIG point at an empty temp
// directory. Proxies are left alone: Go clients never proxy loopback.
func Env(t testing.TB) []string {
	t.Helper()
	home := t.TempDir()
	env := []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker"), "XDG_RUNTIME_DIR=" + home}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "DOCKER_CONFIG", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "REGISTRY_AUTH_FILE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Result is what one run printed and how it ended.
type Result struct {
	Args     []string
	Stdout   []byte
	Stderr   []byte
	Err      error // nil on exit 0
	Duration time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%s (%v, %s)\nstdout:\n%s\nstderr:\n%s",
		strings.Join(r.Args, " "), r.Err, r.Duration.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// Runner runs tools with a fixed environment and timeout.
type Runner struct {
	Env     []string      // environment; os.Environ() when nil
	Dir     string        // working directory; the test's when empty
	Timeout time.Duration // per run; DefaultTimeout when zero
}

// Try runs name with args and returns the result, whatever the exit code:
// for runs that are expected to fail.
func (r Runner) Try(t testing.TB, name string, args ...string) Result {
	t.Helper()
	timeout := r.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Path(t, name), args...)
	cmd.Env = r.Env
	cmd.Dir = r.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Without WaitDelay a child that keeps the pipes open would hold Wait
	// past the timeout.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	res := Result{
		Args:     append([]string{name}, args...),
		Stdout:   stdout.Bytes(),
		Stderr:   stderr.Bytes(),
		Err:      err,
		Duration: time.Since(start),
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.Err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	t.Logf("%s: %v in %v", strings.Join(res.Args, " "), exitText(res.Err), res.Duration.Round(time.Millisecond))
	return res
}

// Run is Try that fails the test unless the tool exits 0; it returns stdout.
func (r Runner) Run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	res := r.Try(t, name, args...)
	if res.Err != nil {
		t.Fatalf("%s", res)
	}
	return res.Stdout
}

func exitText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
