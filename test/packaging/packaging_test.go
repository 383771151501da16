// Package packaging checks the .deb packages `make deb` builds from
// packaging/: their control data and exact contents, the static binary in
// each, the packaged config and systemd units (systemd-analyze), the
// syscalls and socket families pier uses against the unit's sandbox, and a
// real dpkg install, remove and purge of the amd64 package.
//
// `make e2e` builds the packages first and passes PIER_DIST (the dist/
// directory), PIER_DEB_VERSION and PIER_VERSION.
package packaging

import (
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pier-oci/pier/test/internal/tool"
)

// debs are the packages `make deb` builds: Debian architecture, the ELF
// machine of its binary and the dist/ binary it carries.
var debs = []struct {
	arch    string
	machine elf.Machine
	binary  string
}{
	{"amd64", elf.EM_X86_64, "pier-linux-amd64"},
	{"arm64", elf.EM_AARCH64, "pier-linux-arm64"},
	{"armhf", elf.EM_ARM, "pier-linux-armv7"},
}

// repoRoot is the repository: packaging/ and configs/ are read from it.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func env(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set; run the packaging tests with `make e2e` (it builds the packages first)", name)
	}
	return v
}

// debPath is dist/pier_<version>_<arch>.deb.
func debPath(t testing.TB, arch string) string {
	t.Helper()
	p := filepath.Join(env(t, "PIER_DIST"), "pier_"+env(t, "PIER_DEB_VERSION")+"_"+arch+".deb")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v; run `make deb`", err)
	}
	return p
}

// extract unpacks a package's files into a new directory.
func extract(t testing.TB, deb string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, dir)
	return dir
}

// run runs a program from PATH and returns its stdout; a non-zero exit
// fails the test.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return string(tool.Runner{}.Run(t, name, args...))
}

// try runs a program from PATH whatever its exit code.
func try(t testing.TB, name string, args ...string) tool.Result {
	t.Helper()
	return tool.Runner{}.Try(t, name, args...)
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unit is a systemd unit file: "Section.Key" → every value it is given.
type unit map[string][]string

func parseUnit(t testing.TB, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit line %q: no '='", line)
			}
			key := section + "." + strings.TrimSpace(k)
			u[key] = append(u[key], strings.TrimSpace(v))
		}
	}
	return u
}
