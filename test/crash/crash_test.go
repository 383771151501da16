// Package crash kills a real pier with SIGKILL at random points — in the
// middle of concurrent pushes, tag moves, deletes and mounts, of garbage
// collection, of the startup dedupe pass, of an offline scrub — restarts
// it on the same root, and checks that nothing acknowledged was lost and
// nothing torn is served. A process kill keeps the page cache, so this
// proves atomicity (no torn index.json, no half blob under a digest) and
// the acknowledgement order; power cuts, which also test the fsyncs, are
// test/powercut's job.
package crash

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/ledger"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

const (
	clients = 4
	cycles  = 8
)

// Pushes, tag moves, deletes and mounts with collection off: everything
// acknowledged, untagged manifests and unreferenced blobs included, must
// survive every kill.
func TestKillDuringPushes(t *testing.T) {
	var root string
	killCycles(t, false, func(int) *pierproc.Server {
		srv := pierproc.Start(t, pierproc.Options{Root: root, Storage: map[string]any{"commit": true}})
		root = srv.Root
		return srv
	}, randomMoment)
}

// The same workload with online collection every second, so kills land
// during passes too. gcDelay alternates between 1s and 0s (collect as soon
// as untagged): collected untagged manifests and unreferenced blobs are
// legitimate absences; tagged images and acknowledged deletes stay exact,
// and at the end everything collectable must be collected. Every other
// kill comes just as a pass has collected from one repository, so that it
// lands in the middle of the pass.
func TestKillDuringGC(t *testing.T) {
	var root string
	killCycles(t, true, func(cycle int) *pierproc.Server {
		delay := []string{"1s", "0s"}[cycle%2]
		srv := pierproc.Start(t, pierproc.Options{Root: root,
			Storage: map[string]any{"commit": true, "gcDelay": delay, "gcInterval": "1s"},
			Extra:   map[string]any{"log": map[string]any{"level": "info"}}, // for "gc: collected"
		})
		root = srv.Root
		return srv
	}, func(cycle int, srv *pierproc.Server, rng *rand.Rand) string {
		if cycle%2 == 0 {
			return randomMoment(cycle, srv, rng)
		}
		before := strings.Count(srv.Stderr(), "gc: collected")
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if strings.Count(srv.Stderr(), "gc: collected") > before {
				return "as a gc pass had collected from a repository"
			}
		}
		return "after 3s, no gc pass having collected anything"
	})
}

// randomMoment waits 150 ms to 1 s into the workload.
func randomMoment(_ int, _ *pierproc.Server, rng *rand.Rand) string {
	d := time.Duration(150+rng.IntN(850)) * time.Millisecond
	time.Sleep(d)
	return "after " + d.String()
}

// killCycles runs the ledger's workload against start(cycle) for cycles
// rounds, killing pier when moment returns (it says when that was), and
// audits the ledger after every restart.
func killCycles(t *testing.T, gc bool, start func(cycle int) *pierproc.Server, moment func(int, *pierproc.Server, *rand.Rand) string) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	l := ledger.New("crash", clients)
	srv := start(0)
	checked := 0
	for cycle := range cycles {
		l.SetRound(cycle)
		stats := make(chan ledger.Stats, 1)
		go func() {
			stats <- l.Run(context.Background(), ociclient.New(srv.Addr), ledger.Options{Seed: seed, Round: cycle, GC: gc})
		}()
		when := moment(cycle, srv, rng)
		srv.Kill(t)
		killedLog := srv.Stderr()
		st := <-stats
		for _, e := range st.Errors {
			t.Errorf("cycle %d: pier answered what it must not: %s", cycle, e)
		}

		srv = start(cycle + 1)
		c := ociclient.New(srv.Addr)
		rep := l.Check(c, ledger.CheckOptions{GC: gc})
		for _, f := range rep.Failures {
			t.Errorf("cycle %d: %s", cycle, f)
		}
		checkDisk(t, srv.Root)
		checked += rep.Checked
		t.Logf("cycle %d: killed %s; %d acknowledgements (%d manifests re-sent after collection), %d checks after restart",
			cycle, when, st.Acks, st.Retries, rep.Checked)
		if t.Failed() {
			t.Fatalf("cycle %d failed (seed %d)\nacknowledgements:\n%s\nlog of the killed pier:\n%s\nlog after the restart:\n%s",
				cycle, seed, l.Journal(), errorLines(killedLog), srv.Stderr())
		}
	}
	// The registry still takes a push after all that.
	c := ociclient.New(srv.Addr)
	if err := l.ProbePush(c, seed, gc); err != nil {
		t.Fatalf("push after the crashes: %v", err)
	}
	if gc {
		// Every cycle's config collects within about a second; once all is
		// older than gcDelay, whatever no tag holds must go.
		rep := l.CheckCollected(c, 15*time.Second)
		for _, f := range rep.Failures {
			t.Error(f)
		}
		if len(rep.Failures) > 0 {
			t.Logf("pier log (warnings and errors):\n%s", errorLines(srv.Stderr()))
		}
		if len(rep.Failures) > 0 {
			t.Logf("pier log:\n%s", srv.Stderr())
		}
		checked += rep.Checked
	}
	t.Logf("%d cycles, %d acknowledgements, %d checks in all", cycles, l.Acks(), checked)
}

// errorLines keeps the warnings and errors of a pier log, and the requests
// that failed with a 5xx: the lines that explain a failure.
func errorLines(log string) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "status=5") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
