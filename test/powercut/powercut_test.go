package powercut

import (
	"context"
	"debug/elf"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/ledger"
	"github.com/pier-oci/pier/test/internal/ociclient"
)

const (
	clients        = 3    // concurrent workload clients, one repository each
	selfTestTrials = 3    // power cuts the pier_nosync build gets to lose something
	defaultCycles  = 15   // rolling power cuts of the real build in `make test`
	gcDelay        = "2s" // short, so collection runs (and is cut) during the workload
	gcInterval     = "3s"
)

// TestPowerCut runs the self-test (a pier that never fsyncs must lose
// acknowledged data) and then CYCLES rolling power cuts of the real pier:
// each boot audits everything acknowledged in all earlier boots, writes
// more, and has its power cut at a random moment. A final boot runs
// `pier scrub` on the disk. Skipped unless PIER_POWERCUT=1 or CYCLES is
// set: `make powercut CYCLES=N`.
func TestPowerCut(t *testing.T) {
	cycles := defaultCycles
	if s := os.Getenv("CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CYCLES=%q: want a number of power cuts", s)
		}
		cycles = n
	} else if os.Getenv("PIER_POWERCUT") != "1" {
		t.Skip("power cuts in a VM take minutes: PIER_POWERCUT=1 or `make powercut CYCLES=N`")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PIER_POWERCUT_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (PIER_POWERCUT_SEED=%d repeats the workload's choices and cut moments, not the guest's timing)", seed, seed)
	h := newHarness(t, seed)

	t.Run("self-test", func(t *testing.T) {
		// Independent trials, each on a fresh disk: write, cut, boot, audit.
		lost := 0
		for i := range selfTestTrials {
			res := h.rolling(t, fmt.Sprintf("nosync-%d", i), h.nosyncInitrd, 1, true)
			switch res.failedCycle {
			case 0: // before any cut: the VM, not pier, is broken
				t.Fatalf("trial %d: the first boot failed: %s", i, strings.Join(res.failures, "; "))
			case 1:
				lost++
			}
			t.Logf("trial %d: %d acknowledgements, lost: %s", i, res.acks, summarize(res.failures))
		}
		if lost == 0 {
			t.Fatalf("the pier_nosync build lost nothing acknowledged in %d power cuts: the harness is not seeing them", selfTestTrials)
		}
		t.Logf("as it must, pier_nosync lost acknowledged writes in %d of %d power cuts", lost, selfTestTrials)
	})
	t.Run("rolling", func(t *testing.T) {
		res := h.rolling(t, "commit", h.initrd, cycles, false)
		if res.failedCycle >= 0 || t.Failed() {
			return // reported where it failed
		}
		t.Logf("%d power cuts survived: %d acknowledgements, %d checks (%d collectable manifests and blobs found collected), scrub clean, in %s",
			cycles, res.acks, res.checked, res.collected, res.took.Round(time.Second))
	})
}

var kinds = []struct {
	name    string
	pattern *regexp.Regexp
}{
	{"blobs lost", regexp.MustCompile(`acknowledged blob .* lost`)},
	{"blobs served empty or wrong", regexp.MustCompile(`blob .*: (HEAD answers|GET)`)},
	{"manifests lost", regexp.MustCompile(`acknowledged manifest .* lost`)},
	{"manifests torn", regexp.MustCompile(`served torn`)},
	{"tags lost or wrong", regexp.MustCompile(`tag .*: (acknowledged|.* before the request)`)},
	{"deletes undone", regexp.MustCompile(`delete .* undone`)},
	{"tags lists or catalog wrong", regexp.MustCompile(`tags list|catalog`)},
	{"boots failed", regexp.MustCompile(`^boot `)},
}

// summarize counts an audit's findings by kind.
func summarize(failures []string) string {
	if len(failures) == 0 {
		return "nothing"
	}
	counts := make([]int, len(kinds))
	other := 0
next:
	for _, f := range failures {
		for i, k := range kinds {
			if k.pattern.MatchString(f) {
				counts[i]++
				continue next
			}
		}
		other++
	}
	var parts []string
	for i, k := range kinds {
		if counts[i] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[i], k.name))
		}
	}
	if other > 0 {
		parts = append(parts, fmt.Sprintf("%d other findings", other))
	}
	return strings.Join(parts, ", ")
}

// harness is what every boot needs: the kernel, the two initramfs (real
// and pier_nosync), and where a failing run leaves its evidence.
type harness struct {
	seed         uint64
	kernel       Kernel
	bootImage    string // the kernel image qemu boots (see Kernel.BootImage)
	initrd       string
	nosyncInitrd string
	work         string // temporary: disks and console logs
	results      string // test/results/powercut: evidence of failures
}

func newHarness(t *testing.T, seed uint64) *harness {
	start := time.Now()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	kdir := os.Getenv("PIER_POWERCUT_KERNEL")
	if kdir == "" {
		kdir = filepath.Join(repo, "bin", "powercut", "kernel")
	}
	k, err := FindKernel(kdir)
	if err != nil {
		t.Fatal(err)
	}
	busybox := "/bin/busybox"
	if err := checkStatic(busybox); err != nil {
		t.Fatalf("%v (the initramfs needs busybox-static)", err)
	}
	h := &harness{seed: seed, kernel: k, work: t.TempDir(), results: filepath.Join(repo, "test", "results", "powercut")}
	h.bootImage = k.BootImage(h.work)
	config, err := GuestConfig(gcDelay, gcInterval)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		tags   string
		initrd *string
	}{{"", &h.initrd}, {"pier_nosync", &h.nosyncInitrd}} {
		bin := buildPier(t, repo, h.work, b.tags)
		*b.initrd = filepath.Join(h.work, "initrd-"+filepath.Base(bin)+".gz")
		if err := WriteInitramfs(*b.initrd, k, busybox, bin, config); err != nil {
			t.Fatalf("initramfs: %v", err)
		}
	}
	t.Logf("kernel %s (booting %s); pier and pier_nosync built, initramfs written in %s",
		filepath.Base(k.Vmlinuz), filepath.Base(h.bootImage), time.Since(start).Round(time.Millisecond))
	return h
}

// buildPier builds a static pier (CGO_ENABLED=0) with the build tags, and
// checks that the binary says whether it is the pier_nosync test build.
func buildPier(t *testing.T, repo, dir, tags string) string {
	name := "pier"
	if tags != "" {
		name += "-" + tags
	}
	out := filepath.Join(dir, name)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w", "-tags", tags, "-o", out, "./cmd/pier")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pier (tags %q): %v\n%s", tags, err, b)
	}
	if err := checkStatic(out); err != nil {
		t.Fatal(err)
	}
	v, err := exec.Command(out, "version").Output()
	if err != nil || strings.Contains(string(v), "pier_nosync") != (tags == "pier_nosync") {
		t.Fatalf("%s version: %q (%v): not the build asked for", name, v, err)
	}
	return out
}

// checkStatic fails for a dynamically linked program: the initramfs has
// no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// result is the outcome of one rolling run.
type result struct {
	failedCycle int // the first cut after which the audit failed; -1: none
	failures    []string
	acks        int
	checked     int
	collected   int // audits found this many collectable manifests and blobs collected
	took        time.Duration
}

// rolling boots pier on a fresh disk, then cycles times: writes, cuts the
// power at a random moment, boots again and audits everything acknowledged
// in all the boots before. After the last audit it checks that collection
// removed what no tag holds, and boots once more to scrub. selfTest: a
// failed audit is the expected outcome; stop there, quietly.
func (h *harness) rolling(t *testing.T, name, initrd string, cycles int, selfTest bool) result {
	start := time.Now()
	res := result{failedCycle: -1}
	dir := filepath.Join(h.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	disk, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Each run its own stream: self-test trials differ from each other.
	rng := rand.New(rand.NewPCG(h.seed, uint64(crc32.ChecksumIEEE([]byte(name)))))
	l := ledger.New("pc", clients)
	var consoles []string
	boot := func(n int, mode string) (*VM, *ociclient.Client) {
		serial := filepath.Join(dir, fmt.Sprintf("console-%02d-%s.log", n, mode))
		consoles = append(consoles, serial)
		vm, err := Boot(BootOptions{Kernel: h.bootImage, Initrd: initrd, Disk: disk, Mode: mode, Serial: serial})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(vm.PowerCut)
		c := ociclient.New(vm.Addr)
		c.HTTP.Timeout = time.Minute // a hung guest fails the run, not the test binary
		return vm, c
	}
	fail := func(cycle int, failures []string) result {
		res.failedCycle, res.failures, res.took = cycle, failures, time.Since(start)
		res.acks = l.Acks()
		if selfTest {
			return res
		}
		t.Errorf("power cut %d of %d (seed %d): %d findings:\n  %s", cycle, cycles, h.seed, len(failures), strings.Join(failures, "\n  "))
		h.evidence(t, name, l, consoles)
		return res
	}

	for n := 0; ; n++ {
		l.SetRound(n)
		t0 := time.Now()
		vm, c := boot(n, "serve")
		// Up with no manual repair: journal replay is the kernel's, the rest
		// must be pier's.
		if err := vm.WaitReady(2 * time.Minute); err != nil {
			vm.PowerCut()
			return fail(n, []string{fmt.Sprintf("boot %d: %v", n, err)})
		}
		booted := time.Since(t0)
		audit := time.Duration(0)
		if n > 0 {
			t0 := time.Now()
			rep := l.Check(c, ledger.CheckOptions{GC: true})
			res.checked += rep.Checked
			res.collected += rep.Collected
			if err := l.ProbePush(c, h.seed+uint64(n), true); err != nil {
				rep.Failures = append(rep.Failures, fmt.Sprintf("a new push after the cut failed: %v", err))
			}
			audit = time.Since(t0)
			if len(rep.Failures) > 0 {
				vm.PowerCut()
				return fail(n, rep.Failures)
			}
		}
		if n == cycles && selfTest {
			break // it lost nothing: the caller says so
		}
		if n == cycles {
			// Everything is older than gcDelay now: what no tag holds must
			// be collected within a few passes.
			t0 := time.Now()
			rep := l.CheckCollected(c, 30*time.Second)
			res.checked += rep.Checked
			vm.PowerCut()
			t.Logf("%s boot %2d: up in %5.1fs, audit %5.1fs, all garbage collected after %.1fs", name, n, booted.Seconds(), audit.Seconds(), time.Since(t0).Seconds())
			if len(rep.Failures) > 0 {
				return fail(n, rep.Failures)
			}
			if f := h.scrub(t, boot, n+1); f != "" {
				return fail(n+1, []string{f})
			}
			break
		}

		// Write until the power goes, at a random moment.
		cut := time.Duration(1000+rng.IntN(7000)) * time.Millisecond
		seed := rng.Uint64()
		stats := make(chan ledger.Stats, 1)
		go func() {
			stats <- l.Run(context.Background(), c, ledger.Options{Seed: seed, Round: n, GC: true})
		}()
		var st ledger.Stats
		select {
		case st = <-stats:
			vm.PowerCut()
			return fail(n, append(st.Errors, fmt.Sprintf("boot %d: the workload stopped %s before the cut: the guest died", n, cut)))
		case <-time.After(cut):
			vm.PowerCut()
			st = <-stats
		}
		if len(st.Errors) > 0 {
			return fail(n, st.Errors)
		}
		t.Logf("%s boot %2d: up in %5.1fs, audit %5.1fs, then %3d acks (%d manifests re-sent after collection) in %4.1fs before the cut",
			name, n, booted.Seconds(), audit.Seconds(), st.Acks, st.Retries, cut.Seconds())
	}
	res.acks, res.took = l.Acks(), time.Since(start)
	if os.Getenv("PIER_POWERCUT_KEEP") == "1" {
		h.keep(name, l, consoles)
	}
	return res
}

var scrubExit = regexp.MustCompile(`PIER-SCRUB-EXIT=(\d+)`)

// scrub boots with pier.mode=scrub: /init runs `pier scrub` (pier is not
// serving, so the offline pass may run) and prints its exit code.
func (h *harness) scrub(t *testing.T, boot func(int, string) (*VM, *ociclient.Client), n int) string {
	t0 := time.Now()
	vm, _ := boot(n, "scrub")
	if err := vm.Wait(5 * time.Minute); err != nil {
		return fmt.Sprintf("scrub boot: %v", err)
	}
	console := vm.Console()
	m := scrubExit.FindStringSubmatch(console)
	if m == nil {
		return "scrub boot: no exit code on the console"
	}
	summary, notOK := "", []string{}
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimSpace(line)
		switch f := strings.Fields(line); {
		case strings.HasPrefix(line, "scrub:"):
			summary = line
		case slices.ContainsFunc(f, func(w string) bool { return w == "corrupt" || w == "missing" || w == "unreferenced" }):
			notOK = append(notOK, line) // a row of the table: repository, reference, status, blob
		}
	}
	if len(notOK) > 0 {
		summary += "\n  " + strings.Join(notOK, "\n  ")
	}
	if m[1] != "0" {
		return fmt.Sprintf("pier scrub exited %s after the last cut: %s", m[1], summary)
	}
	t.Logf("scrub boot: %s (%s)", summary, time.Since(t0).Round(100*time.Millisecond))
	return ""
}

// evidence prints and keeps what a failing run needs to be understood:
// the seed, every console log, and the acknowledgement list.
func (h *harness) evidence(t *testing.T, name string, l *ledger.Ledger, consoles []string) {
	dir := h.keep(name, l, consoles)
	// The last two boots' consoles: the one that was cut and the one that
	// audited.
	for _, c := range consoles[max(0, len(consoles)-2):] {
		b, _ := os.ReadFile(c)
		t.Logf("console %s:\n%s", filepath.Base(c), b)
	}
	t.Logf("seed %d; acknowledgements, in order:\n%s", h.seed, l.Journal())
	t.Logf("kept in %s", dir)
}

// keep copies a run's acknowledgement list and console logs to
// test/results/powercut/<name>-seed<seed>/ and returns that directory.
func (h *harness) keep(name string, l *ledger.Ledger, consoles []string) string {
	dir := filepath.Join(h.results, fmt.Sprintf("%s-seed%d", name, h.seed))
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "acknowledgements.txt"), []byte(l.Journal()), 0o644)
	for _, c := range consoles {
		if b, err := os.ReadFile(c); err == nil {
			os.WriteFile(filepath.Join(dir, filepath.Base(c)), b, 0o644)
		}
	}
	return dir
}
