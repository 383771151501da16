package packaging

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/notify"
	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/testimage"
	"github.com/pier-oci/pier/test/internal/tool"
)

// TestSandboxSyscalls runs the packaged amd64 pier on the packaged config
// (on a loopback port and a temporary root) the way pier.service does: an
// unprivileged user, no capabilities, no_new_privs, NOTIFY_SOCKET and a
// watchdog. Under strace it serves a skopeo push and pull, a reload and a
// stop. Every system call it makes must be one SystemCallFilter=@system-service
// allows, every socket one RestrictAddressFamilies= allows, and no mapping
// may be writable and executable (MemoryDenyWriteExecute=yes): otherwise
// systemd would stop pier on a Pi where no test runs.
func TestSandboxSyscalls(t *testing.T) {
	// A world-readable base: the unprivileged pier must reach its binary,
	// config and root.
	base, err := os.MkdirTemp("", "pier-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg-deb", "-x", debPath(t, "amd64"), filepath.Join(base, "pkg"))
	bin := filepath.Join(base, "pkg/usr/bin/pier")
	state := filepath.Join(base, "state")
	if err := os.Mkdir(state, 0o750); err != nil {
		t.Fatal(err)
	}

	var cfg map[string]any
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(base, "pkg/etc/pier/config.json"))), &cfg); err != nil {
		t.Fatal(err)
	}
	port := pierproc.FreePort(t)
	cfg["storage"].(map[string]any)["rootDirectory"] = filepath.Join(state, "data")
	cfg["http"].(map[string]any)["address"] = "127.0.0.1"
	cfg["http"].(map[string]any)["port"] = strconv.Itoa(port)
	data, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(base, "config.json")
	writeFile(t, cfgPath, string(data))

	sock := notify.Listen(t, filepath.Join(state, "notify.sock"))
	trace := filepath.Join(state, "strace.txt")
	args := []string{"strace", "-f", "-qq", "-e", "signal=none", "-o", trace, bin, "serve", cfgPath}
	if os.Geteuid() == 0 {
		// As User=pier with NoNewPrivileges=yes and CapabilityBoundingSet=.
		if err := chownTree(state, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"}, args...)
	}
	for _, name := range []string{"strace", "setpriv", "skopeo"} {
		tool.Path(t, name)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock.Path, "WATCHDOG_USEC=1000000", "GOMEMLIMIT=64MiB")
	// A file, not a pipe: a pier that outlives a killed strace must not
	// hold Wait.
	out := &logFile{path: filepath.Join(base, "pier.log")}
	f, err := os.Create(out.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	pier := 0
	t.Cleanup(func() {
		// pier first: a tracee outlives a killed strace.
		if pier > 0 {
			syscall.Kill(pier, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		<-exited
	})
	pier = tracee(t, cmd.Process.Pid, bin)

	waitNotify(t, sock, out, "READY=1")
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v2/", port)); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v2/: %v %v\n%s", resp, err, out.String())
	}

	// A push and a pull.
	image := testimage.NewImage("sandbox", 2, testimage.Platform{OS: "linux", Architecture: "arm64"})
	src := t.TempDir()
	if err := testimage.WriteLayout(src, map[string]testimage.Content{"v1": image}); err != nil {
		t.Fatal(err)
	}
	skopeo := tool.Runner{Env: tool.Env(t)}
	remote := fmt.Sprintf("docker://127.0.0.1:%d/sandbox/app:v1", port)
	skopeo.Run(t, "skopeo", "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":v1", remote)
	back := t.TempDir()
	skopeo.Run(t, "skopeo", "--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false", remote, "oci:"+back+":v1")
	if err := testimage.Compare(testimage.Layout{Dir: back}, image); err != nil {
		t.Errorf("pulled back: %v", err)
	}

	// The watchdog self-check, a reload, a stop.
	waitNotify(t, sock, out, "WATCHDOG=1")
	syscall.Kill(pier, syscall.SIGHUP)
	waitNotify(t, sock, out, "RELOADING=1")
	syscall.Kill(pier, syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("pier under strace: %v\n%s", waitErr, out.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("pier did not stop on SIGTERM\n%s", out.String())
	}
	waitNotify(t, sock, out, "STOPPING=1")

	checkTrace(t, readFile(t, trace), bin, allowedSyscalls(t))
}

var (
	// "123 name(" or "123 <... name resumed>".
	syscallLine = regexp.MustCompile(`^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]`)
	socketCall  = regexp.MustCompile(`\b(?:socket|socketpair)\((AF_[A-Z0-9]+)`)
	writeExec   = regexp.MustCompile(`\b(?:mmap|mprotect|pkey_mprotect)\(.*PROT_EXEC`)
)

// checkTrace checks what strace saw pier do, from the execve of bin on
// (setpriv's own calls before it are systemd's part).
func checkTrace(t *testing.T, trace, bin string, allowed map[string]bool) {
	t.Helper()
	lines := strings.Split(trace, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, `execve("`+bin+`"`) })
	if start < 0 {
		t.Fatalf("strace output has no execve of %s", bin)
	}
	seen := map[string]int{}
	families := map[string]bool{}
	for _, l := range lines[start+1:] {
		if m := syscallLine.FindStringSubmatch(l); m != nil {
			seen[m[1]]++
		}
		if m := socketCall.FindStringSubmatch(l); m != nil {
			families[m[1]] = true
		}
		// The kernel maps the binary at execve; anything executable pier
		// maps or protects itself is refused.
		if writeExec.MatchString(l) {
			t.Errorf("MemoryDenyWriteExecute=yes refuses: %s", l)
		}
	}
	if len(seen) < 20 {
		t.Fatalf("strace saw only %d system calls: %v", len(seen), seen)
	}
	var names, refused []string
	for name := range seen {
		names = append(names, name)
		if !allowed[name] {
			refused = append(refused, name)
		}
	}
	slices.Sort(names)
	t.Logf("%d distinct system calls: %s", len(names), strings.Join(names, " "))
	if len(refused) > 0 {
		slices.Sort(refused)
		t.Errorf("SystemCallFilter=@system-service refuses %v", refused)
	}
	for f := range families {
		if f != "AF_UNIX" && f != "AF_INET" && f != "AF_INET6" {
			t.Errorf("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 refuses socket(%s)", f)
		}
	}
	for _, f := range []string{"AF_UNIX", "AF_INET"} {
		if !families[f] {
			t.Errorf("no socket(%s) seen: the trace missed the listener or sd_notify (%v)", f, families)
		}
	}
}

// allowedSyscalls expands @system-service from `systemd-analyze
// syscall-filter`: the groups as this systemd defines them.
func allowedSyscalls(t *testing.T) map[string]bool {
	t.Helper()
	groups := map[string][]string{}
	group := ""
	for _, line := range strings.Split(run(t, "systemd-analyze", "syscall-filter", "--no-pager"), "\n") {
		switch {
		case strings.HasPrefix(line, "@"):
			group = strings.TrimSpace(line)
		case strings.HasPrefix(line, "    ") && !strings.HasPrefix(strings.TrimSpace(line), "#") && group != "":
			groups[group] = append(groups[group], strings.TrimSpace(line))
		case line == "" || strings.HasPrefix(line, "#"):
			group = ""
		}
	}
	allowed := map[string]bool{}
	var expand func(string)
	expand = func(g string) {
		for _, e := range groups[g] {
			if strings.HasPrefix(e, "@") {
				expand(e)
			} else {
				allowed[e] = true
			}
		}
	}
	expand("@system-service")
	if !allowed["read"] || !allowed["futex"] || allowed["reboot"] || allowed["init_module"] {
		t.Fatalf("parsing systemd-analyze syscall-filter went wrong: %d calls in @system-service", len(allowed))
	}
	return allowed
}

// tracee is the pid of pier under strace: the child of the setpriv/strace
// process running bin (strace first forks short-lived children of its own,
// to probe ptrace features).
func tracee(t *testing.T, pid int, bin string) int {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(b)) {
			child, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", child)); exe == bin {
				return child
			}
		}
	}
	t.Fatalf("strace (pid %d) did not start %s", pid, bin)
	return 0
}

func chownTree(root string, uid, gid int) error {
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// logFile is where pier's output goes; read when a test fails.
type logFile struct{ path string }

func (l *logFile) String() string {
	b, _ := os.ReadFile(l.path)
	return string(b)
}

// waitNotify waits for an sd_notify message with part, and fails with
// pier's output when none comes.
func waitNotify(t *testing.T, sock *notify.Socket, log *logFile, part string) {
	t.Helper()
	if _, err := sock.Wait(15*time.Second, 0, part); err != nil {
		t.Fatalf("%v\npier's output:\n%s", err, log)
	}
}
