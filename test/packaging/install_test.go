package packaging

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// marker is written into /var/lib/pier by the install tests: a pier left
// installed by a test run that was killed can be purged by the next one,
// and a real install (no marker) never is.
const marker = "/var/lib/pier/.pier-packaging-test"

// installed are the files the package puts on the system.
var installed = []string{
	"/usr/bin/pier",
	"/usr/lib/systemd/system/pier.service",
	"/usr/lib/systemd/system/pier.socket",
	"/usr/lib/sysusers.d/pier.conf",
	"/etc/pier/config.json",
}

// TestInstall installs the amd64 package with dpkg (systemd is not PID 1
// here, as in a container or a board being imaged), checks the user,
// files, state directory and unit, removes it (config and data stay),
// installs it again over the kept config, and purges it (nothing stays).
// The user is made by systemd-sysusers from sysusers.d/pier.conf.
func TestInstall(t *testing.T) {
	deb := prepare(t)

	install(t, deb)
	checkInstalled(t)
	wantStatus(t, "install ok installed")

	// Enabled for the next boot, as debhelper does, socket left to the
	// admin.
	wantLink(t, "/etc/systemd/system/multi-user.target.wants/pier.service", "/usr/lib/systemd/system/pier.service")
	wantMissing(t, "/etc/systemd/system/sockets.target.wants/pier.socket")
	verify(t, "pier.service", "pier.socket")

	// The packaged pier, as the pier user, can use its state directory.
	run(t, "runuser", "-u", "pier", "--", "/usr/bin/pier", "gc", "/etc/pier/config.json")
	wantOwner(t, "/var/lib/pier/.pier", "pier")

	// An admin's edit of the config, and a repository's data.
	edited := strings.Replace(readFile(t, "/etc/pier/config.json"), `"level": "info"`, `"level": "warn"`, 1)
	if edited == readFile(t, "/etc/pier/config.json") {
		t.Fatal(`the packaged config has no "level": "info" to edit`)
	}
	writeFile(t, "/etc/pier/config.json", edited)
	writeFile(t, "/var/lib/pier/data", "blobs")

	// remove: the program goes, the conffile, the data and the user stay.
	run(t, "dpkg", "-r", "pier")
	wantStatus(t, "deinstall ok config-files")
	for _, p := range installed[:4] {
		wantMissing(t, p)
	}
	if got := readFile(t, "/etc/pier/config.json"); got != edited {
		t.Errorf("dpkg -r changed the edited conffile")
	}
	if readFile(t, "/var/lib/pier/data") != "blobs" {
		t.Errorf("dpkg -r lost /var/lib/pier/data")
	}
	if _, err := user.Lookup("pier"); err != nil {
		t.Errorf("dpkg -r removed the pier user: %v", err)
	}

	// Installed again: the edited config and the data are kept, and the
	// unit that remove masked is unmasked and enabled.
	run(t, "dpkg", "-i", deb)
	checkInstalled(t)
	wantMissing(t, "/etc/systemd/system/pier.service")
	wantLink(t, "/etc/systemd/system/multi-user.target.wants/pier.service", "/usr/lib/systemd/system/pier.service")
	if got := readFile(t, "/etc/pier/config.json"); got != edited {
		t.Errorf("reinstall replaced the edited conffile")
	}
	if readFile(t, "/var/lib/pier/data") != "blobs" {
		t.Errorf("reinstall lost /var/lib/pier/data")
	}

	run(t, "dpkg", "--purge", "pier")
	wantClean(t)
}

// TestInstallWithoutSysusers installs the package on a system without
// systemd-sysusers (sysvinit, a minimal container): postinst makes the same
// user with useradd.
func TestInstallWithoutSysusers(t *testing.T) {
	deb := prepare(t)
	hideSysusers(t)

	install(t, deb)
	checkInstalled(t)
	run(t, "dpkg", "--purge", "pier")
	wantClean(t)
}

// A registry on a disk of its own mounted at /var/lib/pier (an SSD on a
// Pi): purge completes, removes the user, and leaves the disk's data.
func TestPurgeWithAMountedStateDirectory(t *testing.T) {
	deb := prepare(t)

	install(t, deb)
	disk := t.TempDir()
	writeFile(t, filepath.Join(disk, "registry"), "blobs")
	run(t, "mount", "--bind", disk, "/var/lib/pier")
	t.Cleanup(func() { exec.Command("umount", "/var/lib/pier").Run() })

	run(t, "dpkg", "--purge", "pier")
	if _, err := user.Lookup("pier"); err == nil {
		t.Error("purge left the pier user")
	}
	if readFile(t, filepath.Join(disk, "registry")) != "blobs" {
		t.Error("purge emptied the disk mounted at /var/lib/pier")
	}
	wantMissing(t, "/usr/bin/pier")
}

// sysusersDiversion moves systemd-sysusers aside for the test.
const (
	sysusers          = "/usr/bin/systemd-sysusers"
	sysusersDiversion = "/usr/bin/systemd-sysusers.pier-test"
)

// hideSysusers diverts systemd-sysusers away, with dpkg-divert so that
// dpkg knows, and puts it back when the test ends.
func hideSysusers(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(sysusers); err != nil {
		t.Logf("%s is already absent: %v", sysusers, err)
		return
	}
	run(t, "dpkg-divert", "--local", "--rename", "--divert", sysusersDiversion, "--add", sysusers)
	t.Cleanup(func() { restoreSysusers(t) })
	if _, err := os.Stat(sysusers); err == nil {
		t.Fatalf("%s is still there after dpkg-divert", sysusers)
	}
}

func restoreSysusers(t testing.TB) {
	t.Helper()
	run(t, "dpkg-divert", "--local", "--rename", "--divert", sysusersDiversion, "--remove", sysusers)
	if _, err := os.Stat(sysusers); err != nil {
		t.Errorf("%s was not restored: %v", sysusers, err)
	}
}

// requireInstallable stops the test unless this machine is one to install
// packages on: root, and no systemd as PID 1 (postinst would start pier on
// port 5000 for real). On CI, which is such a machine, that is a failure.
func requireInstallable(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "dpkg -i needs root"
	} else if _, err := os.Stat("/run/systemd/system"); err == nil {
		why = "systemd is PID 1 here: postinst would start pier on port 5000"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the install tests cannot run: %s (CI runs as root in a container)", why)
	}
	t.Skipf("%s: run the install tests as root in a container (CI does)", why)
}

// prepare gets the machine ready for an install test: the amd64 package,
// no pier installed, and a purge when the test ends. It returns the
// package.
func prepare(t *testing.T) string {
	t.Helper()
	deb := debPath(t, "amd64")
	requireInstallable(t)
	clean(t)
	t.Cleanup(func() { purge(t) })
	return deb
}

// install installs deb and marks the installation as this test's, so a
// killed run's leftovers are purged by the next one.
func install(t *testing.T, deb string) {
	t.Helper()
	run(t, "dpkg", "-i", deb)
	writeFile(t, marker, "")
}

// clean makes sure no pier is installed before the test: one left by a
// killed run of this test (marked) is purged, a real one fails the test.
func clean(t *testing.T) {
	t.Helper()
	if out := try(t, "dpkg-divert", "--list", sysusers); strings.Contains(string(out.Stdout), sysusersDiversion) {
		restoreSysusers(t)
	}
	status := packageStatus(t)
	_, err := os.Stat(marker)
	switch {
	case status == "" && err != nil:
		if _, err := os.Stat("/var/lib/pier"); err == nil {
			t.Fatal("/var/lib/pier exists but pier is not installed: not this test's; remove it to run the install tests")
		}
		if _, err := user.Lookup("pier"); err == nil {
			t.Fatal("a user pier exists but pier is not installed: not this test's; remove it to run the install tests")
		}
	case err == nil:
		t.Logf("purging a pier left by an earlier run (%s)", status)
		purge(t)
	default:
		t.Fatalf("pier is installed on this machine (%s) and not by this test: the test would purge it and /var/lib/pier; run it elsewhere", status)
	}
}

func purge(t testing.TB) {
	t.Helper()
	if packageStatus(t) != "" {
		run(t, "dpkg", "--purge", "pier")
	}
	os.RemoveAll("/var/lib/pier") // only if purge failed
}

// packageStatus is dpkg's status of pier, "" when it is not known or fully
// purged.
func packageStatus(t testing.TB) string {
	t.Helper()
	res := try(t, "dpkg-query", "-W", "-f", "${Status}", "pier")
	s := strings.TrimSpace(string(res.Stdout))
	if res.Err != nil || s == "unknown ok not-installed" || s == "purge ok not-installed" {
		return ""
	}
	return s
}

func wantStatus(t *testing.T, want string) {
	t.Helper()
	if got := packageStatus(t); got != want {
		t.Errorf("dpkg status of pier: %q, want %q", got, want)
	}
}

// checkInstalled checks the installed files, the user and /var/lib/pier.
func checkInstalled(t *testing.T) {
	t.Helper()
	for _, p := range installed {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	u, err := user.Lookup("pier")
	if err != nil {
		t.Fatalf("no pier user: %v", err)
	}
	g, err := user.LookupGroup("pier")
	if err != nil {
		t.Fatalf("no pier group: %v", err)
	}
	if u.Gid != g.Gid || u.HomeDir != "/var/lib/pier" {
		t.Errorf("pier user: gid %s (group pier is %s), home %s; want group pier, home /var/lib/pier", u.Gid, g.Gid, u.HomeDir)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid == 0 || uid >= 1000 {
		t.Errorf("pier user: uid %s, want a system uid (1-999)", u.Uid)
	}
	passwd := strings.TrimSpace(run(t, "getent", "passwd", "pier"))
	if !strings.HasSuffix(passwd, ":/usr/sbin/nologin") {
		t.Errorf("pier user: %q, want the shell /usr/sbin/nologin", passwd)
	}
	fi, err := os.Stat("/var/lib/pier")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != os.ModeDir|0o750 {
		t.Errorf("/var/lib/pier: mode %v, want drwxr-x---", fi.Mode())
	}
	wantOwner(t, "/var/lib/pier", "pier")
}

func wantOwner(t *testing.T, path, name string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if strconv.Itoa(int(st.Uid)) != u.Uid || strconv.Itoa(int(st.Gid)) != u.Gid {
		t.Errorf("%s: owner %d:%d, want %s (%s:%s)", path, st.Uid, st.Gid, name, u.Uid, u.Gid)
	}
}

// wantLink checks that link is a symlink resolving to target.
func wantLink(t *testing.T, link, target string) {
	t.Helper()
	got, err := filepath.EvalSymlinks(link)
	if err != nil {
		t.Errorf("%s: %v", link, err)
		return
	}
	want, err := filepath.EvalSymlinks(target)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("%s resolves to %s, want %s", link, got, want)
	}
}

func wantMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("%s exists, want it gone", path)
	}
}

// wantClean checks that a purge left nothing of pier: no files, no data, no
// user, no unit state.
func wantClean(t *testing.T) {
	t.Helper()
	if s := packageStatus(t); s != "" {
		t.Errorf("dpkg still knows pier after purge: %s", s)
	}
	for _, p := range append(installed, "/etc/pier", "/var/lib/pier") {
		wantMissing(t, p)
	}
	if _, err := user.Lookup("pier"); err == nil {
		t.Error("the pier user is still there after purge")
	}
	if _, err := user.LookupGroup("pier"); err == nil {
		t.Error("the pier group is still there after purge")
	}
	for _, dir := range []string{"/etc/systemd/system", "/var/lib/systemd/deb-systemd-helper-enabled", "/var/lib/systemd/deb-systemd-helper-masked"} {
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(filepath.Base(p), "pier.") {
				t.Errorf("left after purge: %s", p)
			}
			return nil
		})
	}
}
