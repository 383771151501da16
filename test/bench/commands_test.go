package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Running the pier binary directly: the one-off commands (pier gc, pier
// scrub) with what the kernel says they cost, and `pier serve` timed from
// exec to its first answer. (startPier is for servers whose start-up is
// not what is measured.)

// writeConfig writes a pier config for root into b's temp dir: the given
// storage keys (dedupe, commit, gc, ...) and top-level keys (extra, e.g.
// "extensions"), log level info, a free loopback port. It returns the
// config's path and the address pier will listen on.
func writeConfig(b *testing.B, root string, storage, extra map[string]any) (path, addr string) {
	b.Helper()
	st := map[string]any{"rootDirectory": root}
	for k, v := range storage {
		st[k] = v
	}
	addr = fmt.Sprintf("127.0.0.1:%d", pierproc.FreePort(b))
	host, port, _ := net.SplitHostPort(addr)
	cfg := map[string]any{
		"distSpecVersion": "1.1.1",
		"storage":         st,
		"http":            map[string]any{"address": host, "port": port},
		"log":             map[string]any{"level": "info"},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	path = filepath.Join(b.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return path, addr
}

// A commandRun is one run of a one-off pier command.
type commandRun struct {
	Stdout, Stderr string
	Exit           int
	Wall           time.Duration
	CPU            time.Duration // user + system
	MaxRSS         int64         // peak resident size in bytes (getrusage ru_maxrss)
}

// pierCommand runs `pier args...` to its end and reports its cost.
//
// The peak RSS comes from a launcher, this test binary run again (see
// TestMain), and not from this process's own wait: Linux carries the RSS
// of the process that forks into the ru_maxrss of the child it execs, so
// a benchmark process holding 256 MiB would see every child it starts
// peak at 256 MiB or more. The launcher is small; the pier it starts
// inherits only its few MiB.
func pierCommand(b *testing.B, args ...string) commandRun {
	b.Helper()
	report := filepath.Join(b.TempDir(), "rusage.json")
	cmd := exec.Command(os.Args[0], append([]string{pierproc.Binary(b)}, args...)...)
	cmd.Env = append(os.Environ(), launcherEnv+"="+report)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	data, rerr := os.ReadFile(report)
	var u launcherReport
	if rerr == nil {
		rerr = json.Unmarshal(data, &u)
	}
	if rerr != nil {
		b.Fatalf("pier %v: %v; launcher: %v\nstderr:\n%s", args, err, rerr, tail(stderr.String()))
	}
	return commandRun{Stdout: stdout.String(), Stderr: stderr.String(), Exit: u.Exit,
		Wall: u.Wall, CPU: u.User + u.System, MaxRSS: u.MaxRSSKiB << 10}
}

// launcherEnv, when set in this binary's environment, makes it a launcher
// (TestMain): it runs the command in its arguments and writes a
// launcherReport to the file the variable names.
const launcherEnv = "PIER_BENCH_LAUNCHER_REPORT"

// launcherReport is what the launcher says of the command it ran.
type launcherReport struct {
	Exit         int
	Wall         time.Duration
	User, System time.Duration
	MaxRSSKiB    int64
}

// launch runs os.Args[1:] with this process's stdio, reports its cost to
// the file named by launcherEnv, and returns its exit code.
func launch() int {
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		fmt.Fprintf(os.Stderr, "launcher: %v\n", err)
		return 125
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	data, _ := json.Marshal(launcherReport{
		Exit: cmd.ProcessState.ExitCode(), Wall: wall,
		User: time.Duration(ru.Utime.Nano()), System: time.Duration(ru.Stime.Nano()),
		MaxRSSKiB: ru.Maxrss, // KiB on Linux
	})
	if err := os.WriteFile(os.Getenv(launcherEnv), data, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "launcher: %v\n", err)
		return 125
	}
	return cmd.ProcessState.ExitCode()
}

// serveTimed execs `pier serve config` and polls GET /v2/ on addr every
// 2 ms until it answers 200. It returns the running process and the time
// from exec to that answer, and its stderr (to read once it has exited).
// The process is stopped when b ends, if the caller has not stopped it.
func serveTimed(b *testing.B, config, addr string) (*exec.Cmd, *bytes.Buffer, time.Duration) {
	b.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	cmd := exec.Command(pierproc.Binary(b), "serve", config)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("start pier: %v", err)
	}
	b.Cleanup(func() { stopServe(cmd) })
	deadline := start.Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd, &stderr, time.Since(start)
			}
		}
		if time.Now().After(deadline) {
			stopServe(cmd)
			b.Fatalf("pier serve %s did not answer /v2/ within 30 s: %v\nstderr:\n%s", config, err, stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stopServe ends a server started by serveTimed: SIGTERM, then SIGKILL if
// it has not exited after 10 s.
func stopServe(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
