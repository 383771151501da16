package packaging

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// serviceWants are the directives pier.service must carry, each with its
// exact value(s).
var serviceWants = map[string][]string{
	"Unit.After":                      {"network.target"},
	"Service.Type":                    {"notify"},
	"Service.ExecStart":               {"/usr/bin/pier serve /etc/pier/config.json"},
	"Service.ExecReload":              {"/bin/kill -HUP $MAINPID"},
	"Service.WatchdogSec":             {"30s"},
	"Service.Restart":                 {"on-failure"},
	"Service.User":                    {"pier"},
	"Service.Group":                   {"pier"},
	"Service.StateDirectory":          {"pier"},
	"Service.ReadWritePaths":          {"/var/lib/pier"},
	"Service.Environment":             {"GOMEMLIMIT=64MiB"},
	"Service.NoNewPrivileges":         {"yes"},
	"Service.ProtectSystem":           {"strict"},
	"Service.ProtectHome":             {"yes"},
	"Service.PrivateTmp":              {"yes"},
	"Service.PrivateDevices":          {"yes"},
	"Service.ProtectKernelTunables":   {"yes"},
	"Service.ProtectKernelModules":    {"yes"},
	"Service.ProtectControlGroups":    {"yes"},
	"Service.RestrictAddressFamilies": {"AF_UNIX AF_INET AF_INET6"},
	"Service.SystemCallFilter":        {"@system-service"},
	"Service.CapabilityBoundingSet":   {""},
	"Service.LockPersonality":         {"yes"},
	"Service.MemoryDenyWriteExecute":  {"yes"},
	"Service.RestrictRealtime":        {"yes"},
	"Service.RestrictSUIDSGID":        {"yes"},
	"Install.WantedBy":                {"multi-user.target"},
}

var socketWants = map[string][]string{
	"Socket.ListenStream": {"5000"},
	"Socket.Service":      {"pier.service"},
	"Install.WantedBy":    {"sockets.target"},
}

// maxExposure is `systemd-analyze security`'s exposure level of pier.service
// (×10) as shipped; losing any hardening raises it.
const maxExposure = "20"

// TestUnits checks the packaged units: their directives, `systemd-analyze
// verify` with no complaint, and the sandbox's exposure level.
func TestUnits(t *testing.T) {
	dir := extract(t, debPath(t, "amd64"))
	unitDir := filepath.Join(dir, "usr/lib/systemd/system")
	service := readFile(t, filepath.Join(unitDir, "pier.service"))
	socket := readFile(t, filepath.Join(unitDir, "pier.socket"))

	for name, c := range map[string]struct {
		u    unit
		want map[string][]string
	}{
		"pier.service": {parseUnit(t, service), serviceWants},
		"pier.socket":  {parseUnit(t, socket), socketWants},
	} {
		for key, want := range c.want {
			if got := c.u[key]; !slices.Equal(got, want) {
				t.Errorf("%s %s: got %q, want %q", name, key, got, want)
			}
		}
	}

	// verify needs ExecStart's binary to exist: point it at the unpacked
	// one, and change nothing else.
	verifyDir := t.TempDir()
	bin := filepath.Join(dir, "usr/bin/pier")
	patched := strings.Replace(service, "ExecStart=/usr/bin/pier ", "ExecStart="+bin+" ", 1)
	if strings.Count(patched, bin) != 1 {
		t.Fatalf("pier.service has no ExecStart=/usr/bin/pier to point at the unpacked binary")
	}
	writeFile(t, filepath.Join(verifyDir, "pier.service"), patched)
	writeFile(t, filepath.Join(verifyDir, "pier.socket"), socket)
	svc, sock := filepath.Join(verifyDir, "pier.service"), filepath.Join(verifyDir, "pier.socket")
	verify(t, svc, sock)

	res := try(t, "systemd-analyze", "security", "--offline=true", "--no-pager", "--threshold="+maxExposure, svc)
	if res.Err != nil {
		t.Errorf("pier.service is less hardened than shipped (exposure above %s/100):\n%s%s", maxExposure, res.Stdout, res.Stderr)
	}
}

// verify runs `systemd-analyze verify` on units (paths or installed names):
// it must exit 0 and print nothing, since it reports unknown keys and bad
// values on stderr but still exits 0.
func verify(t *testing.T, units ...string) {
	t.Helper()
	res := try(t, "systemd-analyze", append([]string{"verify"}, units...)...)
	if res.Err != nil || len(res.Stdout) > 0 || len(res.Stderr) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s%s", strings.Join(units, " "), res.Err, res.Stdout, res.Stderr)
	}
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
