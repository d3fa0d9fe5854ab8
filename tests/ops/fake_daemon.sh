#!/bin/sh
# Stand-in for daemon(8), installed as <root>/usr/sbin/daemon by
# rc_profiles_test.sh.  It takes daemon(8)'s options, records its command
# line in $BS_TEST_LOG and leaves a supervisor behind, as daemon(8) does:
# the supervisor runs the program, writes the -P and -p pid files, records
# the signals it gets, passes SIGTERM on to the program and exits after it.
# The program must touch $BS_TEST_READY_DIR/<its pid> once it handles
# signals; the pid files appear only then, so a test never signals a
# process that is still starting.
set -u
log=${BS_TEST_LOG:?}

if [ "${1:-}" = --supervise ]; then
	shift
	superpid=$1 childpid=$2 title=$3 out=$4
	shift 4
	child=
	# shellcheck disable=SC2317 # run by the trap
	on_term() {
		echo "supervisor $title got TERM" >>"$log"
		if [ -n "$child" ]; then
			kill -TERM "$child" 2>/dev/null
			wait "$child"
		fi
		rm -f "$superpid" "$childpid"
		exit 0
	}
	trap 'echo "supervisor $title got HUP" >>"$log"' HUP
	trap on_term TERM
	"$@" >>"$out" 2>&1 </dev/null &
	child=$!
	tries=0
	while [ ! -e "${BS_TEST_READY_DIR:?}/$child" ]; do
		tries=$((tries + 1))
		[ "$tries" -lt 100 ] || exit 1
		sleep 0.1
	done
	: >"$BS_TEST_READY_DIR/supervisor.$$"
	echo "$child" >"$childpid"
	echo "$$" >"$superpid"
	while kill -0 "$child" 2>/dev/null; do
		sleep 1 &
		wait $!
	done
	rm -f "$superpid" "$childpid"
	exit 0
fi

echo "daemon $*" >>"$log"
superpid='' childpid='' title=daemon out=/dev/null
while getopts cfHrR:P:p:o:t: opt; do
	case "$opt" in
	P) superpid=$OPTARG ;;
	p) childpid=$OPTARG ;;
	t) title=$OPTARG ;;
	o) out=$OPTARG ;;
	c|f|H|r|R) ;;
	*) echo "daemon: bad option" >&2; exit 1 ;;
	esac
done
shift $((OPTIND - 1))
if [ -z "$superpid" ] || [ -z "$childpid" ]; then
	echo "daemon: -P and -p expected" >&2
	exit 1
fi

"$0" --supervise "$superpid" "$childpid" "$title" "$out" "$@" </dev/null >/dev/null 2>&1 &
tries=0
while [ ! -s "$superpid" ]; do
	tries=$((tries + 1))
	[ "$tries" -lt 100 ] || { echo "daemon: supervisor did not start" >&2; exit 1; }
	sleep 0.1
done
