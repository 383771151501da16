// Package driver is the contract between the store and a storage backend:
// a small, key-level interface in the spirit of distribution's
// storagedriver. A driver knows keys, bytes, atomicity and durability; it
// knows nothing of OCI (what a manifest, a tag or a repository is). The
// store writes OCI semantics once, against this contract, and every
// backend (the local disk, s3) passes the same suite, drivertest.
//
// # Keys
//
// A key is a slash-separated path relative to the driver's root, in zot's
// layout, so a directory and a bucket hold the same tree:
//
//	<repo>/oci-layout
//	<repo>/index.json
//	<repo>/blobs/<alg>/<hex>
//	<repo>/.uploads/<id>
//	.pier/...                 pier's own state (never a repository)
//
// Keys are built by the store from names and digests it has validated;
// drivers check them again (ValidKey) and refuse anything else with
// ErrInvalidKey, so no key can name anything outside the root. A driver
// never follows a link out of its root.
//
// # Durability
//
// A driver opened with durability on (zot's commit) returns from every
// write only once what it wrote survives a power cut: the data and the
// name that points at it. Without it writes are still atomic (a reader
// sees the old object or the new one, never a mix), just not forced.
//
// # Optional abilities
//
// What only some backends can do is an optional interface, asserted at run
// time as net/http does with http.Flusher: Linker (hard links, for local
// dedupe), Notifier (change notification), Syncer, Toucher, Redirector,
// Streamer, Spacer, SyncCounter, Reserver, Exclusive, Checker, Placer,
// Sweeper, and for a Writer, Checkpointer. The store degrades, never
// fails, where one is missing.
package driver

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
)

// Errors a driver returns, wrapped with detail. The store maps them to its
// own errors, and those to the spec's in one place.
var (
	// ErrNotFound: no object at the key (a key through an object, like
	// "a/index.json/x", is not found either).
	ErrNotFound = errors.New("not found")
	// ErrNotObject: the key names something that is not an object (a
	// directory, a link, a pipe), which no write of the driver replaces.
	// It always comes with ErrNotFound: to a read it is not there.
	ErrNotObject = errors.New("not an object")
	// ErrExists: Create of a key that already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: a conditional write found another version in place.
	ErrConflict = errors.New("changed by another writer")
	// ErrTooLarge: ReadFile of an object larger than the limit.
	ErrTooLarge = errors.New("object too large")
	// ErrInvalidKey: a key that is not a clean relative path.
	ErrInvalidKey = errors.New("invalid key")
	// ErrReadOnly: a write to a driver opened (or found) read-only.
	ErrReadOnly = errors.New("storage is read-only")
	// ErrNoSpace: the backend is full (ENOSPC, EDQUOT, a quota). Nothing
	// partial is left behind by the failed write.
	ErrNoSpace = errors.New("no space left on storage")
	// ErrUnavailable: the backend cannot be reached or answered with a
	// server error; the operation may succeed if retried later.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrUnsupported: an optional ability the backend does not have here
	// (a hard link across filesystems, say); callers fall back.
	ErrUnsupported = errors.New("not supported by this storage")
)

// Info describes an object.
type Info struct {
	Key  string
	Size int64
	// ModTime is when the object's content was last written: locally the
	// mtime, on s3 LastModified. An upload's idleness is measured from it.
	ModTime time.Time
	// Changed is when the object last changed in any way, including
	// getting its current name, or a link to it made or removed: locally
	// the ctime (which no tool can set back), on s3 LastModified. Garbage
	// collection ages blobs from it.
	Changed time.Time
	// Version changes whenever the object at the key is replaced: locally
	// device, inode, ctime and size; on s3 the ETag. Two Stat calls that
	// return the same Version saw the same object. Conditional writes and
	// the store's caches compare it.
	Version string
	// Content changes whenever the object's bytes may have changed:
	// locally device, inode, size and mtime (a link added to or removed
	// from the file moves its Version, not its Content); on s3 the ETag.
	// What the store has checked against a digest it remembers by it.
	Content string
	// ID is shared by keys that are the same stored object (hard links):
	// device and inode locally; empty where the backend has no such thing.
	ID string
	// Links is the number of keys that share ID (1 where there is none).
	Links int
	// IsDir is set on List entries that are directories (prefixes).
	IsDir bool
}

// Driver is a storage backend. Implementations are safe for concurrent use.
type Driver interface {
	// String names the backend for logs: "local /var/lib/pier",
	// "s3 bucket/prefix".
	String() string

	// ReadOnly reports whether every write is refused with ErrReadOnly. It
	// is decided once, when the driver is opened.
	ReadOnly() bool

	// Stat describes the object at key. A key that names only a directory
	// (prefix) is ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)

	// Open opens the object at key for reading. The reader is seekable;
	// locally it is an *os.File, so that net/http can send it with
	// sendfile. An upload that was closed (Writer.Close) can be read.
	Open(ctx context.Context, key string) (io.ReadSeekCloser, Info, error)

	// ReadFile reads a small object whole. An object larger than limit is
	// ErrTooLarge; nothing beyond limit is read.
	ReadFile(ctx context.Context, key string, limit int64) ([]byte, Info, error)

	// WriteFile replaces the object at key with data, atomically and (with
	// durability on) durably, creating what the key needs (directories).
	WriteFile(ctx context.Context, key string, data []byte) (Info, error)

	// ReplaceFile is WriteFile only if the object at key is still the one
	// version names; with version "" only if there is no object at key.
	// Otherwise it is ErrConflict and nothing changes. Several processes
	// may share a backend (replicas on one bucket): this compare-and-swap
	// is how they change the same small object without losing an update.
	ReplaceFile(ctx context.Context, key string, data []byte, version string) (Info, error)

	// Create starts a new upload at key, empty; ErrExists if there is an
	// object there already.
	Create(ctx context.Context, key string) (Writer, error)

	// Append reopens the upload at key to add to its end; ErrNotFound if
	// there is none. An upload outlives the process that started it.
	Append(ctx context.Context, key string) (Writer, error)

	// Copy makes dst a copy of src (server-side where the backend can),
	// atomically and durably; an existing dst is replaced.
	Copy(ctx context.Context, src, dst string) error

	// Move renames src to dst, atomically where the backend can (locally
	// a rename; on s3 a copy, then a delete), and durably: after it
	// returns, src is gone and dst is there across a power cut. An
	// existing dst is replaced.
	Move(ctx context.Context, src, dst string) error

	// Delete removes the objects at keys, durably. A key with no object is
	// not an error. Directories emptied by it are left (see Prune).
	Delete(ctx context.Context, keys ...string) error

	// Prune removes the directory dir if it is empty; where the backend
	// has no directories it does nothing. It never removes anything else.
	Prune(ctx context.Context, dir string) error

	// List returns the entries directly below dir ("" is the root),
	// sorted by key: objects with their Info, and directories (prefixes)
	// with IsDir set. A dir with nothing below it is an empty list, not an
	// error.
	List(ctx context.Context, dir string) ([]Info, error)

	// Walk calls fn for every entry below dir, depth first in key order,
	// as fs.WalkDir does: fn returning fs.SkipDir for a directory skips
	// it, any other error stops the walk and is returned.
	Walk(ctx context.Context, dir string, fn func(Info) error) error

	// Close releases the driver (locally the root's process lock).
	Close() error
}

// Writer appends to an upload. One Writer per upload at a time: the store
// serialises the requests of one upload.
type Writer interface {
	io.Writer
	// Size is the upload's length: the bytes it held when opened plus
	// those written since.
	Size() int64
	// Close ends this writer and keeps the upload: the next Append
	// continues after what was written. It is not forced to the disk: a
	// power cut may shorten an unfinished upload (the client sees the
	// shorter size and sends the rest again), never corrupt one.
	Close() error
	// Abort ends this writer and drops what it wrote: the upload is left
	// as Append (or Create) found it. A chunk that failed half-way (a
	// full disk, a client gone) is taken back whole, so the upload's
	// size stays one the client was told.
	Abort() error
	// Commit makes the upload's content the object at dst, atomically and
	// durably, and ends the upload; an existing dst is replaced. The
	// caller has verified the content (the digest) before.
	Commit(ctx context.Context, dst string) error
	// Cancel ends the upload and removes what was written to it.
	Cancel(ctx context.Context) error
}

// Checkpointer is a Writer that saves a small state with its upload, so that
// whoever appends next — after a restart, or on another replica — resumes
// what depends on every byte so far (the store's running sha256, whose
// state crypto/sha256 marshals) without reading the upload again.
type Checkpointer interface {
	// Checkpoint returns the state saved with the upload, and the upload's
	// length when it was set (SetCheckpoint); nil if none was saved. The
	// state describes the upload only while its length is still that.
	Checkpoint() (state []byte, size int64)
	// SetCheckpoint sets the state, for the upload's first Size() bytes, to
	// save with them at Close: both are stored, or neither. A few KiB at
	// most.
	SetCheckpoint(state []byte)
}

// Placer is a driver whose Writer.Commit copies an upload's bytes (S3 has
// no rename: a copy on the server, and on some servers a second one to
// join the parts). An object whose key is known before its bytes arrive
// (a monolithic push names its digest first) is better written straight
// to its key, once.
type Placer interface {
	// Place starts writing the object at key, which is to be want.
	// Nothing is seen at key until the writer's Finish makes it appear
	// whole; Abort, or a process that dies first, leaves key as it was.
	Place(ctx context.Context, key string, want Expected) (PlaceWriter, error)
}

// Expected is what is known of an object before its bytes are written.
// When its Size is known (a request's Content-Length), the writer takes
// exactly that many bytes; with its sha256 too, a backend may send the
// object as it comes, checked by the storage as it arrives.
type Expected struct {
	Size   int64  // -1: unknown
	SHA256 []byte // nil: unknown
}

// PlaceWriter writes one object for Placer. Write and Abort use the
// context Place was given.
type PlaceWriter interface {
	io.Writer
	// Size is the number of bytes written.
	Size() int64
	// Finish makes what was written the object at the key, atomically
	// and durably; an existing object is replaced. The caller has
	// verified the content before.
	Finish(ctx context.Context) error
	// Abort drops what was written.
	Abort() error
}

// Sweeper is a driver where a write that its process died in can stay
// behind unseen, taking space (an S3 multipart upload: the bucket keeps,
// and bills, its parts until it is aborted).
type Sweeper interface {
	// Sweep removes such writes to keys below dir started before t,
	// except those busy reports as in progress, and returns how many
	// it removed.
	Sweep(ctx context.Context, dir string, before time.Time, busy func(key string) bool) (int, error)
}

// Linker is a driver that can give one object several keys (hard links):
// local dedupe.
type Linker interface {
	// Link makes dst another key of the object at src, atomically:
	// dst always names a complete object, the old one or src's. It is
	// ErrUnsupported where the two keys cannot share an object (another
	// filesystem, too many links, a filesystem without hard links).
	// Once it returns, dst is as durable as after a Put: the shared
	// object's bytes too, which another tool may have left unsynced.
	Link(ctx context.Context, src, dst string) error
}

// Syncer is a driver whose objects can be visible before they are
// durable (a local file another process wrote, or a rename whose
// directory is not synced yet).
type Syncer interface {
	// Sync makes the object at key and the name that points at it
	// durable.
	Sync(ctx context.Context, key string) error
}

// Toucher is a driver that can mark an object as changed now (its Changed
// time) without rewriting it.
type Toucher interface {
	Touch(ctx context.Context, key string) error
}

// Notifier is a driver that reports changes made to it by others (files
// copied into the root by hand).
type Notifier interface {
	// Notify calls changed with the key of every object or directory
	// created, written or renamed into place below the root, except below
	// directories whose name starts with a dot, until ctx ends. It returns
	// ErrUnsupported at once where changes cannot be watched.
	Notify(ctx context.Context, changed func(key string, isDir bool)) error
}

// Redirector is a driver whose objects clients can fetch directly.
type Redirector interface {
	// RedirectURL is a URL that serves the object at key, valid for at
	// least expiry.
	RedirectURL(ctx context.Context, key string, expiry time.Duration) (string, error)
}

// Streamer is a driver whose objects can be sent to a client by the
// kernel, from the storage's connection to the client's (splice(2)),
// rather than copied through pier.
type Streamer interface {
	// OpenStream is Open for an object that will be sent to a client, or
	// perhaps not read at all (a HEAD request): it may defer reading
	// until the reader is read. Its reader may be a StreamReader, which
	// copies where the backend cannot splice (TLS).
	OpenStream(ctx context.Context, key string) (io.ReadSeekCloser, Info, error)
}

// StreamReader is a reader that can send itself into a connection.
type StreamReader interface {
	io.ReadSeekCloser
	// StreamTo sends up to n bytes from the reader's position into w (a
	// TCP connection, or net/http's writer over one, whose ReadFrom
	// splices) and moves the position by what it sent; io.EOF at the end.
	StreamTo(w io.ReaderFrom, n int64) (int64, error)
}

// Checker is a driver that can tell whether it still reaches the storage
// it was opened on, beyond answering a stat: a local directory held open
// keeps answering after it was renamed away or mounted over.
type Checker interface {
	Check(ctx context.Context) error
}

// Spacer is a driver that knows how much room is left.
type Spacer interface {
	// Space reports the bytes free (for writes) and the total.
	Space() (free, total int64, err error)
}

// SyncCounter is a driver that counts the fsync calls it made (tests,
// benchmarks).
type SyncCounter interface {
	Syncs() int64
}

// ValidKey reports whether key is a clean relative path: no leading or
// trailing slash, no empty, "." or ".." element, no backslash or NUL.
func ValidKey(key string) bool {
	return key != "" && key != "." && fs.ValidPath(key) && !strings.ContainsAny(key, "\\\x00")
}

// WalkList is Walk for a driver that can List: it lists dir and each
// directory below it in turn, depth first in key order, with fs.WalkDir's
// rules: SkipDir from a directory skips it, from a file the rest of its
// directory; SkipAll ends the walk without an error.
func WalkList(ctx context.Context, list func(ctx context.Context, dir string) ([]Info, error), dir string, fn func(Info) error) error {
	err := walkList(ctx, list, dir, fn)
	if errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

func walkList(ctx context.Context, list func(ctx context.Context, dir string) ([]Info, error), dir string, fn func(Info) error) error {
	entries, err := list(ctx, dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := fn(e)
		switch {
		case errors.Is(err, fs.SkipDir) && e.IsDir:
			continue
		case errors.Is(err, fs.SkipDir):
			return nil // the rest of this directory
		case err != nil:
			return err
		}
		if e.IsDir {
			if err := walkList(ctx, list, e.Key, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Join joins key elements with slashes. It does not validate: drivers do.
func Join(elem ...string) string { return path.Join(elem...) }

// IsNotFound reports whether err is ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// SameObject reports whether two Infos describe the same stored object:
// the same ID where the backend has IDs (two keys of one hard-linked
// file), else the same version.
func SameObject(a, b Info) bool {
	if a.ID != "" || b.ID != "" {
		return a.ID == b.ID
	}
	return a.Version == b.Version
}

// Exclusive is a driver whose storage no other process changes while it
// is open (a local root under its process lock). Where a driver is not,
// the store takes it that replicas share the storage (a bucket), and does
// what only they need (garbage collection marks in index.json what it is
// about to remove).
type Exclusive interface {
	Exclusive() bool
}

// Reserver is a driver that keeps back a little space on a full disk, so
// that the writes that free space (a delete or a collection rewrites a
// small object before it removes anything) still go through.
type Reserver interface {
	// Reserve makes sure the space is kept back, ErrNoSpace when it cannot
	// be: the disk is full, and a write that adds content must not go on.
	Reserve(ctx context.Context) error
	// Release gives the kept space up, for a write that frees space and
	// found the disk full; it reports whether there was any to give.
	Release() bool
}
