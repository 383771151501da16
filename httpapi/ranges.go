package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A blob's Range header is checked here, by RFC 9110 section 14, before
// http.ServeContent serves what it asks for. ServeContent answers a bad
// range with a plain-text 416, serves "bytes=-0" as a backwards range
// (44-43/44), refuses a unit it does not know instead of ignoring it, and
// takes a number too long for an int64 as invalid rather than as "to the
// end". What reaches it now is a range set it reads right: validated,
// clamped to the blob, and in bytes.

// maxRanges bounds the ranges of one request. RFC 9110 lets a server
// reject many small ranges, a sign of a broken client or of an attack (a
// multipart answer per range, from a short header).
const maxRanges = 16

// byteRange is first to last, inclusive.
type byteRange struct{ first, last int64 }

// checkRange rewrites r's Range header for a blob of size bytes last
// modified at modTime with entity tag etag. It returns nil when the blob
// is to be served (whole, or the ranges now in the header), or the 416 to
// answer, with Content-Range set on w as the RFC asks.
func checkRange(w http.ResponseWriter, r *http.Request, size int64, modTime time.Time, etag string) *apiError {
	header := r.Header.Get("Range")
	if header == "" {
		return nil
	}
	if preconditionAnswers(r, modTime, etag) {
		// A 304 or 412 comes before any range (RFC 9110 13.2.2):
		// ServeContent sends it.
		r.Header.Del("Range")
		return nil
	}
	if ir := r.Header.Get("If-Range"); ir != "" {
		// A stale If-Range asks for the whole representation: the range,
		// valid or not, is not looked at (RFC 9110 13.1.5).
		r.Header.Del("If-Range")
		if !ifRangeHolds(ir, modTime, etag) {
			r.Header.Del("Range")
			return nil
		}
	}
	unit, set, ok := strings.Cut(header, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		// A unit pier does not know is ignored (RFC 9110 14.2).
		r.Header.Del("Range")
		return nil
	}
	ranges, err := parseByteRanges(set, size)
	if err == nil && size == 0 {
		// The only satisfiable range of an empty blob is a suffix, and no
		// Content-Range can say "no bytes of 0": send it whole.
		r.Header.Del("Range")
		return nil
	}
	if err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return errRangeNotSatisfiable(fmt.Sprintf("Range %q: %v (the blob has %d bytes)", header, err, size))
	}
	parts := make([]string, len(ranges))
	for i, br := range ranges {
		parts[i] = strconv.FormatInt(br.first, 10) + "-" + strconv.FormatInt(br.last, 10)
	}
	r.Header.Set("Range", "bytes="+strings.Join(parts, ","))
	return nil
}

// parseByteRanges reads a bytes range-set and returns the satisfiable
// ranges, clamped to size. It fails on a malformed set, on too many ranges,
// and when no range is satisfiable.
func parseByteRanges(set string, size int64) ([]byteRange, error) {
	var out []byteRange
	specs := 0
	for _, spec := range strings.Split(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue // empty list elements are allowed, and ignored
		}
		if specs++; specs > maxRanges {
			return nil, fmt.Errorf("more than %d ranges", maxRanges)
		}
		firstText, lastText, ok := strings.Cut(spec, "-")
		if !ok {
			return nil, fmt.Errorf("%q is not a byte range", spec)
		}
		if firstText == "" { // suffix-range: the last n bytes
			n, ok := digits(lastText)
			if !ok {
				return nil, fmt.Errorf("%q is not a byte range", spec)
			}
			if n > 0 {
				out = append(out, byteRange{max(size-n, 0), size - 1})
			}
			continue
		}
		first, ok := digits(firstText)
		if !ok {
			return nil, fmt.Errorf("%q is not a byte range", spec)
		}
		last := int64(math.MaxInt64)
		if lastText != "" {
			if last, ok = digits(lastText); !ok {
				return nil, fmt.Errorf("%q is not a byte range", spec)
			}
			if last < first {
				return nil, fmt.Errorf("%q ends before it starts", spec)
			}
		}
		if first < size {
			out = append(out, byteRange{first, min(last, size-1)})
		}
	}
	if specs == 0 {
		return nil, fmt.Errorf("no range")
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no range within the blob")
	}
	return out, nil
}

// digits reads a non-empty run of decimal digits; a number too large for
// an int64 is the largest one (a last-pos past any blob's end).
func digits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-9)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// preconditionAnswers reports whether the request's preconditions answer
// it instead of its range, as http.ServeContent evaluates them: a failed
// If-Match or If-Unmodified-Since (412), a matching If-None-Match or an
// unchanged If-Modified-Since (304).
func preconditionAnswers(r *http.Request, modTime time.Time, etag string) bool {
	if im := r.Header.Get("If-Match"); im != "" {
		if !etagListHas(im, etag, false) {
			return true
		}
	} else if ius, err := http.ParseTime(r.Header.Get("If-Unmodified-Since")); err == nil && modTime.Truncate(time.Second).After(ius) {
		return true
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		return etagListHas(inm, etag, true)
	}
	ims, err := http.ParseTime(r.Header.Get("If-Modified-Since"))
	return err == nil && !modTime.Truncate(time.Second).After(ims)
}

// etagListHas reports whether a list of entity tags (or "*") names etag;
// weak compares W/"x" equal to "x".
func etagListHas(list, etag string, weak bool) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if weak {
			t = strings.TrimPrefix(t, "W/")
		}
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// ifRangeHolds reports whether an If-Range condition holds, as
// http.ServeContent judges it: a strong entity tag equal to the blob's,
// or the blob's modification time to the second.
func ifRangeHolds(ir string, modTime time.Time, etag string) bool {
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		return ir == etag
	}
	t, err := http.ParseTime(ir)
	return err == nil && t.Unix() == modTime.Unix()
}
