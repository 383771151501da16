package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store/jobs"
	"github.com/pier-oci/pier/store/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

func config(t *testing.T, json string) *configs.Config {
	t.Helper()
	cfg, _, err := configs.Parse([]byte(json))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// Run serves until its context ends, then returns nil.
func TestRunServesAndStops(t *testing.T) {
	port := freePort(t)
	cfg := config(t, `{"storage": {"rootDirectory": "`+t.TempDir()+`"}, "http": {"address": "127.0.0.1", "port": "`+port+`"}}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Config: cfg, Log: quiet, Level: new(slog.LevelVar)}) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + port + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after 10 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after a stop: %v", err)
		}
	case <-time.After(shutdownGrace + handlerExitWait):
		t.Fatal("Run did not return after its stop")
	}
}

// A stop while start-up hangs (here: reading an htpasswd file that is a
// named pipe nobody writes) is answered at once, not after the hang.
func TestStopDuringAHungStartUp(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "htpasswd")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	// Nobody ever writes: the start-up goroutine stays blocked in open(2)
	// until the test binary exits, and opens no store meanwhile.
	cfg := config(t, `{"storage": {"rootDirectory": "`+t.TempDir()+`"}, "http": {"address": "127.0.0.1", "port": "`+freePort(t)+`",
		"auth": {"htpasswd": {"path": "`+fifo+`"}}}}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Config: cfg, Log: quiet, Level: new(slog.LevelVar)}) }()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("start-up did not hang (the test proves nothing): %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStoppedStarting) {
			t.Fatalf("a stop during start-up: %v, want ErrStoppedStarting", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a stop during a hung start-up waited for the hang")
	}
}

func TestRestartOnlyNamesWhatNeedsARestart(t *testing.T) {
	base := `{"storage": {"rootDirectory": "/r", "gcInterval": "1h"}, "http": {"port": "5000"}, "log": {"level": "info"}}`
	for _, tc := range []struct {
		json string
		want []string
	}{
		{`{"storage": {"rootDirectory": "/r", "gcInterval": "2h"}, "http": {"port": "5000"}, "log": {"level": "debug"}}`, nil},
		{`{"storage": {"rootDirectory": "/other", "gcInterval": "1h"}, "http": {"port": "5000"}}`, []string{"storage (rootDirectory, commit, dedupe, readOnly or subPaths)"}},
		{`{"storage": {"rootDirectory": "/r", "gcInterval": "1h"}, "http": {"port": "5001"}}`, []string{"http.port"}},
	} {
		got := restartOnly(config(t, base), config(t, tc.json))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %q, want %q", tc.json, got, tc.want)
		}
	}
}

func TestDialable(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:5000":   "[127.0.0.1:5000]",
		"[::]:5000":      "[127.0.0.1:5000 [::1]:5000]",
		"10.0.0.7:5000":  "[10.0.0.7:5000]",
		"[::1]:5000":     "[[::1]:5000]",
		"127.0.0.1:5000": "[127.0.0.1:5000]",
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(dialable(a)); got != want {
			t.Errorf("dialable(%s) = %s, want %s", addr, got, want)
		}
	}
}

// A reload that changes nothing of a root's jobs restarts nothing; one
// that changes the schedule restarts collection, and scrub follows its
// switch.
func TestSupervisorRestartsOnlyWhatChanged(t *testing.T) {
	st := storetest.Local(t, t.TempDir(), false, false)
	j := &supervisor{log: quiet, roots: map[string]*rootJobs{"": {st: st}}}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	defer j.stop()
	sched := jobs.GCSchedule{Enabled: true, Interval: time.Hour, Delay: time.Hour}
	for range 3 {
		j.setGC("", sched)
	}
	if j.started != 1 {
		t.Fatalf("the same schedule three times started %d jobs, want 1", j.started)
	}
	sched.Interval = 2 * time.Hour
	j.setGC("", sched)
	if j.started != 2 {
		t.Fatal("a new schedule did not restart collection")
	}
	j.setScrub("", jobs.ScrubConfig{Interval: time.Hour}, true)
	j.setScrub("", jobs.ScrubConfig{Interval: time.Hour}, true)
	if j.roots[""].stopScrub == nil || j.started != 3 {
		t.Fatalf("scrub switched on twice: running %v, %d jobs started, want 3", j.roots[""].stopScrub != nil, j.started)
	}
	j.setScrub("", jobs.ScrubConfig{}, false)
	if j.roots[""].stopScrub != nil {
		t.Fatal("scrub switched off, still running")
	}
}
