package auth

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// TestHtpasswdCommand: `pier htpasswd` writes bcrypt entries to a new
// file readable by its owner only, keeps an existing file's mode,
// replaces a user's password in place, and refuses what pier would not
// serve; `pier serve` refuses a file with another hash, naming the line.
func TestHtpasswdCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "htpasswd")
	run := func(stdin string, args ...string) (int, string) {
		cmd := exec.Command(pierproc.Binary(t), append([]string{"htpasswd"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	if code, out := run("pw1\n", path, "ci"); code != 0 {
		t.Fatalf("add ci: %d %s", code, out)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600", fi.Mode().Perm())
	}
	os.Chmod(path, 0o640)
	run("pw2\n", path, "other")
	run("pw3\n", path, "ci")
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ci:$2") || !strings.HasPrefix(lines[1], "other:$2") {
		t.Errorf("file after add, add, change:\n%s", data)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("an existing file's mode became %v", fi.Mode().Perm())
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"\n", []string{path, "empty"}, 1, "the password is empty"},
		{"pw\n", []string{path, "a:b"}, 1, "no ':'"},
		{"pw\n", []string{path}, 2, "usage"},
	} {
		if code, out := run(tc.stdin, tc.args...); code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("pier htpasswd %v: %d %q, want %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}

	os.WriteFile(path, append(data, []byte("old:$apr1$salt$hash\n")...), 0o600)
	if code, out := run("pw\n", path, "new"); code != 1 || !strings.Contains(out, `line 3: user "old" has an MD5 (apr1) hash`) {
		t.Errorf("adding to a file with an apr1 line: %d %q", code, out)
	}
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"storage":{"rootDirectory":"`+filepath.Join(dir, "data")+`"},"http":{"port":"0","auth":{"htpasswd":{"path":"`+path+`"}}}}`), 0o644)
	code, out := pierproc.Run(t, "serve", cfg)
	if code != 1 || !strings.Contains(out, "line 3") || !strings.Contains(out, "bcrypt only") {
		t.Errorf("serve with an apr1 line: %d %q", code, out)
	}
}
