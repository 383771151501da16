package auth

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// TestSlowHeaders: 200 connections sending their headers one byte a
// second do not keep pier from serving a normal client, and each is cut
// when the header timeout runs out.
func TestSlowHeaders(t *testing.T) {
	const (
		slow    = 200
		timeout = 2 * time.Second
	)
	srv := pierproc.Start(t, pierproc.Options{HTTP: map[string]any{"readHeaderTimeout": timeout.String()}})
	request := "GET /v2/ HTTP/1.1\r\nHost: pier\r\nUser-Agent: slowloris\r\n\r\n"

	start := time.Now()
	cut := make(chan time.Duration, slow)
	var wg sync.WaitGroup
	for range slow {
		conn, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Go(func() {
			closed := make(chan struct{})
			go func() { // the server's end: EOF (or an error) when it cuts us
				io.Copy(io.Discard, conn)
				cut <- time.Since(start)
				close(closed)
			}()
			for i := 0; i < len(request); i++ {
				if _, err := conn.Write([]byte{request[i]}); err != nil {
					break
				}
				select {
				case <-closed:
					return
				case <-time.After(time.Second):
				}
			}
			<-closed
		})
	}

	time.Sleep(500 * time.Millisecond)
	for i := range 3 {
		t0 := time.Now()
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(srv.URL("/v2/"))
		if err != nil {
			t.Fatalf("a normal client during the attack: %v", err)
		}
		resp.Body.Close()
		if took := time.Since(t0); resp.StatusCode != http.StatusOK || took > time.Second {
			t.Errorf("normal request %d during the attack: %s in %v", i, resp.Status, took)
		}
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout + 5*time.Second):
		t.Fatalf("slow connections still open %v after the header timeout", 5*time.Second)
	}
	close(cut)
	var latest time.Duration
	n := 0
	for d := range cut {
		latest = max(latest, d)
		n++
	}
	if n != slow || latest > timeout+2*time.Second {
		t.Errorf("%d of %d slow connections cut, the last after %v (header timeout %v)", n, slow, latest, timeout)
	}
	t.Logf("%d slow connections cut within %v of the %v header timeout", n, latest-timeout, timeout)
}

// TestHugeManifest: a 100 MiB manifest is refused with 413, whether it
// announces its size (refused unread) or streams it chunked (read no
// further than the cap), and pier's memory does not grow with it.
func TestHugeManifest(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	const huge = 100 << 20

	// Announced: the answer comes before any of the body is sent.
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v2/app/manifests/v1 HTTP/1.1\r\nHost: pier\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: %d\r\n\r\n", huge)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to an announced 100 MiB manifest before its body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "MANIFEST_INVALID") {
		t.Errorf("announced 100 MiB manifest: %s %s", resp.Status, body)
	}

	// Chunked: pier stops reading at the cap.
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = ' '
		}
		for sent := 0; sent < huge; sent += len(chunk) {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", srv.URL("/v2/app/manifests/v1"), pr)
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err = http.DefaultClient.Do(req)
	pr.CloseWithError(io.ErrClosedPipe)
	if err == nil {
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked 100 MiB manifest: %s %s", resp.Status, body)
		}
	} // else pier closed the connection while we still sent: refused too

	if hwm := vmHWM(t, srv.Cmd.Process.Pid); hwm > 48<<20 {
		t.Errorf("pier's peak memory reached %d MiB after a 100 MiB manifest", hwm>>20)
	}
}

// vmHWM is a process's peak resident size in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
