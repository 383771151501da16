#!/bin/sh
# debversion.sh VERSION prints the Debian package version for a pier version
# as `git describe --tags --always --dirty` prints it:
#
#   v1.2.3                      1.2.3
#   v1.2.3-rc1                  1.2.3~rc1            (sorts before 1.2.3)
#   v1.2.3-4-gabc1234           1.2.3+git20260101.4.abc1234
#   abc1234  (no tag yet)       0.0.0~git20260101.abc1234
#   ...-dirty                   ... with .dirty appended
#   anything else (dev)         0.0.0~dev
#
# The date is the commit's (UTC), so every build of one commit gets the same
# version, and later commits sort after earlier ones.
set -eu

v="${1:?usage: debversion.sh VERSION}"
dirty=""
case "$v" in
*-dirty)
	dirty=".dirty"
	v="${v%-dirty}"
	;;
esac

date="$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d 2>/dev/null || true)"
[ -n "$date" ] || date="00000000"

# release[-pre]  or  release[-pre]-N-gSHA
tag_re='v\{0,1\}\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)\(-[0-9A-Za-z.]*[A-Za-z][0-9A-Za-z.]*\)\{0,1\}'
if expr "$v" : "${tag_re}-\([0-9][0-9]*\)-g\([0-9a-f]\{4,\}\)\$" >/dev/null; then
	rel="$(expr "$v" : "${tag_re}-[0-9]*-g[0-9a-f]*\$")"
	pre="$(expr "$v" : "v\{0,1\}[0-9.]*-\([0-9A-Za-z.]*[A-Za-z][0-9A-Za-z.]*\)-[0-9]*-g[0-9a-f]*\$" || true)"
	n="$(expr "$v" : '.*-\([0-9][0-9]*\)-g[0-9a-f]*$')"
	sha="$(expr "$v" : '.*-g\([0-9a-f]*\)$')"
	echo "${rel}${pre:+~$pre}+git${date}.${n}.${sha}${dirty}"
elif expr "$v" : "${tag_re}\$" >/dev/null; then
	rel="$(expr "$v" : "${tag_re}\$")"
	pre="$(expr "$v" : "v\{0,1\}[0-9.]*-\(.*\)\$" || true)"
	echo "${rel}${pre:+~$pre}${dirty:++git${date}${dirty}}"
elif expr "$v" : '[0-9a-f]\{4,\}$' >/dev/null; then
	echo "0.0.0~git${date}.${v}${dirty}"
else
	echo "0.0.0~dev"
fi
