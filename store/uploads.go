package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/opencontainers/go-digest"
)

// An upload is a file <repo>/.uploads/<id> that grows by appends until its
// digest is given. Its sha256 is computed while the bytes stream in, so a
// monolithic or chunked push reads the data once; the hash state lives in
// memory only, and is rebuilt from the file when it is missing (after a
// restart) or out of step with the file (after a failed write).

var uploadIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// copyBufSize is the unit in which upload bodies are read, hashed and
// written: large enough for full-speed sha256 and few syscalls, small
// enough that many concurrent uploads stay within a Pi's memory.
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// An upload streams through hashDepth buffers of hashBufSize: one being
// read and written while the others wait for the hash (1.5 MiB per upload
// in flight).
const (
	hashDepth   = 3
	hashBufSize = 512 << 10
)

var hashBufs = sync.Pool{New: func() any { b := make([]byte, hashBufSize); return &b }}

// uploadSession is the in-memory part of an upload.
type uploadSession struct {
	mu     sync.Mutex // serialises writes to one upload
	sha    hash.Hash  // sha256 of the first hashed bytes of the file
	hashed int64
}

type uploadTable struct {
	mu       sync.Mutex
	sessions map[string]*uploadSession
}

func newUploadTable() *uploadTable { return &uploadTable{sessions: map[string]*uploadSession{}} }

func (t *uploadTable) get(key string) *uploadSession {
	t.mu.Lock()
	defer t.mu.Unlock()
	u, ok := t.sessions[key]
	if !ok {
		u = &uploadSession{sha: sha256.New()}
		t.sessions[key] = u
	}
	return u
}

func (t *uploadTable) drop(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sessions, key)
}

func newUploadID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// uploadPath validates id (it comes from the network) and returns its file.
func (s *Store) uploadPath(repo, id string) (string, error) {
	if !uploadIDRE.MatchString(id) {
		return "", fmt.Errorf("%w: %q", ErrUploadUnknown, id)
	}
	return filepath.Join(s.uploadsDir(repo), id), nil
}

// NewUpload starts an upload session in repo, creating the repository if
// needed, and returns its id.
func (s *Store) NewUpload(ctx context.Context, repo string) (string, error) {
	id := newUploadID()
	f, err := s.createUpload(repo, id)
	if err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("start upload in %s: %w", repo, err)
	}
	return id, nil
}

// createUpload makes the file of a new upload, creating the repository if
// needed. An empty repository may be removed (by GC, or by the clean-up of
// a push that failed) between its creation and the upload's, so the file
// is made under the repository's lock once the repository is seen to be
// there; after that the upload itself keeps it.
func (s *Store) createUpload(repo, id string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		if err := s.ensureRepo(repo); err != nil {
			return nil, err
		}
		unlock := s.locks.rlock(repo)
		if !s.repoExists(repo) && attempt < 3 {
			unlock()
			continue
		}
		f, err := os.OpenFile(filepath.Join(s.uploadsDir(repo), id), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
		unlock()
		if err != nil {
			return nil, fmt.Errorf("start upload in %s: %w", repo, err)
		}
		return f, nil
	}
}

// UploadSize returns how many bytes upload id of repo holds.
func (s *Store) UploadSize(ctx context.Context, repo, id string) (int64, error) {
	path, err := s.uploadPath(repo, id)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		if notFound(err) {
			return 0, fmt.Errorf("%w: %s", ErrUploadUnknown, id)
		}
		return 0, fmt.Errorf("stat upload %s: %w", id, err)
	}
	return fi.Size(), nil
}

// OffsetError is ErrUploadOffset with the upload's current size, which the
// client needs to resume.
type OffsetError struct{ Size int64 }

func (e *OffsetError) Error() string {
	return fmt.Sprintf("%v: the upload holds %d bytes", ErrUploadOffset, e.Size)
}
func (e *OffsetError) Unwrap() error { return ErrUploadOffset }

// WriteUpload appends r to upload id. When start is not negative it must
// equal the upload's current size (chunks arrive in order), else an
// *OffsetError is returned and nothing is written. It returns the new size.
func (s *Store) WriteUpload(ctx context.Context, repo, id string, start int64, r io.Reader) (int64, error) {
	if err := s.pushable(); err != nil {
		return 0, err
	}
	o, err := s.openUpload(repo, id)
	if err != nil {
		return 0, err
	}
	defer o.close()
	u, f, size := o.session, o.file, o.size
	if start >= 0 && start != size {
		return 0, &OffsetError{Size: size}
	}
	return s.appendUpload(u, f, size, r)
}

// errWriteUpload marks a failed write to an upload's file (a full disk,
// an I/O error), as opposed to a failed read of the request body.
var errWriteUpload = errors.New("write upload")

// appendUpload copies r to the end of f and returns the new size. A chunk
// whose write fails (the disk is full) is taken back whole: the file is
// cut back to its size before the chunk, so the upload is where the
// client last left it and the space is free for the next push. A chunk
// whose body stops (the client went away) keeps what arrived, which the
// client may resume from.
func (s *Store) appendUpload(u *uploadSession, f *os.File, size int64, r io.Reader) (int64, error) {
	start := size
	size, err := s.appendData(u, f, size, r)
	if err == nil || !errors.Is(err, errWriteUpload) {
		return size, err
	}
	// The running hash has seen bytes the file no longer holds: start it
	// again, so the commit hashes the file rather than trust it.
	u.sha.Reset()
	u.hashed = 0
	if terr := f.Truncate(start); terr != nil {
		s.log.Error("cannot take back a failed chunk; dropping the upload", "upload", f.Name(), "err", terr)
		if rerr := os.Remove(f.Name()); rerr != nil {
			s.log.Error("cannot remove an upload", "upload", f.Name(), "err", rerr)
		}
		return start, fmt.Errorf("%w; the upload is dropped: %v", err, terr)
	}
	return start, err
}

// appendData copies r to the end of f, hashing what is written while the
// hash is in step with the file. The hash runs on its own goroutine, a few
// buffers behind the reads and writes, so a push costs the slower of hashing
// and I/O rather than their sum; it is done with the last byte before
// appendData returns.
func (s *Store) appendData(u *uploadSession, f *os.File, size int64, r io.Reader) (int64, error) {
	if u.hashed != size {
		return appendUnhashed(f, size, r) // the commit will hash the file again
	}
	// Buffers are taken from the pool as the data needs them: a body that
	// stalls (a client that stopped sending) holds one, not hashDepth.
	free := make(chan *[]byte, hashDepth)
	taken := 0
	next := func() *[]byte {
		select {
		case b := <-free:
			return b
		default:
		}
		if taken < hashDepth {
			taken++
			return hashBufs.Get().(*[]byte)
		}
		return <-free
	}
	written := make(chan []byte, hashDepth)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range written {
			u.sha.Write(b)
			u.hashed += int64(len(b))
			b = b[:cap(b)]
			free <- &b
		}
	}()
	defer func() {
		close(written)
		<-hashed
		for range taken {
			hashBufs.Put(<-free)
		}
	}()
	for {
		bufp := next()
		n, rerr := io.ReadFull(r, *bufp)
		w, werr := 0, error(nil)
		if n > 0 {
			w, werr = f.Write((*bufp)[:n])
			size += int64(w)
		}
		written <- (*bufp)[:w] // hashed, and handed back to free, in order
		if werr != nil {
			return size, fmt.Errorf("%w: %w", errWriteUpload, werr)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return size, nil
		case rerr != nil:
			return size, fmt.Errorf("%w: reading the request body: %v", ErrUploadInvalid, rerr)
		}
	}
}

// appendUnhashed copies r to the end of f.
func appendUnhashed(f *os.File, size int64, r io.Reader) (int64, error) {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	for {
		n, rerr := r.Read(*bufp)
		if n > 0 {
			w, werr := f.Write((*bufp)[:n])
			size += int64(w)
			if werr != nil {
				return size, fmt.Errorf("%w: %w", errWriteUpload, werr)
			}
		}
		if rerr == io.EOF {
			return size, nil
		}
		if rerr != nil {
			return size, fmt.Errorf("%w: reading the request body: %v", ErrUploadInvalid, rerr)
		}
	}
}

// openedUpload is an upload held for writing: its session locked and its
// file open for appending.
type openedUpload struct {
	session   *uploadSession
	file      *os.File
	size      int64
	path, key string
}

func (o *openedUpload) close() {
	o.file.Close()
	o.session.mu.Unlock()
}

// openUpload validates id, locks its session and opens its file.
func (s *Store) openUpload(repo, id string) (*openedUpload, error) {
	path, err := s.uploadPath(repo, id)
	if err != nil {
		return nil, err
	}
	key := repo + "\x00" + id
	u := s.uploads.get(key)
	u.mu.Lock()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			return &openedUpload{session: u, file: f, size: fi.Size(), path: path, key: key}, nil
		}
		f.Close()
	}
	u.mu.Unlock()
	s.uploads.drop(key)
	if notFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrUploadUnknown, id)
	}
	return nil, fmt.Errorf("open upload %s: %w", id, err)
}

// CommitUpload appends r (the optional last chunk) to upload id, checks the
// whole content against d and, when it matches, makes it blob d of repo
// durably. A mismatch deletes the upload and changes nothing else.
func (s *Store) CommitUpload(ctx context.Context, repo, id string, r io.Reader, d digest.Digest) (BlobInfo, error) {
	if err := s.pushable(); err != nil {
		return BlobInfo{}, err
	}
	o, err := s.openUpload(repo, id)
	if err != nil {
		return BlobInfo{}, err
	}
	defer o.close()
	return s.commitOpened(ctx, repo, id, o, r, d)
}

// commitOpened is CommitUpload of an upload already held.
func (s *Store) commitOpened(ctx context.Context, repo, id string, o *openedUpload, r io.Reader, d digest.Digest) (BlobInfo, error) {
	u, f, size, path, key := o.session, o.file, o.size, o.path, o.key
	var err error
	if r != nil {
		if size, err = s.appendUpload(u, f, size, r); err != nil {
			return BlobInfo{}, err
		}
	}
	got, err := uploadDigest(u, path, size, d.Algorithm())
	if err != nil {
		return BlobInfo{}, err
	}
	if got != d {
		s.uploads.drop(key)
		f.Close()
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot remove rejected upload", "repo", repo, "upload", id, "err", err)
		}
		return BlobInfo{}, fmt.Errorf("%w: uploaded content is %s, not %s", ErrDigestMismatch, got, d)
	}
	if err := s.fs.SyncFile(f); err != nil {
		return BlobInfo{}, err
	}
	if err := f.Close(); err != nil {
		return BlobInfo{}, fmt.Errorf("close upload %s: %w", id, err)
	}
	if err := s.commitBlob(ctx, repo, path, d, size); err != nil {
		return BlobInfo{}, err
	}
	s.uploads.drop(key)
	s.log.Debug("blob committed", "repo", repo, "digest", d, "bytes", size)
	return BlobInfo{Digest: d, Size: size}, nil
}

// uploadDigest returns the digest of the upload's content with algorithm
// alg, from the running hash when it covers the whole file, else by reading
// the file again.
func uploadDigest(u *uploadSession, path string, size int64, alg digest.Algorithm) (digest.Digest, error) {
	if alg == digest.SHA256 && u.hashed == size {
		return digest.NewDigest(alg, u.sha), nil
	}
	f, err := openRegular(path)
	if err != nil {
		return "", fmt.Errorf("rehash upload: %w", err)
	}
	defer f.Close()
	dg, err := alg.FromReader(f)
	if err != nil {
		return "", fmt.Errorf("rehash upload: %w", err)
	}
	return dg, nil
}

// PutBlob stores r as blob d of repo in one step (a monolithic upload).
// The upload is held from its creation to its commit, so that garbage
// collection (with gcDelay 0 every upload is old enough) cannot take it.
func (s *Store) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader) (BlobInfo, error) {
	existed := s.repoExists(repo)
	id := newUploadID()
	path := filepath.Join(s.uploadsDir(repo), id)
	key := repo + "\x00" + id
	u := s.uploads.get(key)
	u.mu.Lock()
	f, err := s.createUpload(repo, id)
	if err != nil {
		u.mu.Unlock()
		s.uploads.drop(key)
		return BlobInfo{}, err
	}
	o := &openedUpload{session: u, file: f, path: path, key: key}
	info, err := s.commitOpened(ctx, repo, id, o, r, d)
	if err != nil && !errors.Is(err, ErrDigestMismatch) {
		s.uploads.drop(key)
		os.Remove(path)
	}
	o.close()
	if err != nil && !existed {
		s.dropIfEmpty(repo) // a failed push creates no repository
	}
	return info, err
}

// CancelUpload abandons upload id of repo.
func (s *Store) CancelUpload(ctx context.Context, repo, id string) error {
	path, err := s.uploadPath(repo, id)
	if err != nil {
		return err
	}
	key := repo + "\x00" + id
	u := s.uploads.get(key)
	u.mu.Lock()
	defer u.mu.Unlock()
	s.uploads.drop(key)
	if err := os.Remove(path); err != nil {
		if notFound(err) {
			return fmt.Errorf("%w: %s", ErrUploadUnknown, id)
		}
		return fmt.Errorf("cancel upload %s: %w", id, err)
	}
	return nil
}
