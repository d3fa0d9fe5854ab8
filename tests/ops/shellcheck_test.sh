#!/bin/sh
# Runs shellcheck over the rc.d script, the test stand-ins here and every *.sh in
# scripts/ and tests/ops/.  Each file's own shebang (or shell directive)
# says which shell it is for.  Usage: shellcheck_test.sh [source dir]
set -u
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}

if ! command -v shellcheck >/dev/null 2>&1; then
	echo "shellcheck is not installed (Debian: apt-get install shellcheck)" >&2
	exit 1
fi

set -- "$src/rc.d/bs_router" "$src/tests/ops/rc.subr"
for f in "$src"/scripts/*.sh "$src"/tests/ops/*.sh; do
	[ -f "$f" ] && set -- "$@" "$f"
done

if shellcheck "$@"; then
	echo "shellcheck: $# files clean"
else
	exit 1
fi
