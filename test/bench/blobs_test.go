package bench

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// chunkSize is the PATCH size of the chunked push.
const chunkSize = 16 * MiB

// BenchmarkPush256MiB pushes a 256 MiB random blob, as one streamed PUT
// and as 16 MiB PATCH chunks. pier must hash every byte it stores, so the
// limit is sha256 on this CPU; the rest of a push (socket read, file
// write) should hide behind it. Target: >= 0.6x sha256.
func BenchmarkPush256MiB(b *testing.B) {
	data, d := blob256(b)
	sha := sha256MiBs(b)
	push := map[string]func(p *pier, repo string) error{
		"stream": func(p *pier, repo string) error {
			return p.Client.PushBlobStream(repo, d, bytes.NewReader(data), int64(len(data)))
		},
		"chunked16MiB": func(p *pier, repo string) error {
			return pushChunked(p.Client, repo, d, data, chunkSize)
		},
	}
	for _, name := range []string{"stream", "chunked16MiB"} {
		b.Run(name, func(b *testing.B) {
			p := startPier(b, pierproc.Options{})
			b.ResetTimer()
			var best time.Duration
			for range b.N {
				i := 0
				best = bestOf(b, attempts, func() time.Duration {
					i++
					repo := fmt.Sprintf("push/%s%d", strings.ToLower(name), i)
					took := timed(b, func() error { return push[name](p, repo) })
					b.Logf("attempt %d: %v, %.0f MiB/s", i, took.Round(time.Millisecond), mibps(int64(len(data)), took))
					// Drop the blob so its dirty pages are not written
					// back under the next attempt.
					if err := p.Client.Delete(repo, "blobs", d.String()); err != nil {
						b.Fatal(err)
					}
					return took
				})
			}
			record(b, measure{
				name: "push 256MiB " + name, value: mibps(int64(len(data)), best), unit: "MiB/s",
				limit: sha, limitName: "sha256", metric: "x_sha256",
			}, ratioAtLeast(0.6))
		})
	}
}

// BenchmarkPull256MiB pulls the 256 MiB blob (GET, body discarded, size
// checked). The limit is this process reading the same stored file from
// the page cache; the target is 1 GiB/s on loopback. It then checks which
// syscalls moved the bytes: sendfile means the blob never passed through
// pier's memory.
func BenchmarkPull256MiB(b *testing.B) {
	data, d := blob256(b)
	size := int64(len(data))
	p := startPier(b, pierproc.Options{})
	const repo = "pull/blob"
	if err := p.Client.PushBlobStream(repo, d, bytes.NewReader(data), size); err != nil {
		b.Fatal(err)
	}
	limit := pageCacheMiBs(b, blobFile(p, repo, d))
	buf := make([]byte, pullBufSize)
	pull := func() error { return getBlob(p.Client, repo, d, size, buf) }
	if err := pull(); err != nil { // warm the connection and the server
		b.Fatal(err)
	}
	b.ResetTimer()
	var best time.Duration
	for range b.N {
		best = bestOf(b, attempts, func() time.Duration { return timed(b, pull) })
	}
	b.StopTimer()
	record(b, measure{
		name: "pull 256MiB", value: mibps(size, best), unit: "MiB/s",
		limit: limit, limitName: "page-cache read", metric: "x_pagecache",
	}, valueAtLeast(1024, "MiB/s"))

	// Which syscalls moved the bytes: first the kernel's counters (no
	// tracer, so nothing is slowed), then strace for the names.
	before, err := readProcIO(p.Pid)
	if err != nil {
		b.Fatal(err)
	}
	if err := pull(); err != nil {
		b.Fatal(err)
	}
	after, err := readProcIO(p.Pid)
	if err != nil {
		b.Fatal(err)
	}
	io := after.sub(before)
	b.Logf("/proc/%d/io over one pull: rchar %d (%.1f MiB) in %d read-type calls, wchar %d in %d write-type calls, read_bytes %d (from disk)",
		p.Pid, io.RChar, float64(io.RChar)/MiB, io.SyscR, io.WChar, io.SyscW, io.ReadBytes)
	perCall := float64(io.RChar) / float64(max(io.SyscR, 1))
	// A read(2)/write(2) loop in pier reads at most 256 KiB per call (its
	// largest buffer; io.Copy's is 32 KiB); sendfile moves up to 4 MiB.
	note(b, "pull 256MiB /proc io", fmt.Sprintf("%d read-type calls for %.0f MiB, %.0f KiB/call (> 256 KiB: no read loop), %d B from disk",
		io.SyscR, float64(io.RChar)/MiB, perCall/1024, io.ReadBytes), perCall > 256<<10)

	names := []string{"sendfile", "copy_file_range", "splice", "read", "write"}
	use, err := traceSyscalls(p.Pid, names, pull)
	if err != nil {
		note(b, "pull 256MiB syscalls", "strace could not trace: "+err.Error(), false)
		return
	}
	var parts []string
	var viaSendfile int64
	for _, u := range use {
		if u.Calls == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d calls %.1f MiB", u.Name, u.Calls, float64(u.Bytes)/MiB))
		if u.Name == "sendfile" {
			viaSendfile = u.Bytes
		}
	}
	b.Logf("strace over one pull: %s", strings.Join(parts, "; "))
	record(b, measure{
		name: "pull 256MiB via sendfile", value: float64(viaSendfile) / MiB, unit: "MiB",
		limit: float64(size) / MiB, limitName: "blob", metric: "x_sendfile",
	}, ratioAtLeast(0.99))
	note(b, "pull 256MiB strace", strings.Join(parts, "; "), viaSendfile >= size*99/100)
}

// blobFile is where a blob lives in the repository's OCI layout.
func blobFile(p *pier, repo string, d digest.Digest) string {
	return filepath.Join(p.Root, filepath.FromSlash(repo), "blobs", d.Algorithm().String(), d.Encoded())
}
