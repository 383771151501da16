// Package ledger is the memory of pier's crash suites: a record of every
// write the registry acknowledged (blobs, manifests, tags, deletes), kept
// by a workload of concurrent clients (workload.go) and audited against
// the registry after it died and came back (check.go).
//
// The registry may die at any instant, so each client also records the one
// request it has in flight: that request may or may not have taken effect,
// and the audit accepts either outcome, then adopts the one it saw so that
// later audits hold it to it.
//
// Garbage collection makes some absences legitimate: an untagged manifest,
// and a blob no tagged manifest references, may be collected once older
// than gcDelay. The ledger therefore splits what it expects into what must
// be served (tagged manifests and their blobs; everything when GC is off)
// and what may be gone but, if served, must be exact.
package ledger

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Blob is content the workload pushed. It is regenerated from its seed
// when needed, so the ledger stays small however long a run is.
type Blob struct {
	Digest digest.Digest
	Size   int64
	seed   uint64
}

// NewBlob makes size bytes of content determined by seed.
func NewBlob(seed uint64, size int) Blob {
	b := Blob{Size: int64(size), seed: seed}
	b.Digest = digest.FromBytes(b.Bytes())
	return b
}

// Bytes regenerates the blob's content.
func (b Blob) Bytes() []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], b.seed)
	buf := make([]byte, b.Size)
	io.ReadFull(rand.NewChaCha8(key), buf)
	return buf
}

// Image is a manifest the workload built over blobs it pushed.
type Image struct {
	Digest   digest.Digest
	Manifest []byte
	Blobs    []Blob // config, then layers
}

type opKind int

const (
	opPushBlob opKind = iota
	opMount
	opPutManifest
	opDeleteTag
	opDeleteManifest
)

// op is one request a client sent; pending until its answer arrives.
type op struct {
	kind  opKind
	blob  Blob
	sent  bool // opPushBlob: the request that completes the upload was sent
	image *Image
	tag   string        // opPutManifest by tag, opDeleteTag
	dgst  digest.Digest // opDeleteManifest
}

// Repo is what one repository was acknowledged to hold. Exactly one client
// writes to it, so its history is a sequence, not a race.
type Repo struct {
	Name string

	mu      sync.Mutex
	blobs   map[digest.Digest]Blob   // acknowledged in this repository
	images  map[digest.Digest]*Image // acknowledged manifests (deleted ones too)
	deleted map[digest.Digest]int    // acknowledged deletes by digest: the round of each
	tags    map[string]digest.Digest // "" after an acknowledged delete
	// unfinished uploads: the request completing them was never sent, so
	// their digests must never be served.
	unfinished map[digest.Digest]bool
	pending    *op
	audits     int // audits so far: rotates the older deletes re-checked
	l          *Ledger
}

// Ledger holds the repositories of one run and its journal of
// acknowledgements, printed when an audit fails.
type Ledger struct {
	Repos []*Repo // one per workload client
	Probe *Repo   // written only by Probe, once per audit

	mu      sync.Mutex
	round   int
	start   time.Time
	journal []string
}

// New makes a ledger for clients repositories named prefix/c0, prefix/c1…
func New(prefix string, clients int) *Ledger {
	l := &Ledger{start: time.Now()}
	for i := range clients {
		l.Repos = append(l.Repos, l.newRepo(fmt.Sprintf("%s/c%d", prefix, i)))
	}
	l.Probe = l.newRepo(prefix + "/probe")
	return l
}

func (l *Ledger) newRepo(name string) *Repo {
	return &Repo{
		Name: name, l: l,
		blobs: map[digest.Digest]Blob{}, images: map[digest.Digest]*Image{},
		deleted: map[digest.Digest]int{}, tags: map[string]digest.Digest{},
		unfinished: map[digest.Digest]bool{},
	}
}

// all is every repository, the probe's last.
func (l *Ledger) all() []*Repo { return append(slices.Clone(l.Repos), l.Probe) }

// SetRound names the cycle (process run or boot) that the journal's next
// lines belong to.
func (l *Ledger) SetRound(n int) {
	l.mu.Lock()
	l.round = n
	l.mu.Unlock()
}

func (l *Ledger) currentRound() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.round
}

func (l *Ledger) note(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.journal = append(l.journal, fmt.Sprintf("round %d %8.3fs  ", l.round, time.Since(l.start).Seconds())+fmt.Sprintf(format, args...))
}

// Journal is every acknowledgement so far, in order, one per line, and
// what each audit adopted of the requests that were in flight.
func (l *Ledger) Journal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.journal, "\n") + "\n"
}

// Acks counts the acknowledgements in the journal.
func (l *Ledger) Acks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.journal {
		if strings.Contains(s, " ack ") {
			n++
		}
	}
	return n
}

func (r *Repo) begin(o *op) {
	r.mu.Lock()
	r.pending = o
	r.mu.Unlock()
}

// markSent records that the request completing an upload went out: from
// now on the blob may be there after a crash.
func (r *Repo) markSent() {
	r.mu.Lock()
	if r.pending != nil {
		r.pending.sent = true
	}
	r.mu.Unlock()
}

// ack applies an acknowledged request to the ledger.
func (r *Repo) ack(o *op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = nil
	r.apply(o)
	switch o.kind {
	case opPushBlob, opMount:
		verb := map[opKind]string{opPushBlob: "push blob", opMount: "mount blob"}[o.kind]
		r.l.note("%s ack %s %s (%d bytes)", r.Name, verb, o.blob.Digest, o.blob.Size)
	case opPutManifest:
		ref := o.tag
		if ref == "" {
			ref = "(by digest)"
		}
		r.l.note("%s ack put manifest %s %s", r.Name, ref, o.image.Digest)
	case opDeleteTag:
		r.l.note("%s ack delete tag %s", r.Name, o.tag)
	case opDeleteManifest:
		r.l.note("%s ack delete manifest %s", r.Name, o.dgst)
	}
}

// apply records the effect of o. The caller holds r.mu.
func (r *Repo) apply(o *op) {
	switch o.kind {
	case opPushBlob, opMount:
		r.blobs[o.blob.Digest] = o.blob
		delete(r.unfinished, o.blob.Digest)
	case opPutManifest:
		r.images[o.image.Digest] = o.image
		if o.tag != "" {
			r.tags[o.tag] = o.image.Digest
		}
	case opDeleteTag:
		r.tags[o.tag] = ""
	case opDeleteManifest:
		r.deleted[o.dgst] = r.l.currentRound()
		for t, d := range r.tags {
			if d == o.dgst {
				r.tags[t] = "" // deleting a manifest removes its tags
			}
		}
	}
}

// tagged is the set of digests some tag names. The caller holds r.mu.
func (r *Repo) tagged() map[digest.Digest]bool { return digestSet(r.tags) }

func digestSet(tags map[string]digest.Digest) map[digest.Digest]bool {
	m := map[digest.Digest]bool{}
	for _, d := range tags {
		if d != "" {
			m[d] = true
		}
	}
	return m
}

// liveImages is every acknowledged, undeleted manifest, sorted by digest.
// The caller holds r.mu.
func (r *Repo) liveImages() []*Image {
	var out []*Image
	for d, img := range r.images {
		if _, gone := r.deleted[d]; !gone {
			out = append(out, img)
		}
	}
	slices.SortFunc(out, func(a, b *Image) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return out
}

// taggedBlob returns, for another client to reuse, a blob of an image
// this repository holds under a tag, or false.
func (r *Repo) taggedBlob(rng *rand.Rand) (Blob, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var pool []Blob
	tagged := r.tagged()
	for _, img := range r.liveImages() {
		if tagged[img.Digest] {
			pool = append(pool, img.Blobs[1:]...) // layers, not the config
		}
	}
	if len(pool) == 0 {
		return Blob{}, false
	}
	return pool[rng.IntN(len(pool))], true
}
