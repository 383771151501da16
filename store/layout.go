package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
)

// layoutFile is the content of oci-layout, as every OCI tool writes it.
var layoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}`)

// maxIndexSize bounds how much of an index.json pier will read; a layout
// with more than this in its index is not one pier can serve.
const maxIndexSize = 64 << 20

// repoIndex is a repository's index.json.
type repoIndex struct {
	ispec.Index
	// unusable are entries whose digest pier cannot use (malformed, or an
	// algorithm it lacks), from a layout written elsewhere. They are never
	// served or walked, since a path built from them could point anywhere,
	// and are written back unchanged when pier rewrites the index.
	unusable []ispec.Descriptor
}

// decodeIndex parses index.json and sets aside entries with an unusable
// digest.
func decodeIndex(r io.Reader) (*repoIndex, error) {
	var x repoIndex
	if err := json.NewDecoder(r).Decode(&x.Index); err != nil {
		return nil, err
	}
	usable := x.Manifests[:0:0]
	for _, m := range x.Manifests {
		if oci.ValidDigest(m.Digest) {
			usable = append(usable, m)
		} else {
			x.unusable = append(x.unusable, m)
		}
	}
	if x.unusable != nil {
		x.Manifests = usable
	}
	return &x, nil
}

// tagOf returns the tag a descriptor in index.json carries. Tools write the
// org.opencontainers.image.ref.name annotation either as a bare tag ("v1")
// or as a full reference ("example.com/app:v1"); both yield "v1".
func tagOf(desc ispec.Descriptor) (string, bool) {
	ref, ok := desc.Annotations[ispec.AnnotationRefName]
	if !ok {
		return "", false
	}
	if oci.ValidateTag(ref) == nil {
		return ref, true
	}
	i := strings.LastIndexByte(ref, ':')
	if i < 0 {
		return "", false
	}
	if t := ref[i+1:]; !strings.Contains(t, "/") && oci.ValidateTag(t) == nil {
		return t, true
	}
	return "", false
}

// find returns the position of the entry carrying tag, or -1.
func (x *repoIndex) find(tag string) int {
	for i, m := range x.Manifests {
		if t, ok := tagOf(m); ok && t == tag {
			return i
		}
	}
	return -1
}

// findDigest returns the first entry for digest d, or -1.
func (x *repoIndex) findDigest(d digest.Digest) int {
	for i, m := range x.Manifests {
		if m.Digest == d {
			return i
		}
	}
	return -1
}

// remove drops entry i, keeping the order of the rest.
func (x *repoIndex) remove(i int) {
	x.Manifests = append(x.Manifests[:i], x.Manifests[i+1:]...)
}

// keepAddressable adds an untagged entry for desc's digest when no entry
// names it any more, so a manifest whose last tag moved or was deleted is
// still served by digest (until it is deleted or collected).
func (x *repoIndex) keepAddressable(desc ispec.Descriptor) {
	if x.findDigest(desc.Digest) >= 0 {
		return
	}
	x.Manifests = append(x.Manifests, untagged(desc))
}

// AnnotationUntaggedSince records, on an untagged entry of index.json, when
// the manifest became untagged (RFC 3339). Garbage collection counts
// gcDelay from then, not from the push: a tag that moves must not make the
// old manifest collectable at once (zot#4444). Other tools ignore
// annotations they do not know.
const AnnotationUntaggedSince = "com.github.pier-oci.untagged-since"

// untagged is desc without its ref name, stamped untagged as of now.
func untagged(desc ispec.Descriptor) ispec.Descriptor {
	out := desc
	out.Annotations = map[string]string{}
	for k, v := range desc.Annotations {
		if k != ispec.AnnotationRefName {
			out.Annotations[k] = v
		}
	}
	out.Annotations[AnnotationUntaggedSince] = time.Now().UTC().Format(time.RFC3339Nano)
	return out
}

// untaggedSince reads the stamp of an untagged entry.
func untaggedSince(desc ispec.Descriptor) (time.Time, bool) {
	v, ok := desc.Annotations[AnnotationUntaggedSince]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

// readIndex reads repo's index.json. A repository that does not exist is
// ErrNameUnknown.
func (s *Store) readIndex(repo string) (*repoIndex, error) {
	f, err := openRegular(s.indexPath(repo))
	if notFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrNameUnknown, repo)
	}
	if err != nil {
		return nil, fmt.Errorf("read index of %s: %w", repo, err)
	}
	defer f.Close()
	x, err := decodeIndex(&limitedReader{f, maxIndexSize})
	if err != nil {
		// A layout still being copied in is not a repository yet.
		return nil, fmt.Errorf("%w: %s: index.json is incomplete or invalid (still being copied?): %v", ErrNameUnknown, repo, err)
	}
	return x, nil
}

// writeIndex replaces repo's index.json. The caller holds the repo lock.
func (s *Store) writeIndex(repo string, x *repoIndex) error {
	if x.Manifests == nil {
		x.Manifests = []ispec.Descriptor{}
	}
	x.SchemaVersion = 2
	x.MediaType = ispec.MediaTypeImageIndex
	out := x.Index
	out.Manifests = append(slices.Clip(x.Manifests), x.unusable...)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&out); err != nil {
		return fmt.Errorf("encode index of %s: %w", repo, err)
	}
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err := s.fs.MkdirAll(s.uploadsDir(repo)); err != nil { // a hosted layout may lack it
		return fmt.Errorf("write index of %s: %w", repo, err)
	}
	if err := s.fs.WriteFile(s.indexPath(repo), s.uploadsDir(repo), data); err != nil {
		return fmt.Errorf("write index of %s: %w", repo, err)
	}
	return nil
}

// repoExists reports whether repo is an OCI layout in this store.
func (s *Store) repoExists(repo string) bool {
	fi, err := os.Stat(s.indexPath(repo))
	return err == nil && fi.Mode().IsRegular()
}

// canBeRepo fails, before anything is written, when repo's index.json is
// something a push cannot replace: a directory, a loop of links, or a path
// through a file (the name crosses a file in the root).
func (s *Store) canBeRepo(repo string) error {
	fi, err := os.Stat(s.indexPath(repo))
	switch {
	case err == nil && !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s/index.json is not a file", ErrNotRepository, repo)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s: %v", ErrNotRepository, repo, err)
	}
	return nil
}

// ensureRepo makes repo an OCI layout if it is not one yet. Pushes create
// repositories; reads never do.
func (s *Store) ensureRepo(repo string) error {
	if err := s.pushable(); err != nil {
		return err
	}
	if s.repoExists(repo) {
		return s.fs.MkdirAll(s.uploadsDir(repo)) // a hosted layout may lack it
	}
	if err := s.canBeRepo(repo); err != nil {
		return err
	}
	unlock := s.locks.lock(repo)
	defer unlock()
	if s.repoExists(repo) {
		return nil
	}
	dir := s.repoDir(repo)
	if err := s.fs.MkdirAll(s.uploadsDir(repo)); err != nil {
		return fmt.Errorf("create repository %s: %w", repo, err)
	}
	if err := s.fs.MkdirAll(filepath.Join(dir, "blobs", digest.SHA256.String())); err != nil {
		return fmt.Errorf("create repository %s: %w", repo, err)
	}
	if err := s.fs.WriteFile(filepath.Join(dir, "oci-layout"), s.uploadsDir(repo), layoutFile); err != nil {
		return fmt.Errorf("create repository %s: %w", repo, err)
	}
	// index.json last: its presence is what makes the directory a repository.
	if err := s.writeIndex(repo, &repoIndex{}); err != nil {
		return fmt.Errorf("create repository %s: %w", repo, err)
	}
	s.log.Info("repository created", "repo", repo)
	return nil
}

// limitedReader fails, rather than truncating silently, past its limit.
type limitedReader struct {
	f io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxIndexSize)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}
