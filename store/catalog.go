package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pier-oci/pier/store/oci"
)

// Repositories lists the repositories of the store, sorted: every directory
// below the root that holds an index.json and whose path is a valid
// repository name. Layouts nest (repository "a/b" lives inside "a"), so the
// walk continues below a repository but never into its blobs or hidden
// directories.
func (s *Store) Repositories(ctx context.Context) ([]string, error) {
	var repos []string
	err := filepath.WalkDir(s.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == s.root {
				return err
			}
			return nil // a directory vanished or is unreadable: skip it
		}
		if !d.IsDir() {
			return nil
		}
		if path == s.root {
			return ctx.Err()
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") || name == "blobs" {
			return filepath.SkipDir
		}
		rel, err := filepath.Rel(s.root, path)
		if err != nil {
			return nil
		}
		repo := filepath.ToSlash(rel)
		if oci.ValidateName(repo) != nil {
			return filepath.SkipDir
		}
		if fi, err := os.Stat(filepath.Join(path, "index.json")); err == nil && fi.Mode().IsRegular() {
			repos = append(repos, repo)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	slices.Sort(repos)
	return repos, nil
}
