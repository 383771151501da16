// Package powercut cuts the power under a real pier: pier runs in a qemu
// VM (software emulation, a Debian kernel and a busybox initramfs) on a
// qcow2 data disk opened with cache=none, and the harness SIGKILLs qemu.
// Whatever the guest had not flushed — its page cache, and writes qemu
// holds for a flush that never came — is lost, as on a real power cut.
// The test (powercut_test.go) boots, writes, cuts and boots again, and
// audits everything pier acknowledged with test/internal/ledger.
package powercut

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// VM is one boot of the guest.
type VM struct {
	Addr   string // 127.0.0.1:port, forwarded to pier in the guest
	Serial string // file the guest's console is written to
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // qemu's exit, once exited is closed
}

// BootOptions name what to boot.
type BootOptions struct {
	Kernel, Initrd, Disk string
	Mode                 string // pier.mode: serve or scrub
	Serial               string // console log file
}

// Boot starts qemu. It does not wait for pier: see WaitReady.
func Boot(o BootOptions) (*VM, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	v := &VM{Addr: fmt.Sprintf("127.0.0.1:%d", port), Serial: o.Serial, exited: make(chan struct{})}
	v.cmd = exec.Command(tool("qemu-system-x86_64"),
		// No KVM here: TCG, one CPU, and the CPU model with every feature.
		"-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "512",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", o.Kernel, "-initrd", o.Initrd,
		"-append", "console=ttyS0 panic=-1 pier.mode="+o.Mode,
		"-serial", "file:"+o.Serial,
		// cache=none: qemu opens the image O_DIRECT, so what the guest has
		// not flushed is not in the host's page cache either and dies with
		// qemu.
		"-drive", "file="+o.Disk+",format=qcow2,if=virtio,cache=none",
		// restrict=on: the guest reaches nothing; the host reaches pier
		// only through this one forwarded loopback port.
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:%d-:5000", port),
	)
	var stderr strings.Builder
	v.cmd.Stderr = &stderr
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() {
		err := v.cmd.Wait()
		if s := strings.TrimSpace(stderr.String()); s != "" {
			err = fmt.Errorf("%v: %s", err, s)
		}
		v.err = err
		close(v.exited)
	}()
	return v, nil
}

// WaitReady waits until pier in the guest answers /v2/, and fails early
// if qemu exits (the guest powered off: pier or /init gave up).
func (v *VM) WaitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Short attempts: a connection qemu accepts before the guest listens
	// hangs rather than failing, and would hold up a long one.
	client := &http.Client{Timeout: 500 * time.Millisecond}
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+v.Addr+"/v2/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-v.exited:
			return fmt.Errorf("the VM stopped before pier answered (qemu: %v)", v.err)
		case <-ctx.Done():
			return fmt.Errorf("pier did not answer /v2/ within %s", timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PowerCut kills qemu with SIGKILL: no flush, no clean close of the
// image. (The monitor's quit would close it cleanly and hide losses.)
func (v *VM) PowerCut() {
	v.cmd.Process.Kill()
	<-v.exited
}

// Wait waits for the guest to power itself off.
func (v *VM) Wait(timeout time.Duration) error {
	select {
	case <-v.exited:
		var ee *exec.ExitError
		if v.err != nil && !errors.As(v.err, &ee) {
			return v.err
		}
		return nil
	case <-time.After(timeout):
		v.PowerCut()
		return fmt.Errorf("the VM did not power off within %s", timeout)
	}
}

// Console is what the guest printed so far.
func (v *VM) Console() string {
	b, _ := os.ReadFile(v.Serial)
	return string(b)
}

// freePort asks the kernel for a free loopback port for qemu to forward.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
