package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/oci"
)

// ErrQuota: a push would go past one of the root's limits (a byte quota,
// the free-space guard, the number of repositories). Nothing of it was
// kept; pulls, deletes and collections go on.
var ErrQuota = errors.New("over quota")

// Quota is what pushes may add to the root (storage.quota, maxRepos).
type Quota struct {
	// Name is the root's key path in the configuration ("storage",
	// "storage.subPaths./a"), so refusals name the limit the operator
	// set.
	Name string
	// MaxBytes bounds the root's blobs, each stored object once; 0: none.
	MaxBytes int64
	// MinFreeSpace refuses pushes while the root's filesystem has less
	// free (where the driver can tell, driver.Spacer); 0: none.
	MinFreeSpace int64
	// PerRepository bounds the repositories the first matching rule's
	// globs match, every blob they hold in full.
	PerRepository []RepoQuota
	// MaxRepos bounds the repositories of the root; 0: none.
	MaxRepos int
	// LowSpace, when set, is called (in its own goroutine, at most one at
	// a time) when a push is refused for want of free space: the caller
	// collects early.
	LowSpace func()
}

// RepoQuota bounds the repositories its globs match.
type RepoQuota struct {
	Repositories []string
	MaxBytes     int64
	Key          string // its key path, for refusals
}

// SetQuota sets the root's limits; the zero Quota has none.
func (s *Store) SetQuota(q Quota) {
	if _, ok := s.drv.(driver.Spacer); q.MinFreeSpace > 0 && !ok {
		s.log.Warn(q.Name+".quota.minFreeSpace does nothing here: this storage has no free space to tell (a bucket); "+q.Name+".quota.maxBytes bounds it", "storage", s.drv.String())
	}
	s.quota.Store(&q)
}

func (s *Store) limits() *Quota {
	if q := s.quota.Load(); q != nil {
		return q
	}
	return &Quota{}
}

// admit refuses a push that would add adding bytes to repo past a limit.
// A push creating repo is refused when the root has MaxRepos already.
func (s *Store) admit(ctx context.Context, repo string, adding int64) error {
	q := s.limits()
	if err := s.guardFree(q); err != nil {
		return err
	}
	if q.MaxBytes > 0 || len(q.PerRepository) > 0 || q.MaxRepos > 0 {
		s.usage.waitCounted(ctx)
	}
	total, repos, ready := s.Usage()
	if !ready {
		return nil // counted at start; until then only free space is guarded
	}
	if q.MaxBytes > 0 && total+adding > q.MaxBytes {
		return s.refuse("%w: %s.quota.maxBytes is %s and the storage holds %s; this push needs %s more (delete images, then garbage collection frees their blobs)",
			ErrQuota, q.Name, HumanBytes(q.MaxBytes), HumanBytes(total), HumanBytes(adding))
	}
	if rq := q.forRepo(repo); rq != nil {
		if held := s.repoBytes(repo); held+adding > rq.MaxBytes {
			return s.refuse("%w: %s is %s for %s, which holds %s; this push needs %s more",
				ErrQuota, rq.Key, HumanBytes(rq.MaxBytes), repo, HumanBytes(held), HumanBytes(adding))
		}
	}
	if q.MaxRepos > 0 && repos >= q.MaxRepos && !s.repoExists(ctx, repo) {
		return s.refuse("%w: %s.maxRepos is %d and the storage holds %d repositories; %s would be a new one",
			ErrQuota, q.Name, q.MaxRepos, repos, repo)
	}
	return nil
}

// admitBlob is admit for blob d of size bytes about to be committed to
// repo: a blob repo holds already adds nothing.
func (s *Store) admitBlob(ctx context.Context, repo string, d digest.Digest, size int64) error {
	if !s.limits().on() {
		return nil
	}
	if _, err := s.drv.Stat(ctx, blobKey(repo, d)); err == nil {
		return s.guardFree(s.limits())
	}
	return s.admit(ctx, repo, size)
}

// guardFree refuses a push while the filesystem has less than
// MinFreeSpace free.
func (s *Store) guardFree(q *Quota) error {
	if q.MinFreeSpace <= 0 {
		return nil
	}
	sp, ok := s.drv.(driver.Spacer)
	if !ok {
		return nil
	}
	free, _, err := sp.Space()
	if err != nil || free >= q.MinFreeSpace {
		return nil
	}
	if q.LowSpace != nil && s.lowSpace.CompareAndSwap(false, true) {
		go func() {
			defer s.lowSpace.Store(false)
			q.LowSpace()
		}()
	}
	return s.refuse("%w: %s.quota.minFreeSpace is %s and the storage has %s free; pushes are refused until space is freed (delete images, then garbage collection frees their blobs)",
		ErrQuota, q.Name, HumanBytes(q.MinFreeSpace), HumanBytes(free))
}

// refuse is the error of a refused push, counted.
func (s *Store) refuse(format string, args ...any) error {
	s.refused.Add(1)
	return fmt.Errorf(format, args...)
}

func (q *Quota) on() bool {
	return q.MaxBytes > 0 || q.MinFreeSpace > 0 || len(q.PerRepository) > 0 || q.MaxRepos > 0
}

func (q *Quota) forRepo(repo string) *RepoQuota {
	i := slices.IndexFunc(q.PerRepository, func(r RepoQuota) bool {
		return slices.ContainsFunc(r.Repositories, func(g string) bool { return oci.MatchGlob(g, repo) })
	})
	if i < 0 {
		return nil
	}
	return &q.PerRepository[i]
}

// refuseUpload removes an upload a limit refused, so that its bytes are
// free at once.
func (s *Store) refuseUpload(o *openedUpload) {
	s.uploads.drop(o.key)
	if err := o.w.Cancel(context.Background()); err != nil {
		s.drv.Delete(context.Background(), uploadKey(o.repo, o.id))
	}
}

// HumanBytes writes n bytes for people, in binary units: "512 B",
// "1.5 MiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// quotaState is the store's part of the limits: the Quota in force and
// whether an early collection is running.
type quotaState struct {
	quota    atomic.Pointer[Quota]
	lowSpace atomic.Bool
	refused  atomic.Int64 // pushes refused by a limit
}
