package ledger

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/ociclient"
)

// CheckOptions say what the registry was allowed to do on its own.
type CheckOptions struct {
	// GC: garbage collection ran, so untagged manifests and blobs that no
	// tagged manifest references may be gone (if served, they must still
	// be exact). Without it everything acknowledged must be served.
	GC bool
}

// Report is the outcome of an audit.
type Report struct {
	Checked   int      // individual verifications made
	Collected int      // manifests and blobs that could be collected and were
	Failures  []string // what the registry lost, undid, tore or served wrongly
}

func (rep *Report) fail(format string, args ...any) {
	rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...))
}

// Check audits the registry against everything acknowledged so far; for
// a request that was in flight it accepts either outcome, then adopts the
// one it saw. Run it while no workload runs.
func (l *Ledger) Check(c *ociclient.Client, o CheckOptions) Report {
	var rep Report
	listable := map[string]bool{}
	for _, r := range l.all() {
		listable[r.Name] = r.check(c, o, &rep)
	}
	// The catalog and the tags lists must agree on which repositories exist.
	catalog, err := c.Catalog()
	if err != nil {
		rep.fail("catalog: %v", err)
		return rep
	}
	prefix := strings.TrimSuffix(l.Probe.Name, "probe")
	for _, name := range catalog {
		if _, ours := listable[name]; strings.HasPrefix(name, prefix) && !ours {
			rep.fail("catalog lists %s, which nothing created", name)
		}
	}
	for name, ok := range listable {
		if in := slices.Contains(catalog, name); in != ok && !agreeLater(c, name) {
			rep.fail("%s: in the catalog: %v, but its tags list answers: %v", name, in, ok)
		}
		rep.Checked++
	}
	return rep
}

// agreeLater asks again whether the catalog and the tags list agree on
// repo: collection removes a repository left with nothing, perhaps
// between the two answers compared first.
func agreeLater(c *ociclient.Client, repo string) bool {
	catalog, err := c.Catalog()
	if err != nil {
		return false
	}
	_, err = c.Tags(repo)
	return slices.Contains(catalog, repo) == (err == nil)
}

// check audits one repository and reports whether its tags list answered
// (the repository exists).
func (r *Repo) check(c *ociclient.Client, o CheckOptions, rep *Report) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending
	r.pending = nil

	// Tags: each must name what the ledger says, or, for the one in
	// flight, what it would say had the request taken effect.
	before := maps.Clone(r.tags)
	after := maps.Clone(r.tags)
	switch {
	case p == nil:
	case p.kind == opPutManifest && p.tag != "":
		after[p.tag] = p.image.Digest
	case p.kind == opDeleteTag:
		after[p.tag] = ""
	case p.kind == opDeleteManifest:
		for t, d := range after {
			if d == p.dgst {
				after[t] = ""
			}
		}
	}
	served := map[string]digest.Digest{}
	for _, t := range slices.Sorted(maps.Keys(after)) {
		got, err := manifestDigest(c, r.Name, t)
		if err != nil {
			rep.fail("%s: tag %s: %v", r.Name, t, err)
			continue
		}
		served[t] = got
		rep.Checked++
		switch {
		case got == before[t] || got == after[t]:
		case before[t] == after[t] && before[t] == "":
			rep.fail("%s: acknowledged delete of tag %s undone: it names %s", r.Name, t, got)
		case before[t] == after[t]:
			rep.fail("%s: tag %s: acknowledged %s, served %q", r.Name, t, before[t], got)
		default:
			rep.fail("%s: tag %s: %q before the request in flight, %q after, served %q", r.Name, t, before[t], after[t], got)
		}
	}

	// Manifests by digest.
	taggedBefore := digestSet(before)
	taggedAfter := digestSet(after)
	present := map[digest.Digest]bool{}
	images := maps.Clone(r.images)
	if p != nil && p.kind == opPutManifest {
		images[p.image.Digest] = p.image
	}
	var required []*Image
	recheck := r.deletesToCheck()
	for _, d := range slices.Sorted(maps.Keys(images)) {
		_, deleted := r.deleted[d]
		if deleted && !recheck[d] {
			continue
		}
		inFlight := p != nil && (p.kind == opPutManifest && p.image.Digest == d || p.kind == opDeleteManifest && p.dgst == d)
		must := !deleted && !inFlight && (!o.GC || taggedBefore[d] && taggedAfter[d])
		got, err := manifestDigest(c, r.Name, d.String())
		rep.Checked++
		switch {
		case err != nil:
			rep.fail("%s: manifest %s: %v", r.Name, d, err)
		case got != "" && got != d:
			rep.fail("%s: manifest %s served torn: its content hashes to %s", r.Name, d, got)
		case got != "" && deleted:
			rep.fail("%s: acknowledged delete of manifest %s undone", r.Name, d)
		case got == "" && must:
			rep.fail("%s: acknowledged manifest %s lost", r.Name, d)
		case got == "" && !deleted && !inFlight:
			// Collected: it can never come back (nothing re-sends it), so
			// later audits need not ask again.
			rep.Collected++
			delete(r.images, d)
		}
		present[d] = got == d
		if must {
			required = append(required, images[d])
		}
	}

	// Blobs: those of every manifest that must be there must be there;
	// any other acknowledged blob may be gone, but only whole.
	must := map[digest.Digest]bool{}
	for _, img := range required {
		for _, b := range img.Blobs {
			must[b.Digest] = true
		}
	}
	if !o.GC {
		for d := range r.blobs {
			must[d] = true
		}
	}
	blobs := maps.Clone(r.blobs)
	if p != nil && (p.kind == opPushBlob || p.kind == opMount) {
		blobs[p.blob.Digest] = p.blob
	}
	for d := range r.unfinished {
		if _, ok := blobs[d]; !ok {
			blobs[d] = Blob{Digest: d}
		}
	}
	blobThere := map[digest.Digest]bool{}
	for _, d := range slices.Sorted(maps.Keys(blobs)) {
		b := blobs[d]
		acked := r.blobs[d].Digest == d
		neverSent := !acked && (r.unfinished[d] || p != nil && p.kind == opPushBlob && p.blob.Digest == d && !p.sent)
		there, err := checkBlob(c, r.Name, b, !neverSent)
		rep.Checked++
		switch {
		case err != nil:
			rep.fail("%s: blob %s: %v", r.Name, d, err)
		case there && neverSent:
			rep.fail("%s: blob %s served as complete, though the request completing its upload was never sent", r.Name, d)
		case !there && must[d]:
			rep.fail("%s: acknowledged blob %s (%d bytes) lost", r.Name, d, b.Size)
		case !there && acked:
			rep.Collected++
			delete(r.blobs, d) // a later push of the same content acknowledges it again
		}
		blobThere[d] = there
	}

	// The tags list names exactly the tags served.
	var want []string
	for t, d := range served {
		if d != "" {
			want = append(want, t)
		}
	}
	slices.Sort(want)
	tags, err := c.Tags(r.Name)
	listable := err == nil
	rep.Checked++
	switch {
	case err != nil && hasCode(err, "NAME_UNKNOWN") && len(want) == 0:
	case err != nil:
		rep.fail("%s: tags list: %v (tags %v are served)", r.Name, err, want)
	default:
		slices.Sort(tags)
		if !slices.Equal(tags, want) {
			rep.fail("%s: tags list %v, but the tags served are %v", r.Name, tags, want)
		}
	}

	if p != nil {
		r.adopt(p, served, present, blobThere)
	}
	return listable
}

// deletesToCheck picks the acknowledged deletes this audit verifies:
// all of the last two rounds (a cut can only undo a delete it followed),
// and a share of the older ones that rotates from audit to audit, at most
// 32, so that a long run's audits stay short while every delete is looked
// at again now and then. The caller holds r.mu.
func (r *Repo) deletesToCheck() map[digest.Digest]bool {
	round := r.l.currentRound()
	pick := map[digest.Digest]bool{}
	var older []digest.Digest
	for d, at := range r.deleted {
		if at >= round-2 {
			pick[d] = true
		} else {
			older = append(older, d)
		}
	}
	slices.Sort(older)
	share := (len(older) + 31) / 32 // audits it takes to see them all
	for i, d := range older {
		if i%share == r.audits%share {
			pick[d] = true
		}
	}
	r.audits++
	return pick
}

// adopt records what the request in flight turned out to do, so later
// audits hold the registry to it. The caller holds r.mu.
func (r *Repo) adopt(p *op, served map[string]digest.Digest, present, blobThere map[digest.Digest]bool) {
	took := false
	switch p.kind {
	case opPushBlob, opMount:
		took = blobThere[p.blob.Digest]
		if !took && p.kind == opPushBlob && !p.sent {
			r.unfinished[p.blob.Digest] = true
		}
	case opPutManifest:
		took = present[p.image.Digest] && (p.tag == "" || served[p.tag] == p.image.Digest)
	case opDeleteTag:
		took = served[p.tag] == ""
	case opDeleteManifest:
		took = !present[p.dgst]
	}
	if took {
		r.apply(p)
	}
	r.l.note("%s in flight at the crash, took effect: %v: %s", r.Name, took, p)
}

func (o *op) String() string {
	switch o.kind {
	case opPushBlob:
		return fmt.Sprintf("push blob %s (completing request sent: %v)", o.blob.Digest, o.sent)
	case opMount:
		return "mount blob " + o.blob.Digest.String()
	case opPutManifest:
		return fmt.Sprintf("put manifest %s tag %q", o.image.Digest, o.tag)
	case opDeleteTag:
		return "delete tag " + o.tag
	default:
		return "delete manifest " + o.dgst.String()
	}
}

// CheckCollected waits, up to timeout, until garbage collection removed
// every untagged manifest and every blob no tagged manifest references,
// and reports what is still served then. Run it once everything in the
// ledger is older than gcDelay and no workload runs.
func (l *Ledger) CheckCollected(c *ociclient.Client, timeout time.Duration) Report {
	type item struct {
		repo     string
		d        digest.Digest
		manifest bool
	}
	var garbage []item
	for _, r := range l.all() {
		r.mu.Lock()
		tagged := r.tagged()
		live := map[digest.Digest]bool{}
		for _, img := range r.liveImages() {
			if tagged[img.Digest] {
				for _, b := range img.Blobs {
					live[b.Digest] = true
				}
			} else {
				garbage = append(garbage, item{r.Name, img.Digest, true})
			}
		}
		for d := range r.blobs {
			if !live[d] {
				garbage = append(garbage, item{r.Name, d, false})
			}
		}
		r.mu.Unlock()
	}
	rep := Report{Checked: len(garbage)}
	deadline := time.Now().Add(timeout)
	for len(garbage) > 0 {
		var left []item
		for _, g := range garbage {
			kind := "blobs"
			if g.manifest {
				kind = "manifests"
			}
			resp, err := c.Do("HEAD", "/v2/"+g.repo+"/"+kind+"/"+g.d.String(), nil, nil, http.StatusOK, http.StatusNotFound)
			if err != nil {
				rep.fail("%s: %s %s: %v", g.repo, kind, g.d, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				left = append(left, g)
			}
		}
		garbage = left
		if len(garbage) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, g := range garbage {
		what := "blob"
		if g.manifest {
			what = "untagged manifest"
		}
		rep.fail("%s: %s %s not collected within %s", g.repo, what, g.d, timeout)
	}
	return rep
}

// manifestDigest fetches a manifest by tag or digest and returns the
// digest of what was served, or "" when the registry says it is unknown.
func manifestDigest(c *ociclient.Client, repo, ref string) (digest.Digest, error) {
	_, got, err := c.GetManifest(repo, ref)
	if hasCode(err, "MANIFEST_UNKNOWN") || hasCode(err, "NAME_UNKNOWN") {
		return "", nil
	}
	return got, err
}

// checkBlob reports whether the registry serves b. A served blob must
// answer HEAD with its digest and length, and GET with exactly its
// content (fetched only when full is set: the content is known).
func checkBlob(c *ociclient.Client, repo string, b Blob, full bool) (bool, error) {
	resp, err := c.Do("HEAD", "/v2/"+repo+"/blobs/"+b.Digest.String(), nil, nil, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if !full {
		return true, nil
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != b.Digest.String() {
		return true, fmt.Errorf("HEAD answers digest %s", got)
	}
	if n, _ := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); n != b.Size {
		return true, fmt.Errorf("HEAD answers length %s, acknowledged %d", resp.Header.Get("Content-Length"), b.Size)
	}
	data, err := c.GetBlob(repo, b.Digest) // checks the content against the digest
	if hasCode(err, "BLOB_UNKNOWN") {
		return false, nil // collected between the two requests
	}
	if err != nil {
		return true, fmt.Errorf("GET: %w", err)
	}
	if int64(len(data)) != b.Size {
		return true, fmt.Errorf("GET served %d bytes, acknowledged %d", len(data), b.Size)
	}
	return true, nil
}
