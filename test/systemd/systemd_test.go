// Package systemd runs a real pier as systemd would: with NOTIFY_SOCKET
// pointing at a datagram socket the test owns (every sd_notify message is
// checked), with a watchdog, under systemd-socket-activate, and through
// live reloads.
package systemd

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/notify"
	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/tool"
)

type proc struct {
	cmd  *exec.Cmd
	addr string
	out  *bytes.Buffer
	mu   *sync.Mutex
}

func (p *proc) log() string { p.mu.Lock(); defer p.mu.Unlock(); return p.out.String() }

type lockedBuf struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedBuf) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func writeConfig(t *testing.T, path, root string, port int, level string) {
	t.Helper()
	cfg := map[string]any{
		"storage": map[string]any{"rootDirectory": root},
		"http":    map[string]any{"address": "127.0.0.1", "port": fmt.Sprint(port)},
		"log":     map[string]any{"level": level},
	}
	b, _ := json.Marshal(cfg)
	tmp := path + ".new"
	os.WriteFile(tmp, b, 0o644)
	os.Rename(tmp, path) // as editors do: a new file renamed over the old
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, out: &bytes.Buffer{}, mu: &sync.Mutex{}}
	cmd.Stdout, cmd.Stderr = lockedBuf{p.mu, p.out}, lockedBuf{p.mu, p.out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

func TestNotifyReloadAndStop(t *testing.T) {
	n := notify.Listen(t, "")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	port := pierproc.FreePort(t)
	writeConfig(t, cfgPath, filepath.Join(dir, "data"), port, "info")
	p := start(t, []string{"NOTIFY_SOCKET=" + n.Path}, pierproc.Binary(t), "serve", cfgPath)

	ready := n.WaitFor(t, 0, "READY=1", "STATUS=serving 0 repositories")
	if c := n.Count("EXTEND_TIMEOUT_USEC="); c != 0 {
		t.Fatalf("a fast start asked systemd for more time %d times", c)
	}
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v2/", port)); err != nil || resp.StatusCode != 200 {
		t.Fatalf("READY=1 sent before the listener answers: %v", err)
	}

	// SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1.
	p.cmd.Process.Signal(syscall.SIGHUP)
	rel := n.WaitFor(t, ready+1, "RELOADING=1", "MONOTONIC_USEC=")
	n.WaitFor(t, rel+1, "READY=1")

	// A changed file is picked up without a signal: the log level goes to
	// debug, and a change that needs a restart is named.
	writeConfig(t, cfgPath, filepath.Join(dir, "data"), port+1, "debug")
	rel = n.WaitFor(t, rel+1, "RELOADING=1")
	n.WaitFor(t, rel+1, "READY=1")
	waitLog(t, p, "takes effect on the next restart", "key=http.port")
	// Debug lines now appear (a committed blob logs at debug), still on the
	// old port.
	if strings.Contains(p.log(), "blob committed") {
		t.Fatal("debug line logged at level info")
	}
	pushBlob(t, port, []byte("debug me"))
	waitLog(t, p, "level=DEBUG", "blob committed")

	// An invalid file is rejected and the server keeps running.
	os.WriteFile(cfgPath, []byte(`{"storage": {"rootDirectory": "/x", "typo": 1}}`), 0o644)
	waitLog(t, p, "reload rejected", "storage.typo")
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v2/", port)); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a rejected reload stopped the server: %v", err)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	n.WaitFor(t, 0, "STOPPING=1")
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.log())
	}
}

func pushBlob(t *testing.T, port int, data []byte) {
	t.Helper()
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/v2/app/blobs/uploads/?digest=%s", port, d), "", bytes.NewReader(data))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %v %v", resp, err)
	}
}

func waitLog(t *testing.T, p *proc, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.log(), "\n") {
			ok := true
			for _, part := range parts {
				ok = ok && strings.Contains(line, part)
			}
			if ok {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line with %q:\n%s", parts, p.log())
}

// WATCHDOG=1 comes at half the interval while the self-check passes, and
// stops when the storage root disappears.
func TestWatchdog(t *testing.T) {
	n := notify.Listen(t, "")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	root := filepath.Join(dir, "data")
	writeConfig(t, cfgPath, root, pierproc.FreePort(t), "info")
	p := start(t, []string{"NOTIFY_SOCKET=" + n.Path, "WATCHDOG_USEC=400000"}, pierproc.Binary(t), "serve", cfgPath)
	n.WaitFor(t, 0, "READY=1")
	time.Sleep(1100 * time.Millisecond)
	if c := n.Count("WATCHDOG=1"); c < 4 || c > 8 {
		t.Fatalf("%d watchdog pings in ~1.1 s at a 400 ms interval, want about 5", c)
	}
	os.Rename(root, root+".gone") // the store vanishes: pier must stop pinging
	time.Sleep(300 * time.Millisecond)
	before := n.Count("WATCHDOG=1")
	time.Sleep(800 * time.Millisecond)
	if after := n.Count("WATCHDOG=1"); after != before {
		t.Fatalf("watchdog pinged %d times with a missing storage root", after-before)
	}
	waitLog(t, p, "watchdog self-check failed")
	// A watchdog meant for another process is not ours.
	n2 := notify.Listen(t, "")
	writeConfig(t, cfgPath, root+"2", pierproc.FreePort(t), "info")
	start(t, []string{"NOTIFY_SOCKET=" + n2.Path, "WATCHDOG_USEC=200000", "WATCHDOG_PID=1"}, pierproc.Binary(t), "serve", cfgPath)
	n2.WaitFor(t, 0, "READY=1")
	time.Sleep(500 * time.Millisecond)
	if c := n2.Count("WATCHDOG=1"); c != 0 {
		t.Fatalf("pinged a watchdog of another pid %d times", c)
	}
}

// A Pi with IPv6 turned off (common advice for them) and the packaged
// config's "0.0.0.0": Go listens dual-stack on [::], and the self-check
// must still reach the listener, through 127.0.0.1, or systemd would
// restart a healthy pier every WatchdogSec. pier runs in a network
// namespace of its own whose loopback has no IPv6 address; nothing there
// logs a request line per ping.
func TestWatchdogWithoutIPv6(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a network namespace (CI runs as root)")
	}
	tool.Path(t, "unshare")
	tool.Path(t, "ip")
	n := notify.Listen(t, "")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	cfg := fmt.Sprintf(`{"storage": {"rootDirectory": %q}, "http": {"address": "0.0.0.0", "port": "5000"}}`, filepath.Join(dir, "data"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// Without ::1 on loopback, as with IPv6 disabled (and without writing
	// /proc/sys, which containers often mount read-only).
	script := `ip link set lo up && ip -6 addr del ::1/128 dev lo && exec "$0" serve "$1"`
	p := start(t, []string{"NOTIFY_SOCKET=" + n.Path, "WATCHDOG_USEC=400000"},
		"unshare", "--net", "sh", "-c", script, pierproc.Binary(t), cfgPath)
	n.WaitFor(t, 0, "READY=1")
	time.Sleep(1100 * time.Millisecond)
	if c := n.Count("WATCHDOG=1"); c < 3 {
		t.Fatalf("%d watchdog pings in ~1.1 s at a 400 ms interval with IPv6 off, want about 5\n%s", c, p.log())
	}
	if strings.Contains(p.log(), "self-check failed") || strings.Contains(p.log(), "msg=request") {
		t.Fatalf("self-check failed, or its pings were logged as requests:\n%s", p.log())
	}
}

// Under systemd-socket-activate pier serves the socket it is handed and
// binds nothing itself.
func TestSocketActivation(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate is not installed (Debian package systemd)")
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	configured := pierproc.FreePort(t)
	writeConfig(t, cfgPath, filepath.Join(dir, "data"), configured, "info")
	sock := pierproc.FreePort(t)
	p := start(t, nil, activate, "-l", fmt.Sprintf("127.0.0.1:%d", sock), pierproc.Binary(t), "serve", cfgPath)
	srv := &pierproc.Server{Addr: fmt.Sprintf("127.0.0.1:%d", sock)}
	if err := srv.WaitReady(10 * time.Second); err != nil {
		t.Fatalf("activated socket not served: %v\n%s", err, p.log())
	}
	waitLog(t, p, "socket activation")
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", configured), time.Second); err == nil {
		c.Close()
		t.Fatal("pier bound http.port although it was socket-activated")
	}
}

// Outside systemd nothing is sent and nothing is required.
func TestSilentOutsideSystemd(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	if strings.Contains(srv.Stderr(), "sd_notify") || strings.Contains(srv.Stderr(), "watchdog") {
		t.Fatalf("systemd noise outside systemd:\n%s", srv.Stderr())
	}
}

// A start-up that runs longer than expected asks systemd for more time
// (EXTEND_TIMEOUT_USEC=) before READY=1, so a Pi opening a large store on
// a slow card is not killed by TimeoutStartSec. Here the storage root is
// slow the way a hung network filesystem is: strace delays every flock(2)
// (the root's process lock, the dedupe cache's lock) by 4 s. A stop asked for
// during a start-up that hangs ends pier at once.
func TestExtendTimeoutWhileStartIsSlow(t *testing.T) {
	strace := tool.Path(t, "strace")
	n := notify.Listen(t, "")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	port := pierproc.FreePort(t)
	writeConfig(t, cfgPath, filepath.Join(dir, "data"), port, "info")
	p := start(t, []string{"NOTIFY_SOCKET=" + n.Path}, strace, "-f", "-qq", "-o", "/dev/null",
		"-e", "trace=flock", "-e", "inject=flock:delay_enter=4000000", pierproc.Binary(t), "serve", cfgPath)

	ext := n.WaitForWithin(t, 20*time.Second, 0, "EXTEND_TIMEOUT_USEC=")
	ready := n.WaitForWithin(t, 30*time.Second, 0, "READY=1")
	if ext > ready {
		t.Fatalf("EXTEND_TIMEOUT_USEC= (message #%d) came after READY=1 (#%d)", ext, ready)
	}
	msg := n.Message(ext)
	if !strings.Contains(msg, "EXTEND_TIMEOUT_USEC=15000000") {
		t.Fatalf("extension %q, want 15 s (three times the 5 s after which start-up counts as slow)", msg)
	}
	waitLog(t, p, "start-up is slow")
	syscall.Kill(childPid(t, p), syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.log())
	}

	// A stop asked for while start-up hangs ends pier at once, rather than
	// when the hang clears (systemd's stop would otherwise wait too). Here
	// the TLS certificate is a FIFO nobody writes: reading it blocks.
	fifo := filepath.Join(dir, "cert.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	hung := filepath.Join(dir, "hung.json")
	cfg := fmt.Sprintf(`{"storage": {"rootDirectory": %q}, "http": {"address": "127.0.0.1", "port": "%d", "tls": {"cert": %q, "key": %q}}}`,
		filepath.Join(dir, "data"), pierproc.FreePort(t), fifo, fifo)
	if err := os.WriteFile(hung, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n2 := notify.Listen(t, "")
	p = start(t, []string{"NOTIFY_SOCKET=" + n2.Path}, pierproc.Binary(t), "serve", hung)
	n2.WaitForWithin(t, 20*time.Second, 0, "EXTEND_TIMEOUT_USEC=")
	asked := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.log())
	}
	if took := time.Since(asked); took > 3*time.Second {
		t.Fatalf("a stop during a hung start-up took %v", took)
	}
	if n2.Count("READY=1") != 0 {
		t.Fatal("READY=1 from a pier stopped during start-up")
	}
}

// childPid is the pid of pier under strace (strace's only child).
func childPid(t *testing.T, p *proc) int {
	t.Helper()
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.cmd.Process.Pid, p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(kids)))
	if err != nil {
		t.Fatalf("pier's pid under strace: %q: %v", kids, err)
	}
	return pid
}
