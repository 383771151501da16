package store

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/retention"
)

// AnnotationPushed records, on a tagged entry of index.json, when the tag
// was written (RFC 3339): retention's pushedWithin and
// mostRecentlyPushedCount count from it. It costs no write of its own (the
// push writes the entry anyway), and other tools ignore it. A tag without
// it (written by another tool, or before pier kept it) counts from when
// its manifest reached this disk.
const AnnotationPushed = "com.github.pier-oci.pushed"

// SetRetention sets the root's retention policies (storage.retention),
// applied by every collection from now on; nil keeps every tag.
func (s *Store) SetRetention(c *retention.Config) { s.retention.Store(c) }

// Retention is the root's retention policies; never nil.
func (s *Store) Retention() *retention.Config {
	if c := s.retention.Load(); c != nil {
		return c
	}
	return &retention.Config{}
}

// pushedAt is when entry e's tag was written, or else when its manifest
// arrived (added, by digest).
func pushedAt(e ispec.Descriptor, added map[digest.Digest]time.Time) time.Time {
	if v, ok := e.Annotations[AnnotationPushed]; ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return t
		}
	}
	return added[e.Digest]
}

// retentionRules is what retention decided for one version of a
// repository's index, for garbage collection to apply.
type retentionRules struct {
	delay         time.Duration          // untagged manifests and orphaned referrers wait this long
	drop          map[string]bool        // tags to remove
	dropTags      []string               // the same, in index order
	tagged        map[digest.Digest]bool // manifests a kept tag names
	keepUntagged  map[digest.Digest]bool // untagged manifests kept whatever their age
	keepReferrers bool                   // referrers whose subject is gone stay
	verdicts      []retention.Verdict
}

// retentionOf applies the policy governing repo, if any, to its index x.
// Without one, nothing changes: every tag stays, and untagged manifests
// and orphaned referrers go once older than gcDelay.
func (s *Store) retentionOf(ctx context.Context, repo string, x *repoIndex, blobs []blobFile, gcDelay time.Duration, now time.Time) retentionRules {
	r := retentionRules{delay: gcDelay}
	cfg := s.Retention()
	pol := cfg.For(repo)
	if pol == nil {
		return r
	}
	if cfg.Delay > 0 {
		r.delay = cfg.Delay
	}
	r.keepReferrers = !pol.DeleteReferrers
	added := make(map[digest.Digest]time.Time, len(blobs))
	for _, b := range blobs {
		added[b.digest] = b.added
	}
	pulls, watched := s.pullTimes(ctx, repo)
	var tags, loose []retention.Image
	for _, e := range x.Manifests {
		im := retention.Image{Digest: e.Digest, Pushed: pushedAt(e, added), Pulled: pulls[e.Digest]}
		if im.Pulled.Before(watched) {
			// Pier was not watching: no tag goes for want of pulls it
			// could not see (pull times lost, or just turned on).
			im.Pulled = watched
		}
		if t, ok := tagOf(e); ok {
			im.Tag = t
			tags = append(tags, im)
		} else {
			loose = append(loose, im)
		}
	}
	r.drop, r.tagged, r.keepUntagged = map[string]bool{}, map[digest.Digest]bool{}, map[digest.Digest]bool{}
	for _, v := range pol.Tags(tags, now) {
		if v.Keep {
			r.tagged[v.Digest] = true
		} else if !r.drop[v.Tag] {
			r.drop[v.Tag] = true
			r.dropTags = append(r.dropTags, v.Tag)
		}
		r.verdicts = append(r.verdicts, v)
	}
	for _, v := range pol.Untagged(loose, now) {
		if v.Keep {
			r.keepUntagged[v.Digest] = true
		}
		r.verdicts = append(r.verdicts, v)
	}
	return r
}
