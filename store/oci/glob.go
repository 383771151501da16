package oci

import (
	"path"
	"strings"
)

// MatchGlob matches a repository name against a pattern as zot's
// doublestar does: "*", "?" and "[...]" within one name component, "**"
// as a whole component for zero or more components ("a/**" matches "a").
// Access control, retention policies and quotas all name repositories
// this way. A malformed pattern matches nothing; configs checks patterns
// when the file is read. It runs in time linear in the product of the
// components (no backtracking), so no name from the network can make it
// slow.
func MatchGlob(pattern, name string) bool {
	pat, parts := strings.Split(pattern, "/"), strings.Split(name, "/")
	// next[j]: pat[i+1:] matches parts[j:]; cur[j]: pat[i:] matches parts[j:].
	next := make([]bool, len(parts)+1)
	cur := make([]bool, len(parts)+1)
	next[len(parts)] = true
	for i := len(pat) - 1; i >= 0; i-- {
		for j := len(parts); j >= 0; j-- {
			switch {
			case pat[i] == "**":
				cur[j] = next[j] || j < len(parts) && cur[j+1]
			case j == len(parts):
				cur[j] = false
			default:
				ok, err := path.Match(pat[i], parts[j])
				cur[j] = err == nil && ok && next[j+1]
			}
		}
		next, cur = cur, next
	}
	return next[0]
}
