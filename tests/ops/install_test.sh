#!/bin/sh
# Stages "cmake --install" into a scratch DESTDIR, as a FreeBSD port does,
# and checks the tree.  Usage: install_test.sh <build dir> [source dir]
set -u
build=${1:?usage: install_test.sh <build dir> [source dir]}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
stage=$(mktemp -d "${TMPDIR:-/tmp}/bs_router_install.XXXXXX")
trap 'rm -rf "$stage"' EXIT
failures=0

fail()
{
	echo "FAIL: $*"
	failures=$((failures + 1))
}

if ! DESTDIR="$stage" cmake --install "$build" --prefix /usr/local >"$stage.log" 2>&1; then
	cat "$stage.log"
	rm -f "$stage.log"
	echo "FAIL: cmake --install"
	exit 1
fi
rm -f "$stage.log"
p="$stage/usr/local"

for f in sbin/bs_router bin/bs_router-client etc/rc.d/bs_router; do
	[ -f "$p/$f" ] || fail "missing $f"
	[ -x "$p/$f" ] || fail "$f is not executable"
done
cmp -s "$src/rc.d/bs_router" "$p/etc/rc.d/bs_router" ||
    fail "etc/rc.d/bs_router differs from rc.d/bs_router under prefix /usr/local"

for json in "$src"/config/*.json; do
	[ -f "$json" ] || continue
	name=${json##*/}
	cmp -s "$json" "$p/etc/bs_router/$name.sample" || fail "etc/bs_router/$name.sample is not config/$name"
	[ ! -e "$p/etc/bs_router/$name" ] || fail "etc/bs_router/$name installed: only samples belong there"
done
[ -f "$p/etc/bs_router/pool1.json.sample" ] || fail "missing etc/bs_router/pool1.json.sample"

[ -f "$p/etc/newsyslog.conf.d/bs_router.conf" ] || fail "missing etc/newsyslog.conf.d/bs_router.conf"

if [ "$(uname -s)" = FreeBSD ]; then
	man="$p/man"
	[ ! -e "$p/lib/systemd" ] || fail "systemd unit installed on FreeBSD"
else
	man="$p/share/man"
	[ -f "$p/lib/systemd/system/bs_router@.service" ] || fail "missing lib/systemd/system/bs_router@.service"
fi
[ -f "$man/man8/bs_router.8" ] || fail "missing ${man#"$p"/}/man8/bs_router.8"
[ -f "$man/man1/bs_router-client.1" ] || fail "missing ${man#"$p"/}/man1/bs_router-client.1"

# Nothing may land outside the prefix.
outside=$(find "$stage" -mindepth 1 \( -path "$stage/usr" -o -path "$stage/usr/local" -o -path "$p/*" \) -prune -o -print)
[ -z "$outside" ] || fail "installed outside the prefix: $outside"

# Another prefix: the paths inside the scripts follow it.
other="$stage/other"
mkdir -p "$other"
if DESTDIR="$other" cmake --install "$build" --prefix /opt/bsr >/dev/null 2>&1; then
	grep -qF 'bs_router_program:=/opt/bsr/sbin/bs_router}' "$other/opt/bsr/etc/rc.d/bs_router" ||
	    fail "prefix /opt/bsr: rc.d/bs_router still names /usr/local/sbin/bs_router"
	grep -q ' /opt/bsr/etc/rc.d/bs_router$' "$other/opt/bsr/etc/newsyslog.conf.d/bs_router.conf" ||
	    fail "prefix /opt/bsr: the newsyslog entry does not run /opt/bsr/etc/rc.d/bs_router"
	if grep -q /usr/local/ "$other/opt/bsr/etc/rc.d/bs_router"; then
		fail "prefix /opt/bsr: rc.d/bs_router still mentions /usr/local/"
	fi
else
	fail "cmake --install --prefix /opt/bsr"
fi

if [ "$failures" -ne 0 ]; then
	echo "--- staged tree"
	(cd "$stage" && find . | sort)
	echo "$failures check(s) failed"
	exit 1
fi
echo "install: staged tree as expected"
