// Package cross checks the board builds of `make cross` (dist/pier-linux-
// amd64, -arm64, -armv7, -armv6): each is a static executable for its
// machine and within its size budget, the ARM ones run on the CPUs they are
// for under qemu-user, the arm64 and armv7 ones serve a skopeo push and
// pull from the host, and the store package's tests pass on armv7 (32-bit:
// 64-bit atomics alignment, bbolt's mmap limits).
//
// `make e2e` builds dist/ first and passes PIER_DIST and PIER_VERSION.
package cross

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/elfbin"
	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/testimage"
	"github.com/pier-oci/pier/test/internal/tool"
)

const mib = 1 << 20

// builds are the binaries of `make cross`, their ELF machine, their size
// budget (zot's minimal build is 76 MiB on arm64, 68 on armv7), and how to
// run them on the CPU they are for: qemu-user and its -cpu model.
var builds = []struct {
	name    string
	machine elf.Machine
	maxSize int64
	qemu    []string // nil: runs natively
	goarch  string   // what `pier version` reports
}{
	{"amd64", elf.EM_X86_64, 20 * mib, nil, "linux/amd64"},
	{"arm64", elf.EM_AARCH64, 20 * mib, []string{"qemu-aarch64-static", "-cpu", "cortex-a53"}, "linux/arm64"}, // Pi 3, 4, Zero 2 W
	{"armv7", elf.EM_ARM, 18 * mib, []string{"qemu-arm-static", "-cpu", "cortex-a7"}, "linux/arm"},            // Pi 2, or a 32-bit OS on a later Pi
	{"armv6", elf.EM_ARM, 18 * mib, []string{"qemu-arm-static", "-cpu", "arm1176"}, "linux/arm"},              // Pi Zero, Pi 1
}

func dist(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("PIER_DIST")
	if dir == "" {
		t.Fatal("PIER_DIST is not set; run the cross tests with `make e2e` (it runs `make cross` first)")
	}
	p := filepath.Join(dir, "pier-linux-"+name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v; run `make cross`", err)
	}
	return p
}

// command is argv running bin on its CPU.
func command(t testing.TB, qemu []string, bin string, args ...string) []string {
	t.Helper()
	if qemu == nil {
		return append([]string{bin}, args...)
	}
	return append(append([]string{tool.Path(t, qemu[0])}, append(qemu[1:], bin)...), args...)
}

// TestBuilds checks that each binary is static for its machine, within its
// size budget, and prints its version on the CPU it is for.
func TestBuilds(t *testing.T) {
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			bin := dist(t, b.name)
			if err := elfbin.CheckStatic(bin, b.machine); err != nil {
				t.Error(err)
			}
			fi, err := os.Stat(bin)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("pier-linux-%s: %d bytes (%.2f MiB; budget %d MiB)", b.name, fi.Size(), float64(fi.Size())/mib, b.maxSize/mib)
			if fi.Size() > b.maxSize {
				t.Errorf("pier-linux-%s is %.2f MiB, over its %d MiB budget", b.name, float64(fi.Size())/mib, b.maxSize/mib)
			}

			argv := command(t, b.qemu, bin, "version")
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = t.TempDir()
			out, err := cmd.CombinedOutput()
			want := fmt.Sprintf("pier %s ", os.Getenv("PIER_VERSION"))
			if err != nil || !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), " "+b.goarch) {
				t.Errorf("%s: %v\n%s\nwant %q... %s", strings.Join(argv, " "), err, out, want, b.goarch)
			}
		})
	}
}

// TestARMv7NeedsARMv7 checks that the armv7 build really is GOARM=7: an
// ARMv6 CPU (a Pi Zero's ARM1176) cannot run it, which is why armv6 exists.
func TestARMv7NeedsARMv7(t *testing.T) {
	argv := command(t, []string{"qemu-arm-static", "-cpu", "arm1176"}, dist(t, "armv7"), "version")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = t.TempDir() // qemu may leave a core file
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGILL {
		t.Errorf("the armv7 build on an ARM1176 (ARMv6): %v, want SIGILL (built with GOARM<7?)\n%s", err, out)
	}
}

// TestServeUnderQEMU serves from the arm64 and armv7 binaries under qemu-user
// on 127.0.0.1 and copies an image into each and back with skopeo on the
// host: the manifest comes back with the same digest and every blob
// byte for byte.
func TestServeUnderQEMU(t *testing.T) {
	image := testimage.NewImage("cross", 2, testimage.Platform{OS: "linux", Architecture: "arm"})
	src := t.TempDir()
	if err := testimage.WriteLayout(src, map[string]testimage.Content{"v1": image}); err != nil {
		t.Fatal(err)
	}
	for _, b := range builds[1:3] {
		t.Run(b.name, func(t *testing.T) {
			// pierproc starts $PIER_BIN: make it a script running the
			// board binary under qemu (exec: signals reach qemu, which
			// passes them on to pier).
			wrapper := filepath.Join(t.TempDir(), "pier")
			script := fmt.Sprintf("#!/bin/sh\nexec %s \"$@\"\n", strings.Join(command(t, b.qemu, dist(t, b.name)), " "))
			if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PIER_BIN", wrapper)
			srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"commit": true, "dedupe": true}})

			skopeo := tool.Runner{Env: tool.Env(t), Timeout: time.Minute}
			remote := "docker://" + srv.Addr + "/cross/" + b.name + ":v1"
			skopeo.Run(t, "skopeo", "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":v1", remote)
			back := t.TempDir()
			skopeo.Run(t, "skopeo", "--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false", remote, "oci:"+back+":v1")

			got, err := testimage.Layout{Dir: back}.Tag("v1")
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != image.Manifest.Digest() {
				t.Errorf("copied back as %s, want %s", got.Digest, image.Manifest.Digest())
			}
			if err := testimage.Compare(testimage.Layout{Dir: back}, image); err != nil {
				t.Errorf("blobs copied back: %v", err)
			}
			if code := srv.Stop(t); code != 0 {
				t.Errorf("pier under %s exited %d on SIGTERM\n%s", b.qemu[0], code, srv.Stderr())
			}
		})
	}
}

// TestStoreOnARMv7 runs the store packages' unit tests built for armv7
// under qemu-arm-static.
func TestStoreOnARMv7(t *testing.T) {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	qemu := tool.Path(t, "qemu-arm-static")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "test", "-count=1", "-timeout=5m", "-exec", qemu, "./store/...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=7", "CGO_ENABLED=0")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("GOARCH=arm GOARM=7 go test -exec qemu-arm-static ./store/... (%v):\n%s", time.Since(start).Round(time.Second), out)
	if err != nil {
		t.Errorf("store tests fail on armv7: %v", err)
	}
}
