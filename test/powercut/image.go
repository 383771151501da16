package powercut

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Kernel is a Debian kernel package extracted with dpkg-deb -x (by
// test/setup.sh): boot/vmlinuz-<release> and lib/modules/<release>/.
type Kernel struct {
	Vmlinuz string
	Modules string // lib/modules/<release>
}

// FindKernel finds the one kernel extracted under dir.
func FindKernel(dir string) (Kernel, error) {
	m, _ := filepath.Glob(filepath.Join(dir, "*", "boot", "vmlinuz-*"))
	if len(m) != 1 {
		return Kernel{}, fmt.Errorf("want one kernel under %s (run test/setup.sh), found %d", dir, len(m))
	}
	root := filepath.Dir(filepath.Dir(m[0]))
	release := strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-")
	k := Kernel{Vmlinuz: m[0], Modules: filepath.Join(root, "lib", "modules", release)}
	if _, err := os.Stat(k.Modules); err != nil {
		return Kernel{}, fmt.Errorf("kernel %s has no modules: %w", release, err)
	}
	return k, nil
}

// BootImage returns the kernel image to boot: the ELF vmlinux inside the
// bzImage, written to dir, when it can be unpacked (Debian compresses it
// with xz; qemu boots the ELF through its PVH entry point), which saves
// the seconds the emulated CPU takes to decompress it on every boot;
// otherwise the bzImage itself.
func (k Kernel) BootImage(dir string) string {
	bz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return k.Vmlinuz
	}
	var elfImage []byte
	if i := bytes.Index(bz, []byte("\xfd7zXZ\x00")); i >= 0 {
		cmd := exec.Command(tool("xz"), "-dc")
		cmd.Stdin = bytes.NewReader(bz[i:])
		// xz complains about the bytes after the stream (the bzImage's
		// trailer) but has written the whole kernel by then.
		elfImage, _ = cmd.Output()
	} else if i := bytes.Index(bz, []byte("\x1f\x8b\x08")); i >= 0 {
		if zr, err := gzip.NewReader(bytes.NewReader(bz[i:])); err == nil {
			zr.Multistream(false)
			elfImage, _ = io.ReadAll(zr)
		}
	}
	f, err := elf.NewFile(bytes.NewReader(elfImage))
	if err != nil {
		return k.Vmlinuz
	}
	pvh := false // the Xen ELF note (type 18) that qemu's PVH boot looks for
	for _, p := range f.Progs {
		if p.Type == elf.PT_NOTE {
			b, _ := io.ReadAll(p.Open())
			pvh = pvh || bytes.Contains(b, []byte("Xen\x00"))
		}
	}
	out := filepath.Join(dir, "vmlinux")
	if !pvh || os.WriteFile(out, elfImage, 0o644) != nil {
		return k.Vmlinuz
	}
	return out
}

// guestModules are the drivers the guest needs that Debian builds as
// modules: the virtio disk and network, ext4, and crc32c, which ext4 and
// jbd2 load by name (a soft dependency modules.dep does not list).
var guestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4"}

// ModuleOrder lists the module files to insmod, dependencies first,
// computed from modules.dep (made with depmod -b when the package, which
// leaves that to its postinst, did not ship it) rather than hard-coded,
// so a newer kernel with other dependencies still boots.
func (k Kernel) ModuleOrder() ([]string, error) {
	depFile := filepath.Join(k.Modules, "modules.dep")
	if _, err := os.Stat(depFile); err != nil {
		base := filepath.Dir(filepath.Dir(filepath.Dir(k.Modules)))
		if out, err := exec.Command(tool("depmod"), "-b", base, filepath.Base(k.Modules)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("depmod: %v\n%s", err, out)
		}
	}
	f, err := os.Open(depFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{} // module name -> [its file, its dependencies' files...]
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if ok {
			deps[moduleName(mod)] = append([]string{mod}, strings.Fields(rest)...)
		}
	}
	builtin, _ := os.ReadFile(filepath.Join(k.Modules, "modules.builtin"))
	var order []string
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		d, ok := deps[name]
		if !ok {
			if bytes.Contains(builtin, []byte("/"+name+".ko")) || bytes.Contains(builtin, []byte("/"+strings.ReplaceAll(name, "_", "-")+".ko")) {
				return nil // built into this kernel
			}
			return fmt.Errorf("module %s is neither in modules.dep nor built in", name)
		}
		for _, dep := range d[1:] {
			if err := visit(moduleName(dep)); err != nil {
				return err
			}
		}
		if !strings.HasSuffix(d[0], ".ko") {
			return fmt.Errorf("module %s is compressed (%s); busybox insmod needs plain .ko", name, d[0])
		}
		order = append(order, d[0])
		return nil
	}
	for _, m := range guestModules {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleName is the kernel's name for a module file: kernel/lib/crc16.ko
// is crc16, and dashes are underscores.
func moduleName(path string) string {
	base := filepath.Base(path)
	base = base[:strings.Index(base, ".ko")]
	return strings.ReplaceAll(base, "-", "_")
}

// initScript is the guest's /init. It loads the drivers, mounts the data
// disk (/dev/vda, ext4, whose journal replays after a cut), brings up the
// network qemu forwards to, and runs pier by the kernel command line's
// pier.mode: serve, or scrub, whose exit code it prints on the console.
// poweroff -f ends the VM at once, like the power cuts, but only after pier
// exited: a scrub's quarantine moves are fsynced by pier itself.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
say() { echo "pier-init [$(cut -d' ' -f1 /proc/uptime)s]: $*"; }
die() { say "$*"; poweroff -f; }
say "loading $(wc -l </modules.order) modules"
for m in $(cat /modules.order); do insmod "/$m" || die "insmod $m failed"; done
n=0
while [ ! -b /dev/vda ] || [ ! -e /sys/class/net/eth0 ]; do
	n=$((n+1)); [ $n -gt 300 ] && die "no /dev/vda or eth0"
	sleep 0.1
done
say "mounting /dev/vda"
mount -t ext4 /dev/vda /data || die "cannot mount /dev/vda"
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
mode=serve
for a in $(cat /proc/cmdline); do
	case "$a" in pier.mode=*) mode="${a#pier.mode=}" ;; esac
done
say "$(/pier version)"
case "$mode" in
serve) say "serving"; /pier serve /pier.json; say "pier serve exited with $?" ;;
scrub) /pier scrub /pier.json; say "PIER-SCRUB-EXIT=$?" ;;
*) say "unknown pier.mode $mode" ;;
esac
umount /data
poweroff -f
`

// GuestConfig is pier's config in the guest: every write fsynced
// (commit), dedupe on, and collection every few seconds with a short
// gcDelay, so passes run, and are cut, during the workload.
func GuestConfig(gcDelay, gcInterval string) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"distSpecVersion": "1.1.1",
		"storage": map[string]any{
			"rootDirectory": "/data/pier", "commit": true, "dedupe": true,
			"gc": true, "gcDelay": gcDelay, "gcInterval": gcInterval,
		},
		"http": map[string]any{"address": "0.0.0.0", "port": "5000"},
		"log":  map[string]any{"level": "warn"},
	}, "", "  ")
}

// WriteInitramfs writes a gzipped newc cpio archive: busybox, the kernel
// modules, pier, its config and /init. Written here rather than with
// cpio(1) so that no step needs root or a device node.
func WriteInitramfs(dst string, k Kernel, busybox, pier string, config []byte) error {
	mods, err := k.ModuleOrder()
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	gz, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	a := &cpioWriter{w: gz}
	for _, d := range []string{"bin", "dev", "proc", "sys", "data", "modules"} {
		a.dir(d)
	}
	a.file("init", 0o755, []byte(initScript))
	a.file("pier.json", 0o644, config)
	for _, f := range []struct{ src, dst string }{{busybox, "bin/busybox"}, {pier, "pier"}} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return err
		}
		a.file(f.dst, 0o755, b)
	}
	var order []string
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(k.Modules, m))
		if err != nil {
			return err
		}
		name := "modules/" + filepath.Base(m)
		a.file(name, 0o644, b)
		order = append(order, name)
	}
	a.file("modules.order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	a.trailer()
	if a.err != nil {
		return a.err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return out.Close()
}

// cpioWriter writes the "newc" format the kernel unpacks an initramfs from.
type cpioWriter struct {
	w   interface{ Write([]byte) (int, error) }
	ino int
	n   int64
	err error
}

func (a *cpioWriter) write(b []byte) {
	if a.err == nil {
		_, a.err = a.w.Write(b)
		a.n += int64(len(b))
	}
}

func (a *cpioWriter) pad() {
	if r := a.n % 4; r != 0 {
		a.write(make([]byte, 4-r))
	}
}

func (a *cpioWriter) entry(name string, mode uint32, data []byte) {
	a.ino++
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	a.write(fmt.Appendf(nil, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0))
	a.write(append([]byte(name), 0))
	a.pad()
	a.write(data)
	a.pad()
}

func (a *cpioWriter) dir(name string)                         { a.entry(name, 0o040755, nil) }
func (a *cpioWriter) file(name string, perm uint32, b []byte) { a.entry(name, 0o100000|perm, b) }
func (a *cpioWriter) trailer()                                { a.entry("TRAILER!!!", 0, nil) }

// NewDisk makes an empty ext4 filesystem in a qcow2 image: mkfs.ext4 on a
// sparse file (no root needed), then converted. qcow2 matters: with
// cache=none its unflushed writes are lost with qemu, like a disk's
// volatile cache on a power cut.
func NewDisk(dir string) (string, error) {
	raw := filepath.Join(dir, "data.raw")
	img := filepath.Join(dir, "data.qcow2")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Truncate(raw, 1<<30); err != nil {
		return "", err
	}
	defer os.Remove(raw)
	// Inode tables and journal initialised now, not by a background
	// kernel thread competing with pier for the one emulated CPU.
	for _, c := range [][]string{
		{tool("mkfs.ext4"), "-q", "-F", "-L", "pier", "-E", "lazy_itable_init=0,lazy_journal_init=0", raw},
		{tool("qemu-img"), "convert", "-f", "raw", "-O", "qcow2", raw, img},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %v\n%s", filepath.Base(c[0]), err, out)
		}
	}
	return img, nil
}

// tool finds a program on PATH or in the sbin directories, which a
// non-login root shell may not have on PATH.
func tool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return name
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
