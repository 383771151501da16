package packaging

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pier-oci/pier/test/internal/elfbin"
)

// contents is the exact listing of every package: mode, owner and path.
var contents = []string{
	"drwxr-xr-x root/root ./etc/",
	"drwxr-xr-x root/root ./etc/pier/",
	"-rw-r--r-- root/root ./etc/pier/config.json",
	"drwxr-xr-x root/root ./usr/",
	"drwxr-xr-x root/root ./usr/bin/",
	"-rwxr-xr-x root/root ./usr/bin/pier",
	"drwxr-xr-x root/root ./usr/lib/",
	"drwxr-xr-x root/root ./usr/lib/systemd/",
	"drwxr-xr-x root/root ./usr/lib/systemd/system/",
	"-rw-r--r-- root/root ./usr/lib/systemd/system/pier.service",
	"-rw-r--r-- root/root ./usr/lib/systemd/system/pier.socket",
	"drwxr-xr-x root/root ./usr/lib/sysusers.d/",
	"-rw-r--r-- root/root ./usr/lib/sysusers.d/pier.conf",
	"drwxr-xr-x root/root ./usr/share/",
	"drwxr-xr-x root/root ./usr/share/doc/",
	"drwxr-xr-x root/root ./usr/share/doc/pier/",
	"-rw-r--r-- root/root ./usr/share/doc/pier/copyright",
	"drwxr-xr-x root/root ./usr/share/doc/pier/examples/",
	"-rw-r--r-- root/root ./usr/share/doc/pier/examples/config-auth.json",
}

// sources are the repository files each packaged file must equal; the
// binary is checked against dist/ separately.
var sources = map[string]string{
	"etc/pier/config.json":                         "configs/example-pi.json",
	"usr/lib/systemd/system/pier.service":          "packaging/pier.service",
	"usr/lib/systemd/system/pier.socket":           "packaging/pier.socket",
	"usr/lib/sysusers.d/pier.conf":                 "packaging/sysusers.conf",
	"usr/share/doc/pier/copyright":                 "packaging/copyright",
	"usr/share/doc/pier/examples/config-auth.json": "configs/example-auth.json",
}

func TestDebs(t *testing.T) {
	version := env(t, "PIER_DEB_VERSION")
	for _, d := range debs {
		t.Run(d.arch, func(t *testing.T) {
			deb := debPath(t, d.arch)

			// Control fields.
			want := map[string]string{"Package": "pier", "Version": version, "Architecture": d.arch, "Depends": "", "Pre-Depends": "", "Recommends": "procps",
				"Maintainer": "pier project <pier@example.invalid>"}
			for field, value := range want {
				if got := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, field)); got != value {
					t.Errorf("%s: got %q, want %q", field, got, value)
				}
			}
			if got := run(t, "dpkg-deb", "--info", deb, "conffiles"); got != "/etc/pier/config.json\n" {
				t.Errorf("conffiles: got %q, want only /etc/pier/config.json", got)
			}
			ctrl := t.TempDir()
			run(t, "dpkg-deb", "--control", deb, ctrl)
			for _, script := range []string{"postinst", "prerm", "postrm"} {
				p := filepath.Join(ctrl, script)
				if got, want := readFile(t, p), readFile(t, filepath.Join(repoRoot(t), "packaging", script)); got != want {
					t.Errorf("%s differs from packaging/%s", script, script)
				}
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o755 {
					t.Errorf("%s: mode %v (%v), want 0755", script, fi.Mode(), err)
				}
				run(t, "sh", "-n", p)
			}

			// The exact file list.
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
				f := strings.Fields(line)
				if len(f) != 6 {
					t.Fatalf("dpkg-deb --contents line %q", line)
				}
				got = append(got, f[0]+" "+f[1]+" "+f[5])
			}
			slices.Sort(got)
			wantContents := slices.Sorted(slices.Values(contents))
			if !slices.Equal(got, wantContents) {
				t.Errorf("contents:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantContents, "\n"))
			}

			// Every file is the one in the repository or dist/, and the
			// binary is static for the package's architecture.
			dir := extract(t, deb)
			for dst, src := range sources {
				if !bytes.Equal([]byte(readFile(t, filepath.Join(dir, dst))), []byte(readFile(t, filepath.Join(repoRoot(t), src)))) {
					t.Errorf("/%s differs from %s", dst, src)
				}
			}
			bin := filepath.Join(dir, "usr/bin/pier")
			if readFile(t, bin) != readFile(t, filepath.Join(env(t, "PIER_DIST"), d.binary)) {
				t.Errorf("/usr/bin/pier differs from dist/%s", d.binary)
			}
			if err := elfbin.CheckStatic(bin, d.machine); err != nil {
				t.Error(err)
			}
			fi, err := os.Stat(deb)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d bytes (%.2f MiB)", filepath.Base(deb), fi.Size(), float64(fi.Size())/(1<<20))
		})
	}
}

// TestPackagedConfig runs the packaged amd64 pier on the packaged config:
// `pier verify` accepts it without a warning, and it says what a Raspberry
// Pi install needs.
func TestPackagedConfig(t *testing.T) {
	dir := extract(t, debPath(t, "amd64"))
	bin, cfg := filepath.Join(dir, "usr/bin/pier"), filepath.Join(dir, "etc/pier/config.json")

	cmd := exec.Command(bin, "verify", cfg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pier verify %s: %v\n%s%s", cfg, err, stdout.String(), stderr.String())
	}
	if stdout.String() != cfg+": valid\n" || stderr.Len() != 0 {
		t.Errorf("pier verify: stdout %q, stderr %q; want valid with no warning", stdout.String(), stderr.String())
	}

	var c struct {
		Storage struct {
			RootDirectory string
			Commit        bool
			Dedupe        bool
			GC            bool
		}
		HTTP       struct{ Address, Port string }
		Extensions struct {
			Scrub struct {
				Enable   bool
				Interval string
			}
		}
	}
	if err := json.Unmarshal([]byte(readFile(t, cfg)), &c); err != nil {
		t.Fatal(err)
	}
	s := c.Storage
	if s.RootDirectory != "/var/lib/pier" || !s.Commit || !s.Dedupe || !s.GC {
		t.Errorf("storage: %+v; want /var/lib/pier with commit, dedupe and gc", s)
	}
	if c.HTTP.Address != "0.0.0.0" || c.HTTP.Port != "5000" {
		t.Errorf("http: %s:%s, want 0.0.0.0:5000", c.HTTP.Address, c.HTTP.Port)
	}
	if sc := c.Extensions.Scrub; !sc.Enable || sc.Interval != "168h" {
		t.Errorf("scrub: %+v, want enabled weekly (168h)", sc)
	}

	// The binary carries the version `make` stamped.
	out := run(t, bin, "version")
	if want := "pier " + env(t, "PIER_VERSION") + " "; !strings.HasPrefix(out, want) {
		t.Errorf("pier version: %q, want it to start with %q", out, want)
	}
}

// TestDebVersion checks packaging/debversion.sh: every git describe form
// gives a valid Debian version, in the order the commits came.
func TestDebVersion(t *testing.T) {
	script := filepath.Join(repoRoot(t), "packaging", "debversion.sh")
	const date = `[0-9]{8}`
	cases := []struct{ in, want string }{
		{"v1.2.3", `1\.2\.3`},
		{"1.2.3", `1\.2\.3`},
		{"v1.2.3-rc1", `1\.2\.3~rc1`},
		{"v1.2.3-4-gabc1234", `1\.2\.3\+git` + date + `\.4\.abc1234`},
		{"v1.2.3-rc1-4-gabc1234", `1\.2\.3~rc1\+git` + date + `\.4\.abc1234`},
		{"v1.2.3-dirty", `1\.2\.3\+git` + date + `\.dirty`},
		{"abc1234", `0\.0\.0~git` + date + `\.abc1234`},
		{"abc1234-dirty", `0\.0\.0~git` + date + `\.abc1234\.dirty`},
		{"dev", `0\.0\.0~dev`},
	}
	for _, tc := range cases {
		got := strings.TrimSpace(run(t, script, tc.in))
		if !regexp.MustCompile(`^` + tc.want + `$`).MatchString(got) {
			t.Errorf("debversion.sh %s = %q, want %s", tc.in, got, tc.want)
		}
		if res := try(t, "dpkg", "--validate-version", got); res.Err != nil {
			t.Errorf("debversion.sh %s = %q: not a Debian version: %s", tc.in, got, res.Stderr)
		}
	}
	if res := try(t, "dpkg", "--validate-version", env(t, "PIER_DEB_VERSION")); res.Err != nil {
		t.Errorf("PIER_DEB_VERSION %q: %s", env(t, "PIER_DEB_VERSION"), res.Stderr)
	}

	// Each of these must sort before the next.
	order := []string{
		"0.0.0~dev",
		"0.0.0~git20260101.abc1234",
		"0.0.0~git20260102.0123abc",
		"1.0.0~rc1",
		"1.0.0~rc1+git20260103.2.abc1234",
		"1.0.0",
		"1.0.0+git20260104.1.abc1234",
		"1.0.0+git20260104.1.abc1234.dirty",
		"1.0.1",
	}
	for i := 1; i < len(order); i++ {
		if res := try(t, "dpkg", "--compare-versions", order[i-1], "lt", order[i]); res.Err != nil {
			t.Errorf("%s does not sort before %s", order[i-1], order[i])
		}
	}
}
