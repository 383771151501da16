package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/test/internal/ociclient"
)

// bases are layers every client puts in its images, so the same content
// lands in every repository: with dedupe on, one inode shared by many
// paths, which deletes and collection must never take from the others.
var bases = []Blob{NewBlob(0xba5e1, 2<<10), NewBlob(0xba5e2, 9<<10), NewBlob(0xba5e3, 33<<10)}

// Options shape a workload run.
type Options struct {
	Seed  uint64
	Round int  // mixed into each client's random stream: each round differs
	GC    bool // collection runs: a manifest may find its blobs collected before it arrives
}

// Stats is what a workload run did.
type Stats struct {
	Acks    int      // requests acknowledged
	Retries int      // manifests sent again because collection took their blobs first
	Errors  []string // answers a live registry must not give
}

// Run drives one client per repository, concurrently, until ctx ends or
// the registry stops answering (it was killed). A client stops at the
// first transport error; an answer the registry must not give is recorded
// in Stats.Errors and stops that client too.
func (l *Ledger) Run(ctx context.Context, c *ociclient.Client, o Options) Stats {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		stats Stats
	)
	for i, r := range l.Repos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{l: l, r: r, c: c, gc: o.GC, rng: rand.New(rand.NewPCG(o.Seed, uint64(o.Round)<<8|uint64(i)))}
			err := w.run(ctx)
			mu.Lock()
			defer mu.Unlock()
			stats.Acks += w.acks
			stats.Retries += w.retries
			if se := (*ociclient.StatusError)(nil); errors.As(err, &se) {
				stats.Errors = append(stats.Errors, fmt.Sprintf("%s: %v", r.Name, err))
			}
		}()
	}
	wg.Wait()
	return stats
}

// ProbePush pushes one new image, tagged "latest", to the probe
// repository: a registry that came back must take new writes.
func (l *Ledger) ProbePush(c *ociclient.Client, seed uint64, gc bool) error {
	w := &worker{l: l, r: l.Probe, c: c, gc: gc, rng: rand.New(rand.NewPCG(seed, 0xb0b))}
	return w.pushImage("latest")
}

// worker is one client writing to its own repository.
type worker struct {
	l       *Ledger
	r       *Repo
	c       *ociclient.Client
	rng     *rand.Rand
	gc      bool
	acks    int
	retries int
}

func (w *worker) run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := w.step(); err != nil {
			if answered(err) {
				w.r.begin(nil) // refused, so not in flight
			}
			return err
		}
	}
	return nil
}

func (w *worker) step() error {
	switch k := w.rng.IntN(20); {
	case k < 10:
		return w.pushImage(fmt.Sprintf("t%d", w.rng.IntN(3))) // often moves a tag
	case k < 14:
		return w.pushImage("")
	case k < 17:
		return w.deleteTag()
	default:
		return w.deleteManifest()
	}
}

func (w *worker) ack(o *op) {
	w.r.ack(o)
	w.acks++
}

// newImage builds an image of a random config, a shared base layer, one
// or two random layers (1–64 KiB) and, a third of the time, a layer of an
// image another client holds: it is mounted from there or pushed again
// (dedupe links it). borrowed maps such a layer to its repository.
func (w *worker) newImage() (img *Image, borrowed map[digest.Digest]string) {
	config := NewBlob(w.rng.Uint64(), 64+w.rng.IntN(192))
	layers := []Blob{bases[w.rng.IntN(len(bases))]}
	for range 1 + w.rng.IntN(2) {
		layers = append(layers, NewBlob(w.rng.Uint64(), 1<<10+w.rng.IntN(63<<10)))
	}
	borrowed = map[digest.Digest]string{}
	if peer := w.l.Repos[w.rng.IntN(len(w.l.Repos))]; peer != w.r && w.rng.IntN(3) == 0 {
		if b, ok := peer.taggedBlob(w.rng); ok && !slices.Contains(layers, b) {
			layers = append(layers, b)
			borrowed[b.Digest] = peer.Name
		}
	}
	raw := make([][]byte, len(layers))
	for i, b := range layers {
		raw[i] = b.Bytes()
	}
	m := ociclient.ImageManifest(config.Bytes(), raw...)
	return &Image{Digest: m.Digest, Manifest: m.Manifest, Blobs: append([]Blob{config}, layers...)}, borrowed
}

// pushImage pushes a new image's blobs, then its manifest under tag, or
// by digest when tag is "".
func (w *worker) pushImage(tag string) error {
	img, borrowed := w.newImage()
	if err := w.pushBlobs(img, borrowed); err != nil {
		return err
	}
	ref := tag
	if tag == "" {
		ref = img.Digest.String()
	}
	for attempt := 0; ; attempt++ {
		o := &op{kind: opPutManifest, image: img, tag: tag}
		w.r.begin(o)
		_, err := w.c.PutManifest(w.r.Name, ref, ispec.MediaTypeImageManifest, img.Manifest)
		if err == nil {
			w.ack(o)
			return nil
		}
		if !answered(err) {
			return err // in flight when the registry died
		}
		w.r.begin(nil)
		// Collection may take blobs pushed more than gcDelay ago before
		// their manifest arrives (a slow client); the spec's answer is
		// MANIFEST_BLOB_UNKNOWN, and the client pushes them again.
		if !w.gc || !hasCode(err, "MANIFEST_BLOB_UNKNOWN") || attempt == 3 {
			return err
		}
		w.retries++
		if err := w.pushBlobs(img, nil); err != nil {
			return err
		}
	}
}

func (w *worker) pushBlobs(img *Image, borrowed map[digest.Digest]string) error {
	for _, b := range img.Blobs {
		if from, ok := borrowed[b.Digest]; ok && w.rng.IntN(2) == 0 {
			o := &op{kind: opMount, blob: b}
			w.r.begin(o)
			mounted, err := w.c.Mount(w.r.Name, from, b.Digest)
			if err != nil {
				return err
			}
			if mounted {
				w.ack(o)
				continue
			}
			// The other repository lost it meanwhile (deleted, collected):
			// the registry opened an upload instead; push the content.
		}
		if err := w.pushBlob(b); err != nil {
			return err
		}
	}
	return nil
}

// pushBlob uploads b with one of the spec's three ways: monolithic POST,
// POST then PUT, or chunked PATCHes completed by an empty PUT.
func (w *worker) pushBlob(b Blob) error {
	data := b.Bytes()
	o := &op{kind: opPushBlob, blob: b, sent: true}
	var err error
	switch w.rng.IntN(3) {
	case 0:
		w.r.begin(o)
		_, err = w.c.PushBlob(w.r.Name, data)
	case 1:
		w.r.begin(o)
		err = w.c.PushBlobStream(w.r.Name, b.Digest, bytes.NewReader(data), b.Size)
	default:
		o.sent = false
		w.r.begin(o)
		err = w.pushChunked(b, data)
	}
	if err != nil {
		return err
	}
	w.ack(o)
	return nil
}

// pushChunked is ociclient's PushBlobChunked with one more step: the
// ledger learns the moment the completing PUT is sent. Until then, the
// blob must not be served after a crash, whatever the chunks contained.
func (w *worker) pushChunked(b Blob, data []byte) error {
	resp, err := w.c.Do("POST", "/v2/"+w.r.Name+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc := w.absolute(resp.Header.Get("Location"))
	pieces := 1 + w.rng.IntN(4)
	step := (len(data) + pieces - 1) / pieces
	for off := 0; off < len(data); off += step {
		end := min(off+step, len(data))
		hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, end-1)}, "Content-Type": {"application/octet-stream"}}
		resp, err := w.c.Do("PATCH", loc, bytes.NewReader(data[off:end]), hdr, http.StatusAccepted)
		if err != nil {
			return err
		}
		resp.Body.Close()
		loc = w.absolute(resp.Header.Get("Location"))
	}
	u, err := url.Parse(loc)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", b.Digest.String())
	u.RawQuery = q.Encode()
	w.r.markSent()
	resp, err = w.c.Do("PUT", u.String(), nil, nil, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (w *worker) absolute(loc string) string {
	base, err := url.Parse(w.c.Base)
	if err != nil {
		return loc
	}
	u, err := base.Parse(loc)
	if err != nil {
		return loc
	}
	return u.String()
}

func (w *worker) deleteTag() error {
	w.r.mu.Lock()
	var tags []string
	for t, d := range w.r.tags {
		if d != "" {
			tags = append(tags, t)
		}
	}
	w.r.mu.Unlock()
	if len(tags) == 0 {
		return nil
	}
	slices.Sort(tags)
	o := &op{kind: opDeleteTag, tag: tags[w.rng.IntN(len(tags))]}
	w.r.begin(o)
	if err := w.c.Delete(w.r.Name, "manifests", o.tag); err != nil {
		return err
	}
	w.ack(o)
	return nil
}

// deleteManifest deletes, by digest, a manifest this client pushed,
// tagged or not (its tags go with it).
func (w *worker) deleteManifest() error {
	w.r.mu.Lock()
	live := w.r.liveImages()
	tagged := w.r.tagged()
	w.r.mu.Unlock()
	if len(live) == 0 {
		return nil
	}
	d := live[w.rng.IntN(len(live))].Digest
	o := &op{kind: opDeleteManifest, dgst: d}
	w.r.begin(o)
	err := w.c.Delete(w.r.Name, "manifests", d.String())
	if err != nil && w.gc && !tagged[d] && hasCode(err, "MANIFEST_UNKNOWN") {
		// Collected already: untagged for longer than gcDelay. Gone is
		// what the delete asked for, and the audit holds pier to it.
		w.r.mu.Lock()
		w.r.pending = nil
		w.r.apply(o)
		w.r.mu.Unlock()
		w.r.l.note("%s collected before its delete: manifest %s", w.r.Name, d)
		return nil
	}
	if err != nil {
		return err
	}
	w.ack(o)
	return nil
}

// answered reports whether err is the registry's answer (a status), as
// opposed to the request failing in transport (the registry died).
func answered(err error) bool {
	var se *ociclient.StatusError
	return errors.As(err, &se)
}

// hasCode reports whether err is an answer carrying the spec's error code.
func hasCode(err error, code string) bool {
	var se *ociclient.StatusError
	return errors.As(err, &se) && strings.Contains(se.Body, `"`+code+`"`)
}
