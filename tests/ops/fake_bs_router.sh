#!/bin/sh
# Stand-in for bs_router, installed as <root>/usr/local/sbin/bs_router by
# rc_profiles_test.sh.  With --check it records its arguments and fails when
# the config's name contains "broken".  Otherwise it records the signals it
# gets until SIGTERM, which it ignores when the config's name contains
# "stubborn" (a router draining long jobs).
set -eu
log=${BS_TEST_LOG:?}

config=
check=
prev=
for arg in "$@"; do
	[ "$prev" = -config ] && config=$arg
	[ "$arg" = --check ] && check=yes
	prev=$arg
done
label=${config##*/}
label=${label%.json}

if [ -n "$check" ]; then
	echo "check $*" >>"$log"
	case "$config" in
	*broken*) echo "bs_router: ${config}: broker: expected a string" >&2; exit 78 ;;
	esac
	exit 0
fi

echo "router $label started: $*" >>"$log"
trap 'echo "router $label got HUP" >>"$log"' HUP
case "$config" in
*stubborn*) trap 'echo "router $label got TERM, still draining" >>"$log"' TERM ;;
*) trap 'echo "router $label got TERM" >>"$log"; exit 0' TERM ;;
esac
: >"${BS_TEST_READY_DIR:?}/$$"
while :; do
	sleep 1 &
	wait $! || true
done
