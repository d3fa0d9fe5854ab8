#!/bin/sh
# mandoc -Tlint over the man pages: any warning or error fails.
# Usage: mandoc_lint_test.sh [source dir]
set -u
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}

if ! command -v mandoc >/dev/null 2>&1; then
	echo "mandoc is not installed (Debian: apt-get install mandoc)" >&2
	exit 1
fi

status=0
for page in "$src/docs/bs_router.8" "$src/docs/bs_router-client.1"; do
	if [ ! -f "$page" ]; then
		echo "missing: $page" >&2
		status=1
		continue
	fi
	# mandoc's status is non-zero for warnings too, but say so if it
	# printed anything at all.
	out=$(mandoc -Tlint -W warning "$page" 2>&1)
	if [ -n "$out" ]; then
		printf '%s\n' "$out"
		status=1
	fi
done
[ "$status" -eq 0 ] && echo "mandoc: man pages clean"
exit "$status"
