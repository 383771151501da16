package store

import (
	"context"
	"errors"
	"hash"
	"io"
	"path"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/layout"
	"github.com/pier-oci/pier/store/oci"
)

// Scrub statuses.
const (
	ScrubOK           = "ok"
	ScrubCorrupt      = "corrupt"      // content does not match its digest; quarantined
	ScrubMissing      = "missing"      // referenced but not on the disk
	ScrubUnreferenced = "unreferenced" // on the disk, referenced by no manifest
)

// Pacer paces scrub reads: Wait is called after every chunk of n bytes and
// sleeps as long as the throttle requires.
type Pacer interface {
	Wait(ctx context.Context, n int) error
}

// ScrubResult is the state of one reference (a tag, or the digest of an
// untagged manifest) or of one unreferenced blob.
type ScrubResult struct {
	Repo      string
	Reference string
	Status    string
	Digest    digest.Digest // the affected blob; the manifest when ok
}

// ScrubReport is what scrubbing one repository found.
type ScrubReport struct {
	Repo    string
	Blobs   int   // blobs re-hashed
	Bytes   int64 // bytes read
	Results []ScrubResult
}

// Failed reports whether anything is corrupt or missing.
func (r ScrubReport) Failed() bool {
	for _, res := range r.Results {
		if res.Status == ScrubCorrupt || res.Status == ScrubMissing {
			return true
		}
	}
	return false
}

// HashedInodes remembers, across repositories, the verdict on objects
// that have several keys (hard links shared by dedupe), so a pass reads
// each such object once. The key stands for the object's ID and version.
type HashedInodes map[verifiedKey]bool

// ScrubRepo re-hashes, with each digest's own algorithm, every blob that
// a manifest of repo reaches: the manifests themselves, configs, layers,
// index children and subjects present in the repository. A blob that does
// not match is moved out of the layout to <root>/.quarantine/, with every
// other path that shares its inode, so it is never served again; a re-push
// heals it. Blobs nothing references are reported as such.
func (s *Store) ScrubRepo(ctx context.Context, repo string, pace Pacer, inodes HashedInodes) (ScrubReport, error) {
	rep := ScrubReport{Repo: repo}
	x, err := s.readIndex(ctx, repo)
	if err != nil {
		return rep, err
	}
	sc := &scrubber{s: s, repo: repo, pace: pace, inodes: inodes, rep: &rep, verdict: map[digest.Digest]string{}}
	for _, e := range x.Manifests {
		ref := e.Digest.String()
		if t, ok := tagOf(e); ok {
			ref = t
		}
		res := ScrubResult{Repo: repo, Reference: ref, Status: ScrubOK, Digest: e.Digest}
		sc.visitManifest(ctx, e.Digest, &res, 0)
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		rep.Results = append(rep.Results, res)
	}
	blobs, err := s.listBlobs(ctx, repo)
	if err != nil {
		return rep, err
	}
	for _, b := range blobs {
		if _, seen := sc.verdict[b.digest]; !seen {
			rep.Results = append(rep.Results, ScrubResult{Repo: repo, Reference: "-", Status: ScrubUnreferenced, Digest: b.digest})
		}
	}
	return rep, nil
}

// scrubber walks one repository, hashing each blob once.
type scrubber struct {
	s       *Store
	repo    string
	pace    Pacer
	inodes  HashedInodes
	rep     *ScrubReport
	verdict map[digest.Digest]string // status of each blob seen in this repository
}

// fail records the first problem of a reference.
func fail(res *ScrubResult, status string, d digest.Digest) {
	if res.Status == ScrubOK {
		res.Status, res.Digest = status, d
	}
}

func (sc *scrubber) visitManifest(ctx context.Context, d digest.Digest, res *ScrubResult, depth int) {
	if _, seen := sc.verdict[d]; seen || depth > maxIndexDepth {
		if st := sc.verdict[d]; st != "" && st != ScrubOK {
			fail(res, st, d)
		}
		return
	}
	if st := sc.check(ctx, d); st != ScrubOK {
		fail(res, st, d)
		return
	}
	m, err := sc.s.loadManifest(ctx, sc.repo, d)
	if errors.Is(err, ErrManifestInvalid) {
		// It hashes fine but references digests no blob can have: the
		// image cannot be pulled.
		fail(res, ScrubMissing, d)
		return
	}
	if err != nil {
		return // hashed fine but not a manifest we can read: nothing below it
	}
	if m.Config != nil {
		sc.visitBlob(ctx, *m.Config, res)
	}
	for _, l := range m.Layers {
		sc.visitBlob(ctx, l, res)
	}
	for _, c := range m.Manifests {
		sc.visitManifest(ctx, c.Digest, res, depth+1)
	}
	if m.Subject != nil {
		if _, err := sc.s.drv.Stat(ctx, blobKey(sc.repo, m.Subject.Digest)); err == nil {
			sc.visitManifest(ctx, m.Subject.Digest, res, depth+1)
		}
	}
}

func (sc *scrubber) visitBlob(ctx context.Context, desc descriptor, res *ScrubResult) {
	st, seen := sc.verdict[desc.Digest]
	if !seen {
		st = sc.check(ctx, desc.Digest)
		if st == ScrubMissing && oci.IsForeignLayer(string(desc.MediaType)) {
			st = ScrubOK // foreign layers are fetched from elsewhere by design
		}
		sc.verdict[desc.Digest] = st
	}
	if st != ScrubOK {
		fail(res, st, desc.Digest)
	}
}

// check hashes one blob of the repository and quarantines it when corrupt.
func (sc *scrubber) check(ctx context.Context, d digest.Digest) string {
	st, hashed := sc.hash(ctx, d)
	sc.verdict[d] = st
	if st == ScrubCorrupt && sc.s.writable() == nil {
		sc.s.quarantine(ctx, sc.repo, d, hashed)
	}
	return st
}

// hash checks one blob against its digest and returns the verdict with
// the object it read (nil when there was none).
func (sc *scrubber) hash(ctx context.Context, d digest.Digest) (string, *driver.Info) {
	if ctx.Err() != nil {
		return ScrubOK, nil // stopping: the pass is abandoned, report nothing false
	}
	own := blobKey(sc.repo, d)
	held, err := sc.s.content(ctx, sc.repo, d)
	if err != nil {
		return ScrubMissing, nil
	}
	f, info, err := sc.s.drv.Open(ctx, held.Key)
	if err != nil {
		return ScrubMissing, nil
	}
	defer f.Close()
	// Several keys of one object (hard links), or placeholders of one
	// holder: the object is read once a pass.
	shared := (info.ID != "" && info.Links > 1) || held.Key != own
	key := keyOf(info.ID+" "+info.Version, "")
	if info.ID == "" {
		key = keyOf(info.Key+" "+info.Version, "")
	}
	if shared {
		if good, seen := sc.inodes[key]; seen {
			if good {
				return ScrubOK, &info
			}
			return ScrubCorrupt, &info
		}
	}
	h := d.Algorithm().Hash()
	n, err := sc.copyPaced(ctx, h, f)
	sc.rep.Blobs++
	sc.rep.Bytes += n
	if err != nil {
		if ctx.Err() != nil {
			return ScrubOK, &info
		}
		sc.s.log.Warn("scrub: cannot read blob", "repo", sc.repo, "digest", d, "err", err)
		return ScrubCorrupt, &info
	}
	good := digest.NewDigest(d.Algorithm(), h) == d
	if shared {
		sc.inodes[key] = good
	}
	if !good {
		return ScrubCorrupt, &info
	}
	sc.s.verified.add(info.Content, d)
	return ScrubOK, &info
}

// copyPaced hashes r in chunks, letting the pacer throttle between them.
func (sc *scrubber) copyPaced(ctx context.Context, h hash.Hash, r io.Reader) (int64, error) {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	var total int64
	for {
		n, err := r.Read(*bufp)
		if n > 0 {
			h.Write((*bufp)[:n])
			total += int64(n)
			if perr := sc.pace.Wait(ctx, n); perr != nil {
				return total, perr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// quarantineDir is where corrupt blobs go, out of every layout.
const quarantineDir = ".quarantine"

// quarantine moves a corrupt blob of repo, and every key that shares its
// object (dedupe links in other repositories), to
// .quarantine/<repo>/<alg>/<hex> so that none is ever served again; a
// re-push heals it. hashed is the object scrub read: the hash ran without
// a lock, so a key is moved only if it still names that very object (not
// a good copy linked or pushed over it meanwhile).
func (s *Store) quarantine(ctx context.Context, repo string, d digest.Digest, hashed *driver.Info) {
	if hashed == nil {
		return
	}
	key := hashed.Key // the blob's own key, or the one that holds a placeholder's content
	keys := []string{key}
	if s.dedupe != nil && hashed.ID != "" {
		for _, k := range s.dedupe.Copies(ctx, d) {
			if info, err := s.drv.Stat(ctx, k); err == nil && k != key && info.ID == hashed.ID {
				keys = append(keys, k)
			}
		}
	}
	for _, k := range keys {
		owner := layout.RepoOfBlob(k)
		if oci.ValidateName(owner) != nil {
			continue
		}
		unlock := s.locks.Lock(owner)
		if cur, err := s.drv.Stat(ctx, k); err != nil || !driver.SameObject(cur, *hashed) {
			unlock()
			continue // gone, or replaced by another object since it was hashed
		}
		dst := path.Join(quarantineDir, owner, d.Algorithm().String(), d.Encoded())
		err := s.drv.Move(ctx, k, dst)
		s.views.drop(owner)
		unlock()
		if err != nil && !driver.IsNotFound(err) {
			s.log.Error("scrub: cannot quarantine corrupt blob", "repo", owner, "digest", d, "err", err)
			continue
		}
		if s.dedupe != nil {
			s.dedupe.Forget(d, k)
		}
		s.log.Error("scrub: corrupt blob quarantined; it is no longer served, a re-push heals it",
			"repo", owner, "digest", d, "moved_to", dst)
	}
}
