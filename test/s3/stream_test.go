package s3

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// A blob pulled through pier on s3 over plain http is spliced from the
// bucket's connection to the client's. What a client sees is what it saw
// when pier copied: every byte of a whole GET and of ranges, a slow
// client served to the end, a stalled one cut by http.bodyIdleTimeout,
// and a client that leaves in the middle costs the next one nothing.
func TestStreamedPulls(t *testing.T) {
	b := bucket.New(t)
	const idle = 2 * time.Second
	p := pierproc.Start(t, pierproc.Options{
		Storage: b.Storage(map[string]any{"dedupe": true}),
		HTTP:    map[string]any{"bodyIdleTimeout": idle.String()},
	})
	c := ociclient.New(p.Addr)
	layer := random(48<<20 + 5)
	d, err := c.PushBlob("app", layer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PushBlob("copy", layer); err != nil { // a placeholder
		t.Fatal(err)
	}
	blobURL := func(repo string) string { return p.URL("/v2/" + repo + "/blobs/" + d.String()) }

	t.Run("whole and ranges", func(t *testing.T) {
		for _, repo := range []string{"app", "copy"} {
			resp, err := http.Get(blobURL(repo))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, layer) {
				t.Fatalf("GET of %s: %d, %d bytes, %v; want the layer's %d", repo, resp.StatusCode, len(got), err, len(layer))
			}
		}
		for _, r := range [][2]int{{0, 0}, {1, 100}, {5 << 20, 40<<20 + 3}, {len(layer) - 10, len(layer) - 1}} {
			req, _ := http.NewRequest("GET", blobURL("copy"), nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, layer[r[0]:r[1]+1]) {
				t.Fatalf("range %v: %d, %d bytes, %v", r, resp.StatusCode, len(got), err)
			}
		}
	})

	t.Run("slow client", func(t *testing.T) {
		// 1 MiB/s against a 2 s idle timeout: the chunks spliced shrink to
		// what it takes, and it is served to the end.
		resp, err := http.Get(blobURL("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got bytes.Buffer
		buf := make([]byte, 64<<10)
		deadline := time.Now().Add(6 * time.Second)
		for time.Now().Before(deadline) {
			n, err := io.ReadFull(resp.Body, buf)
			got.Write(buf[:n])
			if err != nil {
				t.Fatalf("a slow client got %d bytes, then %v", got.Len(), err)
			}
			time.Sleep(60 * time.Millisecond)
		}
		rest, err := io.ReadAll(resp.Body)
		got.Write(rest)
		if err != nil || !bytes.Equal(got.Bytes(), layer) {
			t.Fatalf("a slow client got %d bytes (%v); want the layer's %d", got.Len(), err, len(layer))
		}
	})

	t.Run("stalled client", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.(*net.TCPConn).SetReadBuffer(64 << 10)
		fmt.Fprintf(conn, "GET /v2/app/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", d, p.Addr)
		time.Sleep(4 * idle) // reads nothing: pier gives up on it
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, _ := io.Copy(io.Discard, conn)
		if n >= int64(len(layer)) {
			t.Fatalf("a client that stalled for %v got the whole layer (%d bytes): it was not cut", 4*idle, n)
		}
	})

	t.Run("client that leaves", func(t *testing.T) {
		for range 8 {
			resp, err := http.Get(blobURL("copy"))
			if err != nil {
				t.Fatal(err)
			}
			io.CopyN(io.Discard, resp.Body, 1<<20)
			resp.Body.Close()
		}
		req, _ := http.NewRequest("GET", blobURL("app"), nil)
		req.Header.Set("Range", "bytes=1000-"+strconv.Itoa(len(layer)-1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, layer[1000:]) {
			t.Fatalf("after clients that left, a GET got %d bytes, %v", len(got), err)
		}
	})
}
