package boltdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
	"syscall"
)

// checkShape reads the file at f, of size bytes, as bbolt's page format and
// reports the first thing about it that bbolt could not open safely.
//
// bbolt trusts its file. Opened with NoFreelistSync it walks every page
// reachable from the root to rebuild its freelist, and it reports what it
// finds wrong there from a goroutine of its own that panics: no recover
// can catch that, and the process dies. A page id past the end of a
// truncated file is worse: the read is a fault in the memory map. So the
// file is walked here first, with plain reads and bounds checks, and is
// handed to bbolt only when every page bbolt would touch is in the file
// and has the shape bbolt expects: the checks of bbolt's tx.check
// (reachable pages in range, referenced once, of the right type, keys in
// order), plus the bounds of every element, inline bucket and freelist
// entry.
//
// The format (bbolt's internal/common, stable since format version 2):
// page 0 and 1 are meta pages; each page starts with a 16-byte header
// (id uint64, flags uint16, count uint16, overflow uint32); a branch page
// holds count 16-byte elements (pos, ksize uint32, pgid uint64), a leaf
// page count 16-byte elements (flags, pos, ksize, vsize uint32), pos
// counted from the element itself; a bucket's value is its root pgid and
// sequence (two uint64), followed, for an inline bucket (root 0), by the
// bucket's single leaf page.
func checkShape(f io.ReaderAt, size int64) error {
	if size == 0 {
		return errors.New("the file is empty")
	}
	m, pageSize, err := readMeta(f, size)
	if err != nil {
		return err
	}
	if m.pgid < 2 || uint64(size)/uint64(pageSize) < m.pgid {
		return fmt.Errorf("the file is cut short: %d bytes, but its meta page counts %d pages of %d bytes", size, m.pgid, pageSize)
	}
	w := &walker{f: f, pageSize: pageSize, hwm: m.pgid, seen: map[uint64]bool{}}
	if m.freelist != noFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return err
		}
	}
	if m.root == 0 {
		return errors.New("the meta page names no root bucket")
	}
	if _, err := w.tree(m.root, nil, nil, 0); err != nil {
		return err
	}
	return nil
}

const (
	magic          = 0xED0CDAED
	formatVersion  = 2
	headerSize     = 16
	elementSize    = 16
	bucketHdrSize  = 16
	metaSize       = 56 // magic … txid; the checksum follows
	noFreelist     = ^uint64(0)
	branchFlag     = 0x01
	leafFlag       = 0x02
	freelistFlag   = 0x10
	bucketLeafFlag = 0x01
	maxDepth       = 64 // far deeper than any real tree; stops a cycle of buckets
	maxPageSize    = 1 << 24
)

type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// parseMeta reads a meta page's body (after the page header) and checks
// its magic, version and checksum, as bbolt's Meta.Validate does.
func parseMeta(b []byte) (meta, bool) {
	if len(b) < metaSize+8 {
		return meta{}, false
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != magic || le.Uint32(b[4:]) != formatVersion {
		return meta{}, false
	}
	h := fnv.New64a()
	h.Write(b[:metaSize])
	if h.Sum64() != le.Uint64(b[metaSize:]) {
		return meta{}, false
	}
	return meta{
		pageSize: le.Uint32(b[8:]),
		root:     le.Uint64(b[16:]),
		freelist: le.Uint64(b[32:]),
		pgid:     le.Uint64(b[40:]),
		txid:     le.Uint64(b[48:]),
	}, true
}

// readMeta finds the page size as bbolt does (from meta page 0, or else
// from meta page 1 at each possible page size), then picks the meta page
// bbolt would: the valid one with the higher transaction id.
func readMeta(f io.ReaderAt, size int64) (meta, int, error) {
	buf := make([]byte, headerSize+metaSize+8)
	read := func(off int64) (meta, bool) {
		if off+int64(len(buf)) > size {
			return meta{}, false
		}
		if _, err := f.ReadAt(buf, off); err != nil {
			return meta{}, false
		}
		return parseMeta(buf[headerSize:])
	}
	m, ok := read(0)
	pageSize := int(m.pageSize)
	if !ok {
		for i := 0; i <= 14; i++ {
			if m1, ok1 := read(1024 << i); ok1 && int(m1.pageSize) == 1024<<i {
				pageSize = 1024 << i
				break
			}
		}
	}
	if pageSize < 512 || pageSize > maxPageSize || pageSize&(pageSize-1) != 0 {
		return meta{}, 0, errors.New("no valid meta page: not a BoltDB file, or both meta pages are damaged")
	}
	m0, ok0 := read(0)
	m1, ok1 := read(int64(pageSize))
	ok0 = ok0 && int(m0.pageSize) == pageSize
	ok1 = ok1 && int(m1.pageSize) == pageSize
	switch {
	case ok0 && (!ok1 || m0.txid >= m1.txid):
		return m0, pageSize, nil
	case ok1:
		return m1, pageSize, nil
	}
	return meta{}, 0, errors.New("no valid meta page")
}

// walker reads pages by id and remembers which it has seen.
type walker struct {
	f        io.ReaderAt
	pageSize int
	hwm      uint64 // pages below this id exist
	seen     map[uint64]bool
}

// page reads page id, with its overflow, after checking that all of it
// lies below the high-water mark and that no other reference reached it.
func (w *walker) page(id uint64, wantFlags ...uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d: out of range [2, %d)", id, w.hwm)
	}
	hdr := make([]byte, headerSize)
	if _, err := w.f.ReadAt(hdr, int64(id)*int64(w.pageSize)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d: identifies itself as page %d", id, got)
	}
	flags, overflow := le.Uint16(hdr[8:]), uint64(le.Uint32(hdr[12:]))
	if !slices.Contains(wantFlags, flags) {
		return nil, fmt.Errorf("page %d: unexpected type %#x", id, flags)
	}
	if overflow >= w.hwm-id {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the end (%d pages)", id, overflow, w.hwm)
	}
	for i := uint64(0); i <= overflow; i++ {
		if w.seen[id+i] {
			return nil, fmt.Errorf("page %d: referenced more than once", id+i)
		}
		w.seen[id+i] = true
	}
	b := make([]byte, int64(overflow+1)*int64(w.pageSize))
	if _, err := w.f.ReadAt(b, int64(id)*int64(w.pageSize)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return b, nil
}

// freelist checks the freelist page and its ids.
func (w *walker) freelist(id uint64) error {
	b, err := w.page(id, freelistFlag)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	le := binary.LittleEndian
	count, off := uint64(le.Uint16(b[10:])), uint64(headerSize)
	if count == 0xFFFF {
		if len(b) < headerSize+8 {
			return errors.New("freelist: cut short")
		}
		count, off = le.Uint64(b[headerSize:]), headerSize+8
	}
	if count > (uint64(len(b))-off)/8 {
		return fmt.Errorf("freelist: %d ids do not fit its page", count)
	}
	for i := range count {
		if fid := le.Uint64(b[off+8*i:]); fid < 2 || fid >= w.hwm {
			return fmt.Errorf("freelist: page id %d out of range", fid)
		}
	}
	return nil
}

// tree checks the B+tree of one bucket rooted at page id, whose keys must
// lie in [lo, hi) (nil: unbounded), and returns its greatest key.
func (w *walker) tree(id uint64, lo, hi []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("page %d: the tree is deeper than %d", id, maxDepth)
	}
	b, err := w.page(id, branchFlag, leafFlag)
	if err != nil {
		return nil, err
	}
	return w.node(id, b, lo, hi, depth)
}

// node checks one branch or leaf page held in b (a page of the file, or
// an inline bucket's page inside a value).
func (w *walker) node(id uint64, b []byte, lo, hi []byte, depth int) ([]byte, error) {
	le := binary.LittleEndian
	if len(b) < headerSize {
		return nil, fmt.Errorf("page %d: cut short", id)
	}
	flags, count := le.Uint16(b[8:]), int(le.Uint16(b[10:]))
	if headerSize+count*elementSize > len(b) {
		return nil, fmt.Errorf("page %d: %d elements do not fit the page", id, count)
	}
	var prev, max []byte
	for i := range count {
		e := headerSize + i*elementSize
		var key, value []byte
		var child uint64
		var isBucket bool
		switch flags {
		case branchFlag:
			pos, ksize := int(le.Uint32(b[e:])), int(le.Uint32(b[e+4:]))
			child = le.Uint64(b[e+8:])
			if pos < 0 || ksize < 0 || e+pos+ksize > len(b) || e+pos+ksize < e {
				return nil, fmt.Errorf("page %d: element %d lies outside the page", id, i)
			}
			key = b[e+pos : e+pos+ksize]
		case leafFlag:
			eflags := le.Uint32(b[e:])
			pos, ksize, vsize := int(le.Uint32(b[e+4:])), int(le.Uint32(b[e+8:])), int(le.Uint32(b[e+12:]))
			end := e + pos + ksize + vsize
			if pos < 0 || ksize < 0 || vsize < 0 || end > len(b) || end < e {
				return nil, fmt.Errorf("page %d: element %d lies outside the page", id, i)
			}
			key, value = b[e+pos:e+pos+ksize], b[e+pos+ksize:end]
			isBucket = eflags&bucketLeafFlag != 0
		default:
			return nil, fmt.Errorf("page %d: unexpected type %#x", id, flags)
		}
		switch {
		case i == 0 && lo != nil && bytes.Compare(lo, key) > 0,
			i > 0 && bytes.Compare(prev, key) >= 0,
			hi != nil && bytes.Compare(key, hi) >= 0:
			return nil, fmt.Errorf("page %d: key %d out of order", id, i)
		}
		if flags == branchFlag {
			next := hi
			if i+1 < count {
				ne := headerSize + (i+1)*elementSize
				npos, nksize := int(le.Uint32(b[ne:])), int(le.Uint32(b[ne+4:]))
				if npos < 0 || nksize < 0 || ne+npos+nksize > len(b) {
					return nil, fmt.Errorf("page %d: element %d lies outside the page", id, i+1)
				}
				next = b[ne+npos : ne+npos+nksize]
			}
			sub, err := w.tree(child, key, next, depth+1)
			if err != nil {
				return nil, err
			}
			prev, max = sub, sub
			if prev == nil {
				prev = key
			}
			continue
		}
		if isBucket {
			if err := w.bucket(id, value, depth); err != nil {
				return nil, err
			}
		}
		prev, max = key, key
	}
	return max, nil
}

// bucket checks a bucket value: a root page, or an inline page.
func (w *walker) bucket(id uint64, value []byte, depth int) error {
	if len(value) < bucketHdrSize {
		return fmt.Errorf("page %d: a bucket value of %d bytes", id, len(value))
	}
	root := binary.LittleEndian.Uint64(value)
	if root != 0 {
		_, err := w.tree(root, nil, nil, depth+1)
		return err
	}
	inline := value[bucketHdrSize:]
	if len(inline) < headerSize || binary.LittleEndian.Uint16(inline[8:]) != leafFlag {
		return fmt.Errorf("page %d: an inline bucket that is not a leaf", id)
	}
	if depth > maxDepth {
		return fmt.Errorf("page %d: buckets nested deeper than %d", id, maxDepth)
	}
	_, err := w.node(id, inline, nil, nil, depth+1)
	return err
}

// fileShape opens path without following a link and checks it.
func fileShape(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	return checkShape(f, fi.Size())
}
