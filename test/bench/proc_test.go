package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What the kernel says about the server process.

// procStatus reads the memory lines of /proc/<pid>/status, in KiB:
// VmRSS (resident now) and VmHWM (the peak resident size).
func procStatus(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			rss, err = kib(v)
		case "VmHWM":
			hwm, err = kib(v)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return rss, hwm, sc.Err()
}

// procAnon is the process's private memory (RssAnon, KiB): its heap and
// stacks. VmRSS adds the pages of its binary the kernel has mapped, which
// grow with the binary's size (a fault maps the cached pages around it)
// and which the kernel can drop at any time.
func procAnon(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			return kib(v)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no RssAnon", pid)
}

func kib(v string) (int64, error) {
	return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
}

// procIO is /proc/<pid>/io: rchar counts bytes read through read(2) and
// sendfile(2) alike, syscr the calls that did it, and read_bytes what came
// from the disk rather than the page cache; write_bytes is what the
// process dirtied in files (counted when dirtied, fsync or not).
type procIO struct {
	RChar, WChar, SyscR, SyscW, ReadBytes, WriteBytes int64
}

func readProcIO(pid int) (procIO, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return procIO{}, err
	}
	var io procIO
	fields := map[string]*int64{"rchar": &io.RChar, "wchar": &io.WChar, "syscr": &io.SyscR, "syscw": &io.SyscW, "read_bytes": &io.ReadBytes, "write_bytes": &io.WriteBytes}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if p := fields[k]; ok && p != nil {
			if *p, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				return procIO{}, fmt.Errorf("/proc/%d/io %s: %w", pid, k, err)
			}
		}
	}
	return io, nil
}

func (a procIO) sub(b procIO) procIO {
	return procIO{a.RChar - b.RChar, a.WChar - b.WChar, a.SyscR - b.SyscR, a.SyscW - b.SyscW, a.ReadBytes - b.ReadBytes, a.WriteBytes - b.WriteBytes}
}

// syscallUse is what strace saw of one syscall.
type syscallUse struct {
	Name  string
	Calls int64
	Bytes int64 // sum of the non-negative return values
}

// traceSyscalls attaches strace to every thread of pid while f runs and
// returns, per syscall in names, the calls and the bytes they returned.
// It fails when strace is missing or cannot attach (no CAP_SYS_PTRACE,
// Yama ptrace_scope).
func traceSyscalls(pid int, names []string, f func() error) ([]syscallUse, error) {
	var use []syscallUse
	err := runStrace(pid, []string{"-e", "trace=" + strings.Join(names, ",")}, f, func(out string) (err error) {
		use, err = parseStrace(out, names)
		return err
	})
	return use, err
}

// runStrace attaches strace (with args, besides -f and -o) to every thread
// of pid while f runs, then hands its output file to parse.
func runStrace(pid int, args []string, f func() error, parse func(out string) error) error {
	bin, err := exec.LookPath("strace")
	if err != nil {
		return fmt.Errorf("strace is not installed (apt-get install -y strace): %w", err)
	}
	out := filepath.Join(os.TempDir(), fmt.Sprintf("pier-bench-strace-%d-%d.txt", pid, time.Now().UnixNano()))
	defer os.Remove(out)
	args = append([]string{"-f", "-qq", "-o", out}, args...)
	cmd := exec.Command(bin, append(args, "-p", strconv.Itoa(pid))...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start strace: %w", err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGINT) // detach and exit
		return cmd.Wait()
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitTraced(ctx, pid); err != nil {
		stop()
		return fmt.Errorf("strace did not attach: %w; strace said: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := f(); err != nil {
		return err
	}
	stop() // its exit status after SIGINT says nothing; the output file does
	if err := parse(out); err != nil {
		return fmt.Errorf("strace output: %w; strace said: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

var tracedRE = regexp.MustCompile(`(?m)^TracerPid:\s+[1-9]`)

// waitTraced waits until every thread of pid has a tracer.
func waitTraced(ctx context.Context, pid int) error {
	for {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil || len(tasks) == 0 {
			return fmt.Errorf("no threads of %d: %v", pid, err)
		}
		all := true
		for _, t := range tasks {
			data, err := os.ReadFile(t)
			if err != nil || !tracedRE.Match(data) {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// An strace -f -o line is "<pid> name(args) = ret ...", or split in two
// around a context switch: "<pid> name(args <unfinished ...>" and
// "<pid> <... name resumed>args) = ret".
var (
	straceCall = regexp.MustCompile(`^\d+\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()`)
	straceRet  = regexp.MustCompile(`\)\s+=\s+(-?\d+)(?:\s.*)?$`)
)

func parseStrace(path string, names []string) ([]syscallUse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	use := map[string]*syscallUse{}
	for _, n := range names {
		use[n] = &syscallUse{Name: n}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		m := straceCall.FindStringSubmatch(line)
		if m == nil || strings.HasSuffix(line, "<unfinished ...>") {
			continue
		}
		name := m[1] + m[2]
		u := use[name]
		r := straceRet.FindStringSubmatch(line)
		if u == nil || r == nil {
			continue
		}
		u.Calls++
		if n, err := strconv.ParseInt(r[1], 10, 64); err == nil && n > 0 {
			u.Bytes += n
		}
	}
	var out []syscallUse
	for _, n := range names {
		out = append(out, *use[n])
	}
	slices.SortStableFunc(out, func(a, b syscallUse) int { return int(b.Bytes>>10) - int(a.Bytes>>10) })
	return out, sc.Err()
}

// syncCalls are the syscalls that force data to the disk.
var syncCalls = []string{"fsync", "fdatasync", "sync_file_range", "syncfs", "sync"}

// straceFileCall is the first line of a call on a file descriptor, with
// strace -y naming its file: "<pid> fsync(7</path/to/file>" (the call may
// end on that line or be resumed on a later one; either way it is counted
// once, here).
var straceFileCall = regexp.MustCompile(`^\d+\s+(\w+)\((?:\d+<([^>]*)>)?`)

// traceSyncs counts the sync calls of pid while f runs, by "syscall kind",
// where kind names the file a call was made on (kind of its path).
func traceSyncs(pid int, kind func(path string) string, f func() error) (map[string]int64, error) {
	counts := map[string]int64{}
	err := runStrace(pid, []string{"-y", "-e", "trace=" + strings.Join(syncCalls, ",")}, f, func(out string) error {
		file, err := os.Open(out)
		if err != nil {
			return err
		}
		defer file.Close()
		sc := bufio.NewScanner(file)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			m := straceFileCall.FindStringSubmatch(sc.Text())
			if m == nil || !slices.Contains(syncCalls, m[1]) {
				continue // a resumed line, or an exit notice
			}
			counts[m[1]+" "+kind(m[2])]++
		}
		return sc.Err()
	})
	return counts, err
}

// clockTicks is the unit of the times in /proc/<pid>/stat (USER_HZ, which
// is 100 on every Linux architecture).
const clockTicks = 100

// procCPU is the CPU time, user and system, that every thread of pid has
// used so far.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from its closing parenthesis, where field 3 (state) starts.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] { // fields 14 and 15: utime, stime
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// ctxSwitches sums the context switches of every thread of pid. A
// voluntary switch is a thread going to sleep, so over an idle minute
// their count is the count of wake-ups; involuntary ones are preemptions.
func ctxSwitches(pid int) (voluntary, involuntary int64, err error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, 0, fmt.Errorf("no threads of %d: %v", pid, err)
	}
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch k {
			case "voluntary_ctxt_switches":
				voluntary += n
			case "nonvoluntary_ctxt_switches":
				involuntary += n
			}
		}
	}
	return voluntary, involuntary, nil
}

// threads is how many threads pid has.
func threads(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	return len(tasks)
}
