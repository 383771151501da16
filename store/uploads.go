package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
)

// An upload is an object <repo>/.uploads/<id> that grows by appends until
// its digest is given. Its sha256 is computed while the bytes stream in,
// so a monolithic or chunked push reads the data once. The hash state
// lives in memory, and, where the driver's writer keeps a checkpoint
// (driver.Checkpointer: s3), is saved with the upload at every chunk, so
// that a chunked push round-robined over replicas, or resumed after a
// restart, goes on from it. Without one, a hash that is missing or out of
// step is rebuilt at the commit by reading the upload again.

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
	mu     sync.Mutex // serialises the requests of one upload
	sha    hash.Hash  // sha256 of the first hashed bytes of the upload
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

// checkUploadID validates id, which comes from the network: the form
// newUploadID makes, 8-4-4-4-12 lower-case hex digits.
func checkUploadID(id string) error {
	ok := len(id) == 36
	for i := 0; ok && i < len(id); i++ {
		switch c := id[i]; i {
		case 8, 13, 18, 23:
			ok = c == '-'
		default:
			ok = '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
		}
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrUploadUnknown, id)
	}
	return nil
}

// NewUpload starts an upload session in repo, creating the repository if
// needed, and returns its id.
func (s *Store) NewUpload(ctx context.Context, repo string) (string, error) {
	if err := s.admit(ctx, repo, 1); err != nil {
		return "", err
	}
	id := newUploadID()
	w, err := s.createUpload(ctx, repo, id)
	if err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", fromDriver(err, nil, "start upload in %s", repo)
	}
	return id, nil
}

// createUpload makes a new upload, creating the repository if needed. An
// empty repository may be removed (by GC, or by the clean-up of a push
// that failed) between its creation and the upload's, so the upload is
// made under the repository's lock once the repository is seen to be
// there; after that the upload itself keeps it.
func (s *Store) createUpload(ctx context.Context, repo, id string) (driver.Writer, error) {
	for attempt := 0; ; attempt++ {
		if err := s.ensureRepo(ctx, repo); err != nil {
			return nil, err
		}
		unlock := s.locks.RLock(repo)
		if !s.repoExists(ctx, repo) {
			unlock()
			if attempt < 3 {
				continue
			}
			return nil, fmt.Errorf("start upload in %s: the repository keeps being removed as it is created", repo)
		}
		w, err := s.drv.Create(ctx, uploadKey(repo, id))
		unlock()
		if err != nil {
			return nil, fromDriver(err, nil, "start upload in %s", repo)
		}
		return w, nil
	}
}

// UploadSize returns how many bytes upload id of repo holds.
func (s *Store) UploadSize(ctx context.Context, repo, id string) (int64, error) {
	if err := checkUploadID(id); err != nil {
		return 0, err
	}
	info, err := s.drv.Stat(ctx, uploadKey(repo, id))
	if err != nil {
		return 0, fromDriver(err, ErrUploadUnknown, "upload %s", id)
	}
	return info.Size, nil
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
// *OffsetError is returned and nothing is written. A chunk that fails
// half-way (the client went away, the disk filled) is taken back whole.
// It returns the new size.
func (s *Store) WriteUpload(ctx context.Context, repo, id string, start int64, r io.Reader) (int64, error) {
	if err := s.pushable(ctx); err != nil {
		return 0, err
	}
	o, err := s.openUpload(ctx, repo, id)
	if err != nil {
		return 0, err
	}
	defer o.session.mu.Unlock()
	if size := o.w.Size(); start >= 0 && start != size {
		o.w.Close()
		return 0, &OffsetError{Size: size}
	}
	if err := s.appendChunk(o, r); err != nil {
		return 0, err
	}
	size := o.w.Size()
	if err := s.admit(ctx, repo, size); err != nil {
		s.refuseUpload(o) // its bytes are free at once
		return 0, err
	}
	checkpoint(o.session, o.w)
	if err := o.w.Close(); err != nil {
		return 0, fromDriver(err, ErrUploadUnknown, "upload %s", id)
	}
	return size, nil
}

// openedUpload is an upload held for writing: its session locked and a
// writer open on it.
type openedUpload struct {
	session *uploadSession
	w       driver.Writer
	repo    string
	id      string
	key     string // in the session table
}

// openUpload validates id, locks its session and opens its writer. The
// caller unlocks the session.
func (s *Store) openUpload(ctx context.Context, repo, id string) (*openedUpload, error) {
	if err := checkUploadID(id); err != nil {
		return nil, err
	}
	key := repo + "\x00" + id
	u := s.uploads.get(key)
	u.mu.Lock()
	w, err := s.drv.Append(ctx, uploadKey(repo, id))
	if err != nil {
		u.mu.Unlock()
		s.uploads.drop(key)
		return nil, fromDriver(err, ErrUploadUnknown, "upload %s", id)
	}
	if u.hashed != w.Size() {
		resume(u, w)
	}
	return &openedUpload{session: u, w: w, repo: repo, id: id, key: key}, nil
}

// resume takes the running hash from the checkpoint the writer found with
// the upload, when it describes the upload as it is (another replica, or
// this process before a restart, wrote the last chunk).
func resume(u *uploadSession, w driver.Writer) {
	c, ok := w.(driver.Checkpointer)
	if !ok {
		return
	}
	state, size := c.Checkpoint()
	if state == nil || size != w.Size() {
		return
	}
	h := sha256.New()
	if h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state) != nil {
		return
	}
	u.sha, u.hashed = h, size
}

// checkpoint saves the running hash with the upload, where the writer
// keeps one and the hash covers the whole upload. It is stored with the
// chunk at Close, or not at all.
func checkpoint(u *uploadSession, w driver.Writer) {
	c, ok := w.(driver.Checkpointer)
	if !ok || u.hashed != w.Size() {
		return
	}
	if state, err := u.sha.(encoding.BinaryMarshaler).MarshalBinary(); err == nil {
		c.SetCheckpoint(state)
	}
}

// appendChunk copies r to the end of the upload, hashing it when the hash
// is in step with the upload. A chunk whose body stops (the client went
// away, or stalled and was cut) keeps what arrived, which the client may
// resume from; one whose write fails (the disk is full) is taken back
// whole, and the hash returned to where it was, so the upload is where
// the client last left it and the space is free for the next push. Either
// way the writer is ended.
func (s *Store) appendChunk(o *openedUpload, r io.Reader) error {
	u := o.session
	var saved []byte
	if u.hashed == o.w.Size() {
		saved, _ = u.sha.(encoding.BinaryMarshaler).MarshalBinary()
	}
	hashedBefore := u.hashed
	err := appendUpload(u, o.w, r)
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUploadInvalid) { // the body, not the storage
		checkpoint(u, o.w)
		if cerr := o.w.Close(); cerr != nil {
			return fromDriver(cerr, ErrUploadUnknown, "keep what arrived of upload %s", o.id)
		}
		return err
	}
	if aerr := o.w.Abort(); aerr != nil {
		s.log.Warn("cannot take back a failed chunk; the upload is dropped", "repo", o.repo, "upload", o.id, "err", aerr)
		s.drv.Delete(context.Background(), uploadKey(o.repo, o.id))
		s.uploads.drop(o.key)
		return err
	}
	if saved != nil && u.sha.(encoding.BinaryUnmarshaler).UnmarshalBinary(saved) == nil {
		u.hashed = hashedBefore
	} else {
		u.sha.Reset()
		u.hashed = -1 // out of step: the commit hashes the upload again
	}
	return err
}

// appendUpload copies r to w, hashing what is written while the hash is in
// step with the upload. The hash runs on its own goroutine, a few buffers
// behind the reads and writes, so a push costs the slower of hashing and
// I/O rather than their sum; it is done with the last byte before
// appendUpload returns.
func appendUpload(u *uploadSession, w sizedWriter, r io.Reader) error {
	if u.hashed != w.Size() {
		return appendUnhashed(w, r) // the commit will hash the upload again
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
		w0, werr := 0, error(nil)
		if n > 0 {
			w0, werr = w.Write((*bufp)[:n])
		}
		written <- (*bufp)[:w0] // hashed, and handed back to free, in order
		if werr != nil {
			return fromDriver(werr, nil, "write upload")
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return nil
		case rerr != nil:
			return fmt.Errorf("%w: reading the request body: %v", ErrUploadInvalid, rerr)
		}
	}
}

// sizedWriter is what appendUpload writes to: an upload's writer, or a
// blob's placed straight at its key.
type sizedWriter interface {
	io.Writer
	Size() int64
}

// appendUnhashed copies r to w.
func appendUnhashed(w io.Writer, r io.Reader) error {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	for {
		n, rerr := r.Read(*bufp)
		if n > 0 {
			if _, werr := w.Write((*bufp)[:n]); werr != nil {
				return fromDriver(werr, nil, "write upload")
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("%w: reading the request body: %v", ErrUploadInvalid, rerr)
		}
	}
}

// CommitUpload appends r (the optional last chunk) to upload id, checks the
// whole content against d and, when it matches, makes it blob d of repo
// durably. A mismatch deletes the upload and changes nothing else.
func (s *Store) CommitUpload(ctx context.Context, repo, id string, r io.Reader, d digest.Digest) (BlobInfo, error) {
	if err := s.pushable(ctx); err != nil {
		return BlobInfo{}, err
	}
	o, err := s.openUpload(ctx, repo, id)
	if err != nil {
		return BlobInfo{}, err
	}
	defer o.session.mu.Unlock()
	return s.commitOpened(ctx, o, r, d)
}

// commitOpened is CommitUpload of an upload already held. The writer is
// ended whatever happens.
func (s *Store) commitOpened(ctx context.Context, o *openedUpload, r io.Reader, d digest.Digest) (BlobInfo, error) {
	if info, placed, err := s.placeOpened(ctx, o, r, d); placed {
		return info, err
	}
	if r != nil {
		if err := s.appendChunk(o, r); err != nil {
			return BlobInfo{}, err
		}
	}
	size := o.w.Size()
	got, err := s.uploadDigest(ctx, o, d.Algorithm())
	if err != nil {
		o.w.Close()
		return BlobInfo{}, err
	}
	if got != d {
		return BlobInfo{}, s.rejectMismatch(ctx, o, got, d)
	}
	if err := s.admitBlob(ctx, o.repo, d, size); err != nil {
		s.refuseUpload(o)
		return BlobInfo{}, err
	}
	if err := s.commitBlob(ctx, o, d, size); err != nil {
		return BlobInfo{}, err
	}
	s.uploads.drop(o.key)
	s.log.Debug("blob committed", "repo", o.repo, "digest", d, "bytes", size)
	return BlobInfo{Digest: d, Size: size}, nil
}

// uploadDigest returns the digest of the upload's content with algorithm
// alg, from the running hash when it covers the whole upload, else by
// reading the upload again (its writer is reopened after).
func (s *Store) uploadDigest(ctx context.Context, o *openedUpload, alg digest.Algorithm) (digest.Digest, error) {
	u := o.session
	if alg == digest.SHA256 && u.hashed == o.w.Size() {
		return digest.NewDigest(alg, u.sha), nil
	}
	if err := o.w.Close(); err != nil {
		return "", fromDriver(err, ErrUploadUnknown, "rehash upload %s", o.id)
	}
	f, _, err := s.drv.Open(ctx, uploadKey(o.repo, o.id))
	if err != nil {
		return "", fromDriver(err, ErrUploadUnknown, "rehash upload %s", o.id)
	}
	dg, err := alg.FromReader(ctxReader{ctx, f})
	f.Close()
	if err != nil {
		return "", fromDriver(err, nil, "rehash upload %s", o.id)
	}
	w, err := s.drv.Append(ctx, uploadKey(o.repo, o.id))
	if err != nil { // o.w stays the ended writer: closing it again is harmless
		return "", fromDriver(err, ErrUploadUnknown, "rehash upload %s", o.id)
	}
	o.w = w
	return dg, nil
}

// commitBlob makes a verified upload blob d of repo. With dedupe the blob
// becomes a link to a copy already in the store and the upload is
// dropped. If the blob is already there the upload is dropped too: blobs
// are immutable, and rewriting one would break the links that share it.
// A per-blob lock orders concurrent pushes of one blob, so the second is
// acknowledged only once the first's blob is durable.
func (s *Store) commitBlob(ctx context.Context, o *openedUpload, d digest.Digest, size int64) error {
	dst := blobKey(o.repo, d)
	defer s.lockNewBlob(o.repo, dst)()
	if info, err := s.drv.Stat(ctx, dst); err == nil {
		if s.placeholders && dedupe.IsPlaceholder(info, d) {
			if held, err := s.holder(ctx, d); err == nil {
				info = held // a placeholder is intact when its content is
			}
		}
		if s.intact(ctx, info, d, size, uploadKey(o.repo, o.id)) {
			if err := s.syncExisting(ctx, dst); err != nil {
				return err
			}
			s.refresh(ctx, dst, d)
			if err := o.w.Cancel(ctx); err != nil {
				return err
			}
			return s.stillWanted(ctx, o.repo, d)
		}
		// Damaged (a power cut with commit off can leave a file empty),
		// or a placeholder whose content is lost: the verified upload
		// replaces it.
		s.log.Warn("a blob in place does not hold its content; the push replaces it", "repo", o.repo, "digest", d)
	}
	if placed, err := s.placeBlob(ctx, d, size, dst); err == nil && placed {
		if err := o.w.Cancel(ctx); err != nil {
			s.log.Warn("cannot remove an upload after placing its blob", "repo", o.repo, "upload", o.id, "err", err)
		}
		return s.stillWanted(ctx, o.repo, d)
	}
	if s.dedupe != nil && !s.placeholders {
		if s.dedupe.LinkExisting(ctx, d, size, uploadKey(o.repo, o.id), dst) {
			if err := o.w.Cancel(ctx); err != nil {
				s.log.Warn("cannot remove an upload after linking its blob", "repo", o.repo, "upload", o.id, "err", err)
			}
			if after, err := s.drv.Stat(ctx, dst); err == nil {
				s.verified.add(after.Content, d) // compared byte for byte with the verified upload
			}
			s.dedupe.Record(d, dst)
			s.counted(o.repo, size, false)
			return nil
		}
	}
	if err := o.w.Commit(ctx, dst); err != nil {
		return fromDriver(err, nil, "commit blob %s", d)
	}
	s.stored(ctx, o.repo, d, size, dst)
	return s.stillWanted(ctx, o.repo, d)
}

// rejectMismatch ends an upload whose content is got, not the d it was
// pushed as: the upload is removed, nothing else changes.
func (s *Store) rejectMismatch(ctx context.Context, o *openedUpload, got, d digest.Digest) error {
	s.uploads.drop(o.key)
	if err := o.w.Cancel(ctx); err != nil {
		s.log.Warn("cannot remove rejected upload", "repo", o.repo, "upload", o.id, "err", err)
	}
	return fmt.Errorf("%w: uploaded content is %s, not %s", ErrDigestMismatch, got, d)
}

// stored notes a verified blob of size bytes newly written at dst, blob d
// of repo: its bytes counted, its content known checked, its key in the
// dedupe index.
func (s *Store) stored(ctx context.Context, repo string, d digest.Digest, size int64, dst string) {
	s.counted(repo, size, true)
	if info, err := s.drv.Stat(ctx, dst); err == nil {
		s.verified.add(info.Content, d)
	}
	if s.dedupe != nil {
		if s.placeholders {
			// At once: a push of the same content to another repository
			// a moment later finds it, on any replica.
			s.dedupe.RecordNow(ctx, d, dst)
		} else {
			s.dedupe.Record(d, dst)
		}
	}
}

// intact reports whether the blob found in place (info) holds d, as the
// verified upload at compare does: known checked, or the same bytes.
func (s *Store) intact(ctx context.Context, info driver.Info, d digest.Digest, size int64, compare string) bool {
	if info.Size != size {
		return false
	}
	if s.verified.has(info.Content, d) {
		return true
	}
	f, _, err := s.drv.Open(ctx, info.Key)
	if err != nil {
		return false
	}
	defer f.Close()
	g, _, err := s.drv.Open(ctx, compare)
	if err != nil {
		return false
	}
	defer g.Close()
	same, err := dedupe.SameContent(f, g)
	if err == nil && same {
		s.verified.add(info.Content, d)
	}
	return err == nil && same
}

// PutBlob stores r as blob d of repo in one step (a monolithic upload).
// The upload is held from its creation to its commit, so that garbage
// collection (with gcDelay 0 every upload is old enough) cannot take it.
func (s *Store) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader) (BlobInfo, error) {
	if err := s.admit(ctx, repo, 1); err != nil {
		return BlobInfo{}, err
	}
	existed := s.repoExists(ctx, repo)
	id := newUploadID()
	key := repo + "\x00" + id
	u := s.uploads.get(key)
	u.mu.Lock()
	defer u.mu.Unlock()
	w, err := s.createUpload(ctx, repo, id)
	if err != nil {
		s.uploads.drop(key)
		return BlobInfo{}, err
	}
	o := &openedUpload{session: u, w: w, repo: repo, id: id, key: key}
	info, err := s.commitOpened(ctx, o, r, d)
	if err != nil {
		s.uploads.drop(key)
		if !errors.Is(err, ErrDigestMismatch) { // a mismatch removed it already
			s.drv.Delete(context.WithoutCancel(ctx), uploadKey(repo, id))
		}
		if !existed {
			s.dropIfEmpty(context.WithoutCancel(ctx), repo) // a failed push creates no repository
		}
	}
	return info, err
}

// CancelUpload abandons upload id of repo.
func (s *Store) CancelUpload(ctx context.Context, repo, id string) error {
	if err := checkUploadID(id); err != nil {
		return err
	}
	key := repo + "\x00" + id
	u := s.uploads.get(key)
	u.mu.Lock()
	defer u.mu.Unlock()
	s.uploads.drop(key)
	k := uploadKey(repo, id)
	if _, err := s.drv.Stat(ctx, k); err != nil {
		return fromDriver(err, ErrUploadUnknown, "upload %s", id)
	}
	if err := s.drv.Delete(ctx, k); err != nil {
		return fromDriver(err, nil, "cancel upload %s", id)
	}
	return nil
}
