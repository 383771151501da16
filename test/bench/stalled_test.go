package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

const (
	stalledUploads = 32
	stalledSent    = 4 << 20 // what each client sends of its 1 GiB before it stops
	stalledIdle    = 5 * time.Second
	// stalledCap is the packaged default of http.maxConcurrentUploads.
	stalledCap = 16
	// uploadBuffers is what one upload being written holds once data has
	// flowed (three hash buffers of 512 KiB).
	uploadBuffers = 3 << 19
)

// BenchmarkStalledUploads opens 32 uploads at once that each promise 1
// GiB, send 4 MiB and stop, as a hostile or broken client would; pier
// runs with the default upload cap (16: the rest are refused with 429)
// and a body idle timeout of 5 s (the default is 1 minute; a shorter one
// keeps the benchmark short). It reports the RSS while they stall and
// after the idle timeout cut them, against the packaged unit's GOMEMLIMIT
// (target <= 1x), what each upload taken costs against its buffers, and
// the open files, which must be back to idle after the cut.
func BenchmarkStalledUploads(b *testing.B) {
	var idle, stalled, after float64
	var idleFDs, stalledFDs, afterFDs, refused int
	for range b.N {
		p := startPier(b, pierproc.Options{HTTP: map[string]any{"bodyIdleTimeout": stalledIdle.String(), "maxConcurrentUploads": stalledCap}})
		time.Sleep(time.Second)
		idle, idleFDs = rssAndFiles(b, p.Pid)
		// All at once: one after another, the first would be cut before
		// the last arrived.
		opened := make(chan net.Conn, stalledUploads)
		for range stalledUploads {
			go func() { opened <- stallUpload(b, p) }()
		}
		conns := make([]net.Conn, 0, stalledUploads)
		answers := make(chan int, stalledUploads)
		for range stalledUploads {
			c := <-opened
			if c == nil {
				refused++
				continue
			}
			conns = append(conns, c)
			go func() { answers <- waitClosed(c) }()
		}
		// The POSTs' keep-alive connections are not what is measured.
		p.Client.HTTP.CloseIdleConnections()
		time.Sleep(time.Second)
		stalled, stalledFDs = rssAndFiles(b, p.Pid)
		_, hwm, err := procStatus(p.Pid)
		if err != nil {
			b.Fatal(err)
		}
		stalled = max(stalled, float64(hwm)/1024)
		cut := 0
		deadline := time.After(stalledIdle + 10*time.Second)
	wait:
		for cut < len(conns) {
			select {
			case <-answers:
				cut++
			case <-deadline:
				break wait
			}
		}
		time.Sleep(500 * time.Millisecond)
		p.Client.HTTP.CloseIdleConnections()
		after, afterFDs = rssAndFiles(b, p.Pid)
		for _, c := range conns {
			c.Close()
		}
		b.Logf("%d uploads: %d refused at once, %d stalled, %d of them cut within %v of the idle timeout (%v)",
			stalledUploads, refused, len(conns), cut, 10*time.Second, stalledIdle)
		note(b, "stalled uploads let go after the idle timeout", fmt.Sprintf("%d of %d cut", cut, len(conns)), cut == len(conns) && len(conns) > 0)
	}
	record(b, measure{
		name:  fmt.Sprintf("RSS, %d uploads stalled after 4 MiB (idle %.1f MiB)", stalledUploads, idle),
		value: stalled, unit: "MiB",
		limit: memLimitUnit / MiB, limitName: "GOMEMLIMIT", metric: "x_gomemlimit",
	}, ratioAtMost(1))
	held := min(stalledUploads, stalledCap)
	record(b, measure{
		name:  fmt.Sprintf("RSS growth per stalled upload taken (%d of %d)", held, stalledUploads),
		value: (stalled - idle) / float64(held), unit: "MiB",
		limit: float64(uploadBuffers) / MiB, limitName: "an upload's buffers", metric: "x_buffers",
	}, nil)
	record(b, measure{
		name: "RSS after the idle timeout cut them", value: after, unit: "MiB",
		limit: memLimitUnit / MiB, limitName: "GOMEMLIMIT", metric: "x_gomemlimit",
	}, ratioAtMost(1))
	note(b, "open files: idle, stalled, after the cut", fmt.Sprintf("%d, %d, %d", idleFDs, stalledFDs, afterFDs), afterFDs <= idleFDs+1)
}

// stallUpload starts an upload and a PATCH that promises 1 GiB, sends
// stalledSent bytes and stops. It returns the connection, or nil when pier
// refused the PATCH at once (429) or it failed (reported on b).
func stallUpload(b *testing.B, p *pier) net.Conn {
	resp, err := p.Client.Do("POST", "/v2/stall/app/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		b.Error(err)
		return nil
	}
	resp.Body.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		b.Error(err)
		return nil
	}
	fmt.Fprintf(c, "PATCH %s HTTP/1.1\r\nHost: pier\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", resp.Header.Get("Location"), 1<<30)
	// A refusal comes before the body is read: look for it first.
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if r, err := http.ReadResponse(br, nil); err == nil {
		c.Close()
		if r.StatusCode != http.StatusTooManyRequests {
			b.Errorf("PATCH of a stalled upload: %d", r.StatusCode)
		}
		return nil
	}
	c.SetReadDeadline(time.Time{})
	if _, err := io.CopyN(c, zeros{}, stalledSent); err != nil {
		b.Errorf("sending the first 4 MiB of a stalled upload: %v", err)
		c.Close()
		return nil
	}
	return c
}

// waitClosed reads until the server closes c.
func waitClosed(c net.Conn) int {
	n, _ := io.Copy(io.Discard, c)
	return int(n)
}

// rssAndFiles is a process's resident size (MiB) and open files.
func rssAndFiles(b *testing.B, pid int) (float64, int) {
	b.Helper()
	rss, _, err := procStatus(pid)
	if err != nil {
		b.Fatal(err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		b.Fatal(err)
	}
	return float64(rss) / 1024, len(fds)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
