// Package cli tests the pier command itself: its subcommands, exit codes
// and messages, and a graceful stop that lets in-flight pushes finish.
package cli

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// pier runs the binary and returns its exit code, stdout and stderr.
func pier(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(pierproc.Binary(t), args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("pier %v did not exit", args)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	code, out, _ := pier(t, t.TempDir(), "version")
	if code != 0 || !strings.HasPrefix(out, "pier ") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		code         int
		want         string // in the output
	}{
		{"valid", `{"storage":{"rootDirectory":"/tmp/x"},"http":{"address":"127.0.0.1","port":"5000"}}`, 0, "valid"},
		{"zot keys warn", `{"storage":{"rootDirectory":"/tmp/x","dedupe":true},"http":{"port":"5000"},"extensions":{"search":{"enable":true}}}`, 0, "extensions.search"},
		{"unknown key", `{"storage":{"rootDirectory":"/tmp/x","gcDelayy":"1h"},"http":{"port":"5000"}}`, 1, "storage.gcDelayy"},
		{"deep unknown key", `{"storage":{"rootDirectory":"/tmp/x"},"http":{"port":"5000","tls":{"cert":"a","key":"b","certt":"c"}}}`, 1, "http.tls.certt"},
		{"bad duration", `{"storage":{"rootDirectory":"/tmp/x","gcDelay":"soon"},"http":{"port":"5000"}}`, 1, "storage.gcDelay"},
		{"bad port", `{"storage":{"rootDirectory":"/tmp/x"},"http":{"port":"99999"}}`, 1, "http.port"},
		{"not json", `{"storage":`, 1, "config"},
		{"htpasswd accepted", `{"storage":{"rootDirectory":"/tmp/x"},"http":{"port":"5000","auth":{"htpasswd":{"path":"/etc/htpasswd"}}}}`, 0, "valid"},
		{"LDAP refused", `{"storage":{"rootDirectory":"/tmp/x"},"http":{"port":"5000","auth":{"ldap":{"address":"ldap.example.org"}}}}`, 1, "http.auth.ldap"},
		{"bad policy action", `{"storage":{"rootDirectory":"/tmp/x"},"http":{"port":"5000","accessControl":{"**":{"anonymousPolicy":["pull"]}}}}`, 1, `"pull" is not an action`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := pier(t, t.TempDir(), "verify", writeConfig(t, tc.config))
			if code != tc.code || !strings.Contains(out+errs, tc.want) {
				t.Fatalf("exit %d (want %d); output:\n%s%s", code, tc.code, out, errs)
			}
			if strings.Contains(errs, "goroutine ") {
				t.Fatalf("panic:\n%s", errs)
			}
		})
	}
	code, _, errs := pier(t, t.TempDir(), "verify", "/nonexistent/config.json")
	if code != 1 || !strings.Contains(errs, "/nonexistent/config.json") {
		t.Fatalf("missing file: exit %d, %s", code, errs)
	}
}

func TestServeRejectsBadConfigWithoutPanic(t *testing.T) {
	for _, cfg := range []string{
		`{"storage":{"rootDirectory":"/tmp/x","bogus":1},"http":{"port":"5000"}}`,
		`[]`,
		`{"storage":{"rootDirectory":"/tmp/x"},"http":{"port":"5000","auth":{"openid":{}}}}`,
		`{"storage":{"rootDirectory":"/tmp/x"},"http":{"port":"5000","auth":{"htpasswd":{"path":"/nonexistent/htpasswd"}}}}`,
	} {
		code, _, errs := pier(t, t.TempDir(), "serve", writeConfig(t, cfg))
		if code != 1 || errs == "" || strings.Contains(errs, "goroutine ") {
			t.Fatalf("serve %s: exit %d, stderr:\n%s", cfg, code, errs)
		}
	}
	code, _, _ := pier(t, t.TempDir(), "frobnicate")
	if code == 0 {
		t.Fatal("unknown command exited 0")
	}
}

func TestServeFailsWhenPortIsTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cfg := fmt.Sprintf(`{"storage":{"rootDirectory":%q},"http":{"address":"127.0.0.1","port":"%d"}}`, t.TempDir(), port)
	code, _, errs := pier(t, t.TempDir(), "serve", writeConfig(t, cfg))
	if code != 1 || !strings.Contains(errs, "listen") {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
}

// SIGTERM stops accepting new connections but lets a push in flight
// finish, then exits 0.
func TestGracefulStopFinishesInFlightPush(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	data := make([]byte, 4<<20)
	rand.Read(data)
	d := digest.FromBytes(data)

	resp, err := http.Post(srv.URL("/v2/app/blobs/uploads/"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", srv.URL(loc)+"?digest="+d.String(), pr)
	req.ContentLength = int64(len(data))
	result := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight PUT failed: %v", err)
			result <- nil
			return
		}
		result <- resp
	}()
	pw.Write(data[:1<<20]) // the request is now in flight
	time.Sleep(100 * time.Millisecond)
	srv.Cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)

	// No new connections once stopping.
	if c, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
		c.Close()
		t.Error("pier still accepts connections after SIGTERM")
	}
	pw.Write(data[1<<20:])
	pw.Close()
	if resp := <-result; resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("in-flight push did not complete: %v", resp)
	}
	if err := srv.Cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, srv.Stderr())
	}
	blob, err := os.ReadFile(filepath.Join(srv.Root, "app", "blobs", "sha256", d.Encoded()))
	if err != nil || !bytes.Equal(blob, data) {
		t.Fatalf("the push acknowledged during shutdown is not on disk: %v", err)
	}
}

// With no config, pier serves the embedded default: 127.0.0.1:5000 with
// its storage under ./data.
func TestServeDefaultConfig(t *testing.T) {
	if l, err := net.Listen("tcp", "127.0.0.1:5000"); err != nil {
		t.Skipf("port 5000 is in use on this machine: %v", err)
	} else {
		l.Close()
	}
	dir := t.TempDir()
	cmd := exec.Command(pierproc.Binary(t), "serve")
	cmd.Dir = dir
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	srv := &pierproc.Server{Addr: "127.0.0.1:5000"}
	if err := srv.WaitReady(10 * time.Second); err != nil {
		t.Fatalf("default config not served: %v\n%s", err, errb.String())
	}
	resp, err := http.Post(srv.URL("/v2/hello/blobs/uploads/?digest="+digest.FromString("hi").String()), "", strings.NewReader("hi"))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %v %v", resp, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "hello", "index.json")); err != nil {
		t.Fatalf("storage is not under ./data: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
