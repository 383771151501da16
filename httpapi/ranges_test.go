package httpapi

import (
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Blob ranges by RFC 9110 section 14: what is invalid or unsatisfiable is
// a 416 in the spec's JSON with Content-Range: bytes */<size>; a unit
// other than bytes is ignored; numbers too long for 64 bits mean "to the
// end"; preconditions come first.
func TestBlobRangeEdgeCases(t *testing.T) {
	f := newFixture(t)
	data := "0123456789abcdefghijklmnopqrstuvwxyz01234567" // 44 bytes, as in the issue
	d := f.pushBlob("app", []byte(data))
	empty := f.pushBlob("app", nil)
	etag := `"` + d.String() + `"`
	const huge = "99999999999999999999999999"
	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
		body   string // for 200 and 206
		cr     string // Content-Range
	}{
		{"one range", []string{"Range", "bytes=4-7"}, 206, "4567", "bytes 4-7/44"},
		{"open range", []string{"Range", "bytes=40-"}, 206, "4567", "bytes 40-43/44"},
		{"suffix", []string{"Range", "bytes=-4"}, 206, "4567", "bytes 40-43/44"},
		{"suffix longer than the blob", []string{"Range", "bytes=-100"}, 206, data, "bytes 0-43/44"},
		{"last past the end", []string{"Range", "bytes=40-100"}, 206, "4567", "bytes 40-43/44"},
		{"last too long for 64 bits", []string{"Range", "bytes=40-" + huge}, 206, "4567", "bytes 40-43/44"},
		{"suffix too long for 64 bits", []string{"Range", "bytes=-" + huge}, 206, data, "bytes 0-43/44"},
		{"unit in upper case", []string{"Range", "Bytes=4-7"}, 206, "4567", "bytes 4-7/44"},
		{"spaces and empty elements", []string{"Range", "bytes= , 4-7 ,"}, 206, "4567", "bytes 4-7/44"},
		{"one satisfiable of two", []string{"Range", "bytes=100-200, 4-7"}, 206, "4567", "bytes 4-7/44"},
		{"backwards", []string{"Range", "bytes=1-0"}, 416, "", "bytes */44"},
		{"suffix of nothing", []string{"Range", "bytes=-0"}, 416, "", "bytes */44"},
		{"start past the end", []string{"Range", "bytes=44-"}, 416, "", "bytes */44"},
		{"start too long for 64 bits", []string{"Range", "bytes=" + huge + "-"}, 416, "", "bytes */44"},
		{"not numbers", []string{"Range", "bytes=a-b"}, 416, "", "bytes */44"},
		{"negative", []string{"Range", "bytes=--1"}, 416, "", "bytes */44"},
		{"no range", []string{"Range", "bytes="}, 416, "", "bytes */44"},
		{"only commas", []string{"Range", "bytes=,,"}, 416, "", "bytes */44"},
		{"too many ranges", []string{"Range", "bytes=" + strings.Repeat("0-0,", 17) + "0-0"}, 416, "", "bytes */44"},
		{"another unit", []string{"Range", "items=0-1"}, 200, data, ""},
		{"no unit", []string{"Range", "0-1"}, 200, data, ""},
		{"stale If-Range", []string{"Range", "bytes=4-7", "If-Range", `"sha256:0000"`}, 200, data, ""},
		{"stale If-Range, bad range", []string{"Range", "bytes=1-0", "If-Range", `"sha256:0000"`}, 200, data, ""},
		{"matching If-Range", []string{"Range", "bytes=4-7", "If-Range", etag}, 206, "4567", "bytes 4-7/44"},
		{"matching If-Range, bad range", []string{"Range", "bytes=1-0", "If-Range", etag}, 416, "", "bytes */44"},
		{"If-None-Match first", []string{"Range", "bytes=1-0", "If-None-Match", etag}, 304, "", ""},
		{"If-Match first", []string{"Range", "bytes=1-0", "If-Match", `"other"`}, 412, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do("GET", "/v2/app/blobs/"+d.String(), nil, tc.hdr...)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("Content-Range"); got != tc.cr {
				t.Fatalf("Content-Range %q, want %q", got, tc.cr)
			}
			switch tc.status {
			case 200, 206:
				if string(body) != tc.body {
					t.Fatalf("body %q, want %q", body, tc.body)
				}
			case 416:
				var e struct {
					Errors []struct{ Code, Message string }
				}
				if json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code == "" ||
					resp.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("416 body %q is not the spec's error", body)
				}
			}
		})
	}
	// Two ranges are a multipart answer, each part right.
	resp := f.do("GET", "/v2/app/blobs/"+d.String(), nil, "Range", "bytes=0-1, 40-")
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 206 || mt != "multipart/byteranges" {
		t.Fatalf("two ranges: %d %s", resp.StatusCode, mt)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for _, want := range []struct{ cr, body string }{{"bytes 0-1/44", "01"}, {"bytes 40-43/44", "4567"}} {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		if p.Header.Get("Content-Range") != want.cr || string(b) != want.body {
			t.Fatalf("part %q %q, want %q %q", p.Header.Get("Content-Range"), b, want.cr, want.body)
		}
	}
	// An empty blob: a satisfiable suffix sends it whole, anything else is 416.
	if resp := f.do("GET", "/v2/app/blobs/"+empty.String(), nil, "Range", "bytes=-5"); resp.StatusCode != 200 || resp.ContentLength != 0 {
		t.Fatalf("suffix of an empty blob: %d, %d bytes", resp.StatusCode, resp.ContentLength)
	}
	resp = f.do("GET", "/v2/app/blobs/"+empty.String(), nil, "Range", "bytes=0-0")
	if resp.StatusCode != 416 || resp.Header.Get("Content-Range") != "bytes */0" {
		t.Fatalf("range of an empty blob: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	// HEAD answers the same, without a body.
	resp = f.do("HEAD", "/v2/app/blobs/"+d.String(), nil, "Range", "bytes=-0")
	if resp.StatusCode != 416 || resp.Header.Get("Content-Range") != "bytes */44" {
		t.Fatalf("HEAD with an unsatisfiable range: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	// If-Range with the blob's time.
	resp = f.do("HEAD", "/v2/app/blobs/"+d.String(), nil)
	lm := resp.Header.Get("Last-Modified")
	if tm, err := http.ParseTime(lm); err != nil || time.Since(tm) > time.Hour {
		t.Fatalf("Last-Modified %q", lm)
	}
	resp = f.do("GET", "/v2/app/blobs/"+d.String(), nil, "Range", "bytes=4-7", "If-Range", lm)
	if resp.StatusCode != 206 {
		t.Fatalf("If-Range with the blob's time: %d", resp.StatusCode)
	}
}
