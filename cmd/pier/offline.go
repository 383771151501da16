package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/gc"
	"github.com/pier-oci/pier/store/scrub"
)

// offlineJob is a store opened for a one-off job (pier gc, pier scrub).
type offlineJob struct {
	cfg   *configs.Config
	st    *store.Store
	log   *slog.Logger
	close func()
}

// openOffline loads a config and opens its store; it fails while a pier
// serves the same root (that pier collects and scrubs online).
func openOffline(path string, stderr io.Writer) (*offlineJob, bool) {
	cfg, _, err := configs.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return nil, false
	}
	log, closeLog, err := newLogger(cfg.Log, new(slog.LevelVar), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return nil, false
	}
	st, closeStore, err := openStore(cfg, log)
	if err != nil {
		closeLog()
		fmt.Fprintf(stderr, "pier: %v (a serving pier collects and scrubs online)\n", err)
		return nil, false
	}
	return &offlineJob{cfg, st, log, func() { closeStore(); closeLog() }}, true
}

// gcCommand runs one garbage collection pass and prints what it removed.
func gcCommand(path string, stdout, stderr io.Writer) int {
	job, ok := openOffline(path, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	cfg, st, log := job.cfg, job.st, job.log
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tMANIFESTS\tREFERRERS\tSTALE ENTRIES\tBLOBS\tUPLOADS\tFREED\tREMOVED")
	t, err := gc.Pass(ctx, st, cfg.Storage.GCDelay, log, func(r store.CollectReport) {
		removed := ""
		if r.RepoRemoved {
			removed = "repository"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", r.Repo, len(r.Manifests), len(r.Referrers), len(r.StaleEntries),
			r.Blobs, r.Uploads, humanBytes(r.BlobBytes+r.UploadBytes), removed)
	})
	tw.Flush()
	fmt.Fprintf(stdout, "gc: %d repositories, gcDelay %s: removed %d manifests, %d referrers, %d stale entries, %d blobs, %d uploads, %d repositories; freed %s in %s\n",
		t.Repos, cfg.Storage.GCDelay, t.Manifests, t.Referrers, t.StaleEntries, t.Blobs, t.Uploads, t.ReposRemoved, humanBytes(t.Bytes), t.Took.Round(time.Millisecond))
	if err != nil {
		fmt.Fprintf(stderr, "pier: gc: %v\n", err)
		return 1
	}
	return 0
}

// scrubCommand runs one scrub pass, prints a table of every reference and
// every problem, and exits 1 when anything is corrupt or missing.
func scrubCommand(path string, stdout, stderr io.Writer) int {
	job, ok := openOffline(path, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	cfg, st, log := job.cfg, job.st, job.log
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sc, enabled := scrubConfig(cfg)
	if !enabled && cfg.Extensions.Scrub != nil {
		sc.MaxBytesPerSecond = cfg.Extensions.Scrub.MaxBytesPerSecond
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tREFERENCE\tSTATUS\tAFFECTED BLOB")
	res, err := scrub.Pass(ctx, st, sc, log, func(r store.ScrubReport) {
		for _, x := range r.Results {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", x.Repo, x.Reference, x.Status, x.Digest)
		}
	})
	tw.Flush()
	fmt.Fprintf(stdout, "scrub: %d repositories, %d blobs, %s read: %d ok, %d corrupt, %d missing, %d unreferenced\n",
		res.Repos, res.Blobs, humanBytes(res.Bytes), res.OK, res.Corrupt, res.Missing, res.Unreferenced)
	if err != nil {
		fmt.Fprintf(stderr, "pier: scrub: %v\n", err)
		return 1
	}
	if err := scrub.SaveResult(st.Root(), res); err != nil {
		fmt.Fprintf(stderr, "pier: scrub: keeping the result: %v\n", err)
	}
	if res.Failed() {
		return 1
	}
	return 0
}
