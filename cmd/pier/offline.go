package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pier-oci/pier/cmd/internal/roots"
	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/driver/local"
	"github.com/pier-oci/pier/store/jobs"
	"github.com/pier-oci/pier/store/oci"
)

// offlineJob is a store opened for a one-off job (pier gc, pier scrub).
type offlineJob struct {
	cfg   *configs.Config
	roots []roots.Root
	ctl   *store.Controller
	log   *slog.Logger
	close func()
}

// openOffline loads a config and opens its store; it fails while a pier
// serves the same root (that pier collects and scrubs online).
func openOffline(path string, readOnly bool, stderr io.Writer) (*offlineJob, bool) {
	cfg, _, err := configs.LoadPath(path)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return nil, false
	}
	log, closeLog, err := newLogger(cfg.Log, new(slog.LevelVar), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return nil, false
	}
	rs, ctl, closeStores, err := roots.Open(cfg, log, readOnly)
	if err != nil {
		closeLog()
		fmt.Fprintf(stderr, "pier: %v (a serving pier collects and scrubs online)\n", err)
		return nil, false
	}
	return &offlineJob{cfg, rs, ctl, log, func() { closeStores(); closeLog() }}, true
}

// gcCommand runs one garbage collection pass over every root and prints
// what it removed.
func gcCommand(path string, stdout, stderr io.Writer) int {
	job, ok := openOffline(path, false, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tw := table(stdout, "REPOSITORY", "TAGS", "MANIFESTS", "REFERRERS", "STALE ENTRIES", "BLOBS", "UPLOADS", "FREED", "REMOVED")
	var total jobs.GCTotals
	failed := false
	for _, r := range job.roots {
		if !r.Cfg.GC {
			// gc false (a subpath's default) means nothing is ever
			// collected there; its gcDelay is 0 and would spare nothing.
			fmt.Fprintf(stderr, "pier: gc is off for root %s (storage.gc false); skipped\n", roots.Name(r.Key))
			continue
		}
		t, err := jobs.CollectAll(ctx, r.Store, r.Cfg.GCDelay, job.log, func(rep store.CollectReport) {
			removed := ""
			if rep.RepoRemoved {
				removed = "repository"
			}
			tw.Row(rep.Repo, len(rep.Untagged), len(rep.Manifests), len(rep.Referrers), len(rep.StaleEntries),
				rep.Blobs, rep.Uploads, store.HumanBytes(rep.BlobBytes+rep.UploadBytes), removed)
		})
		total = total.Plus(t)
		if err != nil {
			fmt.Fprintf(stderr, "pier: gc of root %s: %v\n", roots.Name(r.Key), err)
			failed = true
		}
	}
	tw.Flush()
	if total.Tags > 0 {
		fmt.Fprintf(stdout, "retention: removed %d tags (their images go once older than the retention delay)\n", total.Tags)
	}
	fmt.Fprintf(stdout, "gc: %d repositories: removed %d manifests, %d referrers, %d stale entries, %d blobs, %d uploads, %d repositories; freed %s in %s\n",
		total.Repos, total.Manifests, total.Referrers, total.StaleEntries, total.Blobs, total.Uploads, total.ReposRemoved,
		store.HumanBytes(total.Bytes), total.Took.Round(time.Millisecond))
	if failed {
		return 1
	}
	return 0
}

// gcDryRun prints what one collection pass would remove from every root
// with gc on, and retention's verdict on every tag and untagged manifest
// it judges, with the reason; it removes nothing. It opens the roots
// read-only, so it runs beside a serving pier (whose pull times of the
// last minute it does not see).
func gcDryRun(path string, stdout, stderr io.Writer) int {
	job, ok := openOffline(path, true, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tw := table(stdout, "REPOSITORY", "TAG", "DIGEST", "PUSHED", "PULLED", "ACTION", "REASON")
	var total jobs.GCTotals
	failed := false
	for _, r := range job.roots {
		if !r.Cfg.GC {
			fmt.Fprintf(stderr, "pier: gc is off for root %s (storage.gc false); skipped\n", roots.Name(r.Key))
			continue
		}
		t, err := jobs.PreviewAll(ctx, r.Store, r.Cfg.GCDelay, job.log, func(rep store.CollectReport) {
			for _, v := range rep.Verdicts {
				tag, action := v.Tag, "keep"
				if tag == "" {
					tag = "(untagged)"
				}
				if !v.Keep {
					action = "remove tag"
					if v.Tag == "" {
						action = "remove once older than the delay"
					}
				}
				tw.Row(rep.Repo, tag, short(v.Digest.String()), when(v.Pushed), when(v.Pulled), action, v.Reason)
			}
			for _, d := range rep.Manifests {
				tw.Row(rep.Repo, "(untagged)", short(d.String()), "-", "-", "remove manifest", "untagged, older than the delay")
			}
			for _, d := range rep.Referrers {
				tw.Row(rep.Repo, "(referrer)", short(d.String()), "-", "-", "remove manifest", "its subject is gone")
			}
			if rep.Blobs > 0 {
				tw.Row(rep.Repo, "-", fmt.Sprintf("%d blobs", rep.Blobs), "-", "-", "remove blobs", store.HumanBytes(rep.BlobBytes)+" no manifest references")
			}
		})
		total = total.Plus(t)
		if err != nil {
			fmt.Fprintf(stderr, "pier: gc of root %s: %v\n", roots.Name(r.Key), err)
			failed = true
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "gc dry run: %d repositories: would remove %d tags, %d manifests, %d referrers, %d blobs (%s); nothing was removed\n",
		total.Repos, total.Tags, total.Manifests, total.Referrers, total.Blobs, store.HumanBytes(total.Bytes))
	if failed {
		return 1
	}
	return 0
}

// short is a digest cut to its first 12 hex digits, as docker prints them.
func short(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// scrubCommand runs one scrub pass over every root, prints a table of
// every reference and every problem, and exits 1 when anything is corrupt
// or missing.
func scrubCommand(path string, stdout, stderr io.Writer) int {
	job, ok := openOffline(path, false, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sc, _ := roots.ScrubConfig(job.cfg)
	if s := job.cfg.Extensions.Scrub; s != nil {
		sc.MaxBytesPerSecond = s.MaxBytesPerSecond // the throttle applies even when the schedule is off
	}
	tw := table(stdout, "REPOSITORY", "REFERENCE", "STATUS", "AFFECTED BLOB")
	var total jobs.ScrubResult
	failed := false
	for _, r := range job.roots {
		res, err := jobs.ScrubAll(ctx, r.Store, sc, job.log, func(rep store.ScrubReport) {
			for _, x := range rep.Results {
				tw.Row(x.Repo, x.Reference, x.Status, x.Digest)
			}
		})
		total = total.Plus(res)
		if err != nil {
			fmt.Fprintf(stderr, "pier: scrub of root %s: %v\n", roots.Name(r.Key), err)
			failed = true
			continue
		}
		if !r.Store.ReadOnly() {
			if err := jobs.SaveScrubResult(ctx, r.Store, res); err != nil {
				fmt.Fprintf(stderr, "pier: scrub: keeping the result: %v\n", err)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "scrub: %d repositories, %d blobs, %s read: %d ok, %d corrupt, %d missing, %d unreferenced\n",
		total.Repos, total.Blobs, store.HumanBytes(total.Bytes), total.OK, total.Corrupt, total.Missing, total.Unreferenced)
	if failed || total.Failed() {
		return 1
	}
	return 0
}

// exportCommand writes a repository, or one tag or digest of it, as an OCI
// layout in dir. It only reads, so it runs beside a serving pier.
func exportCommand(path, ref, dir string, stdout, stderr io.Writer) int {
	repo, tag := splitRef(ref)
	if err := oci.ValidateName(repo); err != nil {
		fmt.Fprintf(stderr, "pier: export: %v\n", err)
		return 2
	}
	job, ok := openOffline(path, true, stderr)
	if !ok {
		return 1
	}
	defer job.close()
	// A USB stick is pulled out right after: every write is durable.
	out, err := local.Open(dir, local.Options{Sync: true})
	if err != nil {
		fmt.Fprintf(stderr, "pier: export %s: %v\n", ref, err)
		return 1
	}
	defer out.Close()
	rep, err := job.ctl.StoreFor(repo).Export(context.Background(), repo, tag, out)
	if err != nil {
		fmt.Fprintf(stderr, "pier: export %s: %v\n", ref, err)
		return 1
	}
	fmt.Fprintf(stdout, "exported %s to %s: %d manifests, %d blobs, %s; tags %v\n", ref, dir, rep.Manifests, rep.Blobs, store.HumanBytes(rep.Bytes), rep.Tags)
	return 0
}

// importCommand adds the OCI layout in dir to repo through the store's
// commit path. It writes, so it needs the root to itself.
func importCommand(path, dir, repo string, stdout, stderr io.Writer) int {
	if err := oci.ValidateName(repo); err != nil {
		fmt.Fprintf(stderr, "pier: import: %v\n", err)
		return 2
	}
	job, ok := openOffline(path, false, stderr)
	if !ok {
		fmt.Fprintf(stderr, "pier: while pier serves, push the layout instead: skopeo copy --all oci:%s docker://HOST/%s\n", dir, repo)
		return 1
	}
	defer job.close()
	// Read through a driver, so no link in the layout leads out of it.
	layout, err := local.Open(dir, local.Options{ReadOnly: true})
	if err != nil {
		fmt.Fprintf(stderr, "pier: import %s: %v\n", dir, err)
		return 1
	}
	defer layout.Close()
	rep, err := job.ctl.StoreFor(repo).Import(context.Background(), layout, repo)
	if err != nil {
		fmt.Fprintf(stderr, "pier: import %s: %v\n", dir, err)
		return 1
	}
	fmt.Fprintf(stdout, "imported %s into %s: %d manifests, %d blobs, %s; tags %v\n", dir, repo, rep.Manifests, rep.Blobs, store.HumanBytes(rep.Bytes), rep.Tags)
	return 0
}

// tableBlock is how many rows are aligned together. A pass over a large
// store prints one row per image; flushing in blocks keeps the command's
// memory bounded (and its output flowing) instead of holding the whole
// table until the end.
const tableBlock = 200

// rowTable is a tab-aligned table that flushes every tableBlock rows.
type rowTable struct {
	tw   *tabwriter.Writer
	rows int
}

// table starts a tab-aligned table with its header line.
func table(w io.Writer, header ...string) *rowTable {
	t := &rowTable{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	return t
}

// Row writes one row of tab-separated cells.
func (t *rowTable) Row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprintln(t.tw)
	if t.rows++; t.rows%tableBlock == 0 {
		t.tw.Flush()
	}
}

// Flush writes the rows not yet written.
func (t *rowTable) Flush() { t.tw.Flush() }

// splitRef splits REPO[:TAG] or REPO@DIGEST.
func splitRef(ref string) (repo, tagOrDigest string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}
