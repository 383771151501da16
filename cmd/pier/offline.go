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
	roots []root
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
	rs, _, closeStores, err := openStores(cfg, log)
	if err != nil {
		closeLog()
		fmt.Fprintf(stderr, "pier: %v (a serving pier collects and scrubs online)\n", err)
		return nil, false
	}
	return &offlineJob{cfg, rs, log, func() { closeStores(); closeLog() }}, true
}

// gcCommand runs one garbage collection pass over every root and prints
// what it removed.
func gcCommand(path string, stdout, stderr io.Writer) int {
	job, ok := openOffline(path, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tMANIFESTS\tREFERRERS\tSTALE ENTRIES\tBLOBS\tUPLOADS\tFREED\tREMOVED")
	var total gc.Totals
	failed := false
	for _, r := range job.roots {
		t, err := gc.Pass(ctx, r.st, r.cfg.GCDelay, job.log, func(rep store.CollectReport) {
			removed := ""
			if rep.RepoRemoved {
				removed = "repository"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", rep.Repo, len(rep.Manifests), len(rep.Referrers), len(rep.StaleEntries),
				rep.Blobs, rep.Uploads, humanBytes(rep.BlobBytes+rep.UploadBytes), removed)
		})
		total.Repos += t.Repos
		total.Manifests += t.Manifests
		total.Referrers += t.Referrers
		total.StaleEntries += t.StaleEntries
		total.Blobs += t.Blobs
		total.Uploads += t.Uploads
		total.ReposRemoved += t.ReposRemoved
		total.Bytes += t.Bytes
		total.Took += t.Took
		if err != nil {
			fmt.Fprintf(stderr, "pier: gc of root %s: %v\n", rootName(r.key), err)
			failed = true
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "gc: %d repositories: removed %d manifests, %d referrers, %d stale entries, %d blobs, %d uploads, %d repositories; freed %s in %s\n",
		total.Repos, total.Manifests, total.Referrers, total.StaleEntries, total.Blobs, total.Uploads, total.ReposRemoved,
		humanBytes(total.Bytes), total.Took.Round(time.Millisecond))
	if failed {
		return 1
	}
	return 0
}

// scrubCommand runs one scrub pass over every root, prints a table of
// every reference and every problem, and exits 1 when anything is corrupt
// or missing.
func scrubCommand(path string, stdout, stderr io.Writer) int {
	job, ok := openOffline(path, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sc, _ := scrubConfig(job.cfg)
	if s := job.cfg.Extensions.Scrub; s != nil {
		sc.MaxBytesPerSecond = s.MaxBytesPerSecond // the throttle applies even when the schedule is off
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tREFERENCE\tSTATUS\tAFFECTED BLOB")
	var total scrub.Result
	failed := false
	for _, r := range job.roots {
		res, err := scrub.Pass(ctx, r.st, sc, job.log, func(rep store.ScrubReport) {
			for _, x := range rep.Results {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", x.Repo, x.Reference, x.Status, x.Digest)
			}
		})
		total.Repos += res.Repos
		total.Blobs += res.Blobs
		total.Bytes += res.Bytes
		total.OK += res.OK
		total.Corrupt += res.Corrupt
		total.Missing += res.Missing
		total.Unreferenced += res.Unreferenced
		if err != nil {
			fmt.Fprintf(stderr, "pier: scrub of root %s: %v\n", rootName(r.key), err)
			failed = true
			continue
		}
		if !r.st.ReadOnly() {
			if err := scrub.SaveResult(r.st.Root(), res); err != nil {
				fmt.Fprintf(stderr, "pier: scrub: keeping the result: %v\n", err)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "scrub: %d repositories, %d blobs, %s read: %d ok, %d corrupt, %d missing, %d unreferenced\n",
		total.Repos, total.Blobs, humanBytes(total.Bytes), total.OK, total.Corrupt, total.Missing, total.Unreferenced)
	if failed || total.Failed() {
		return 1
	}
	return 0
}
