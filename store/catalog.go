package store

import (
	"context"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/oci"
)

// Repositories lists the repositories of the store, sorted: every
// directory (prefix) that holds an index.json and whose key is a valid
// repository name. Layouts nest (repository "a/b" lives inside "a"), so
// the walk continues below a repository but never into its blobs or dot
// directories (uploads, pier's own state).
func (s *Store) Repositories(ctx context.Context) ([]string, error) {
	var repos []string
	err := s.drv.Walk(ctx, "", func(e driver.Info) error {
		name := path.Base(e.Key)
		if e.IsDir {
			if strings.HasPrefix(name, ".") || name == "blobs" || oci.ValidateName(e.Key) != nil {
				return fs.SkipDir
			}
			return ctx.Err()
		}
		if repo := path.Dir(e.Key); name == "index.json" && repo != "." && oci.ValidateName(repo) == nil {
			repos = append(repos, repo)
		}
		return nil
	})
	if err != nil {
		return nil, fromDriver(err, nil, "list repositories")
	}
	slices.Sort(repos)
	return repos, nil
}
