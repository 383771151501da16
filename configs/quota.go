package configs

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// fileQuota is pier's storage.quota (and each subpath's): limits that keep
// a box's disk from filling. zot has no such keys; it has maxRepos.
type fileQuota struct {
	MaxBytes      *size            `json:"maxBytes"`
	MinFreeSpace  *size            `json:"minFreeSpace"`
	PerRepository []*fileRepoQuota `json:"perRepository"`
	// RetentionOnLowSpace runs collection (and retention) at once when a
	// push is refused for want of free space, within gcTimeWindow or not.
	RetentionOnLowSpace *bool `json:"retentionOnLowSpace"`
}

type fileRepoQuota struct {
	Repositories []string `json:"repositories"`
	MaxBytes     *size    `json:"maxBytes"`
}

// QuotaConfig bounds what pushes may add to one root. A push that would
// go past a limit is refused (403 DENIED, naming the limit), its upload
// removed; pulls, deletes and garbage collection go on.
type QuotaConfig struct {
	// MaxBytes bounds the bytes the root's blobs take on the disk (a blob
	// shared by hard links counted once); 0: no limit.
	MaxBytes int64
	// MinFreeSpace refuses pushes while the root's filesystem has less
	// free; 0: no guard (a full disk still fails cleanly, with 507).
	MinFreeSpace int64
	// PerRepository bounds each repository a rule's globs match (the
	// first rule that matches) to MaxBytes of blobs, counting every blob
	// it holds in full, shared or not.
	PerRepository []RepoQuota
	// MaxRepos is zot's storage.maxRepos: a push that would create a
	// repository past this many in the root is refused; 0: no limit.
	MaxRepos int
	// RetentionOnLowSpace starts a collection pass, retention included, as
	// soon as a push is refused for want of free space.
	RetentionOnLowSpace bool
}

// RepoQuota is one rule of QuotaConfig.PerRepository.
type RepoQuota struct {
	Repositories []string
	MaxBytes     int64
	Key          string // the rule's key path, for messages
}

// On reports whether any limit is set.
func (q QuotaConfig) On() bool {
	return q.MaxBytes > 0 || q.MinFreeSpace > 0 || len(q.PerRepository) > 0 || q.MaxRepos > 0
}

func resolveQuota(key string, f *fileQuota, maxRepos *int) (QuotaConfig, error) {
	q := QuotaConfig{MaxRepos: value(maxRepos, 0)}
	if q.MaxRepos < 0 {
		return q, &KeyError{Key: key + ".maxRepos", Message: "must be 0 (no limit) or more"}
	}
	if f == nil {
		return q, nil
	}
	key += ".quota"
	q.MaxBytes = int64(value(f.MaxBytes, 0))
	q.MinFreeSpace = int64(value(f.MinFreeSpace, 0))
	q.RetentionOnLowSpace = value(f.RetentionOnLowSpace, false)
	for i, r := range f.PerRepository {
		rkey := fmt.Sprintf("%s.perRepository[%d]", key, i)
		if r == nil || len(r.Repositories) == 0 || r.MaxBytes == nil {
			return q, &KeyError{Key: rkey, Message: `needs repositories (globs, like ["ci/**"]) and maxBytes`}
		}
		for j, g := range r.Repositories {
			if err := checkPattern(g); err != nil {
				return q, &KeyError{Key: fmt.Sprintf("%s.repositories[%d]", rkey, j), Message: err.Error()}
			}
		}
		q.PerRepository = append(q.PerRepository, RepoQuota{Repositories: r.Repositories, MaxBytes: int64(*r.MaxBytes), Key: rkey + ".maxBytes"})
	}
	return q, nil
}

// size is a number of bytes in the file: a whole number, or a string with
// a unit ("512MiB", "10GB", "1.5 GiB"; KiB, MiB, GiB, TiB are powers of
// 1024, KB, MB, GB, TB of 1000).
type size int64

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *size) UnmarshalJSON(b []byte) error {
	hint := `(a number of bytes, or a size like "512MiB" or "10GB")`
	var text string
	if b[0] == '"' {
		if err := json.Unmarshal(b, &text); err != nil {
			return err
		}
	} else {
		text = string(b)
	}
	t := strings.TrimSpace(text)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	n, err := strconv.ParseFloat(t[:i], 64)
	unit, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if err != nil || !ok || n < 0 {
		return fmt.Errorf("%s is not a size %s", b, hint)
	}
	v := n * unit
	if v > math.MaxInt64/2 {
		return fmt.Errorf("%s is too large", b)
	}
	*s = size(v)
	return nil
}
