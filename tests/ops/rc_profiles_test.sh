#!/bin/sh
# Runs rc.d/bs_router's profile logic on any POSIX system: the script is
# copied under a scratch root with its absolute paths moved there (the only
# change made to it), /etc/rc.subr is tests/ops/rc.subr, and daemon(8) and
# bs_router are fakes that record what they were asked and which signals they
# got.  Usage: rc_profiles_test.sh [source dir]
set -u

src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
here="$src/tests/ops"
root=$(mktemp -d "${TMPDIR:-/tmp}/bs_router_rc.XXXXXX")
log="$root/log"
failures=0

export BS_TEST_LOG="$log"
export BS_TEST_READY_DIR="$root/ready"
export BS_TEST_RC_CONF="$root/etc/rc.conf"

# Ends the fakes this test started, by the pids they left in the ready
# directory (even those a broken script lost track of), then the root.
cleanup()
{
	for f in "$BS_TEST_READY_DIR"/*; do
		[ -e "$f" ] || continue
		pid=${f##*[!0-9]}
		if [ -r "/proc/$pid/cmdline" ] && ! grep -q "$root" "/proc/$pid/cmdline"; then
			continue
		fi
		kill -KILL "$pid" 2>/dev/null
	done
	rm -rf "$root"
}
trap cleanup EXIT

fail()
{
	echo "FAIL: $*"
	failures=$((failures + 1))
}

mkdir -p "$root/etc" "$root/usr/sbin" "$root/usr/local/sbin" \
    "$root/usr/local/etc/rc.d" "$root/usr/local/etc/bs_router" \
    "$root/var/run" "$root/var/log" "$root/conf" "$BS_TEST_READY_DIR"
cp "$here/rc.subr" "$root/etc/rc.subr"
cp "$here/fake_daemon.sh" "$root/usr/sbin/daemon"
cp "$here/fake_bs_router.sh" "$root/usr/local/sbin/bs_router"
script="$root/usr/local/etc/rc.d/bs_router"
sed -e "s|/etc/rc\.subr|$root/etc/rc.subr|" \
    -e "s|/usr/local/|$root/usr/local/|g" \
    -e "s|/usr/sbin/daemon|$root/usr/sbin/daemon|g" \
    -e "s|/var/run/|$root/var/run/|g" \
    -e "s|/var/log/|$root/var/log/|g" \
    "$src/rc.d/bs_router" >"$script"
chmod +x "$root/usr/sbin/daemon" "$root/usr/local/sbin/bs_router" "$script"
grep -q "^\. $root/etc/rc.subr\$" "$script" || fail "rc.d/bs_router does not source /etc/rc.subr on a line of its own"
# "service -e" finds enabled services by grepping for these.
grep -q '^name="bs_router"$' "$script" || fail 'rc.d/bs_router: no line name="bs_router"'
grep -q '^rcvar="bs_router_enable"$' "$script" || fail 'rc.d/bs_router: no line rcvar="bs_router_enable"'

for f in pool1 pool2 pool3; do
	: >"$root/usr/local/etc/bs_router/$f.json"
done
: >"$root/conf/second.json"
: >"$root/conf/broken.json"
: >"$root/conf/stubborn.json"
: >"$root/usr/local/etc/cbsdmq.json"
: >"$root/conf/legacy.json"

rc_conf()
{
	printf '%s\n' "$@" >"$BS_TEST_RC_CONF"
}

# Runs the script as service(8) would; output in $out, status in $status.
rc()
{
	: >"$log"
	out=$("$script" "$@" 2>&1)
	status=$?
	printf '%s\n' "--- service bs_router $* (status $status)" "$out" >>"$root/transcript"
}

has() { grep -qxF -- "$1" "$log"; }
has_like() { grep -q -- "$1" "$log"; }
expect() { has "$1" || fail "$2: expected line: $1"; }
expect_like() { has_like "$1" || fail "$2: expected a line matching: $1"; }
expect_none() { ! has_like "$1" || fail "$2: unexpected line matching: $1"; }
expect_status() { [ "$status" -eq "$1" ] || fail "$2: status $status, expected $1 (output: $out)"; }
expect_output() {
	case "$out" in
	*"$1"*) ;;
	*) fail "$2: output lacks '$1' (output: $out)" ;;
	esac
}
no_kill() { expect_none '^kill -\(9\|KILL\|s KILL\)' "$1"; }

run="$root/var/run/bs_router"
logs="$root/var/log/bs_router"
exe="$root/usr/local/sbin/bs_router"
etc="$root/usr/local/etc/bs_router"

pid_of() { cat "$run/$1" 2>/dev/null; }

rc_conf 'bs_router_enable="YES"' \
    'bs_router_profiles="pool1 pool2 pool3"' \
    "bs_router_pool2_config=\"$root/conf/second.json\"" \
    'bs_router_pool2_flags="-broker beanstalkd"' \
    'bs_router_pool3_enable="NO"'

rc enabled
expect_status 0 "enabled"
rc enabled pool3
expect_status 1 "enabled pool3"

# start with no profile starts every enabled profile, each with its own files.
rc start
expect_status 0 "start all"
expect "check --check -config $etc/pool1.json" "start all"
expect "daemon -f -c -r -R 5 -P $run/pool1.pid -p $run/pool1.child.pid -H -o $logs/pool1.log -t bs_router_pool1 $exe -config $etc/pool1.json" "start all"
expect "check --check -config $root/conf/second.json -broker beanstalkd" "start all"
expect "daemon -f -c -r -R 5 -P $run/pool2.pid -p $run/pool2.child.pid -H -o $logs/pool2.log -t bs_router_pool2 $exe -config $root/conf/second.json -broker beanstalkd" "start all"
expect_none "pool3" "start all: pool3 is disabled"
expect_output "Cannot 'start' bs_router_pool3. Set bs_router_pool3_enable to YES" "start all"
for f in pool1.pid pool1.child.pid; do
	[ -s "$run/$f" ] || fail "start all: $f is missing"
done
for f in pool2.pid pool2.child.pid; do
	[ -s "$run/$f" ] || fail "start all: $f is missing"
done
[ -d "$logs" ] || fail "start did not create $logs"

rc status pool1
expect_status 0 "status pool1"
expect_output "bs_router_pool1 is running as pid $(pid_of pool1.child.pid) (daemon pid $(pid_of pool1.pid))" "status pool1"

rc status
expect_status 1 "status all (pool3 is not running)"
expect_output "bs_router_pool3 is not running" "status all"

# Starting a running profile is refused; so is a profile nobody declared.
rc start pool2
expect_status 1 "start pool2 again"
expect_none "^daemon" "start pool2 again"
rc start pool9
expect_status 1 "start pool9"
expect_output "no profile 'pool9'" "start pool9"
rc start 'pool1;date'
expect_status 1 "start with a bad profile name"

# stop one profile: SIGTERM to its supervisor only, passed on to its router.
pool1_sup=$(pid_of pool1.pid)
pool2_sup=$(pid_of pool2.pid)
rc stop pool1
expect_status 0 "stop pool1"
expect "kill -TERM $pool1_sup" "stop pool1"
expect "supervisor bs_router_pool1 got TERM" "stop pool1"
expect "router pool1 got TERM" "stop pool1"
expect_none "pool2" "stop pool1"
no_kill "stop pool1"
[ ! -e "$run/pool1.pid" ] || fail "stop pool1 returned before the supervisor exited"
kill -0 "$pool2_sup" 2>/dev/null || fail "stop pool1 stopped pool2"
rc status pool1
expect_status 1 "status pool1 after stop"

# reload: SIGHUP to the supervisor (reopens its -o file) and to the router
# (reopens its logfile); a profile that is not running is an error.
rc reload
expect_status 1 "reload all with pool1 stopped"
expect "supervisor bs_router_pool2 got HUP" "reload all"
expect "router second got HUP" "reload all"
expect_output "bs_router_pool1 is not running" "reload all"
expect_none "TERM" "reload all"
rc reload pool2
expect_status 0 "reload pool2"
expect "kill -HUP $pool2_sup" "reload pool2"
expect "router second got HUP" "reload pool2"

# newsyslog's R flag runs "<script> 1": every running router reopens its
# logs, and the others are passed over in silence.
rc 1
expect_status 0 "newsyslog"
expect "supervisor bs_router_pool2 got HUP" "newsyslog"
expect "router second got HUP" "newsyslog"
[ -z "$out" ] || fail "newsyslog: expected no output, got: $out"

# restart one profile: stop, then start with the same settings.
rc restart pool2
expect_status 0 "restart pool2"
expect "supervisor bs_router_pool2 got TERM" "restart pool2"
expect_like "^daemon .* -P $run/pool2.pid .*-config $root/conf/second.json" "restart pool2"
expect_none "pool1" "restart pool2"
no_kill "restart pool2"

# A disabled profile starts with "one", and only then.
rc start pool3
expect_none "^daemon" "start pool3"
rc onestart pool3
expect_status 0 "onestart pool3"
expect_like "^daemon .* -t bs_router_pool3 .*-config $etc/pool3.json" "onestart pool3"

# stop with no profile stops all that run; a stopped one is reported.
pool2_sup=$(pid_of pool2.pid)
pool3_sup=$(pid_of pool3.pid)
rc stop
expect "kill -TERM $pool2_sup" "stop all"
expect "kill -TERM $pool3_sup" "stop all"
expect "router pool3 got TERM" "stop all"
no_kill "stop all"
for p in pool1 pool2 pool3; do
	[ ! -e "$run/$p.pid" ] || fail "stop all left $p running"
done
# At shutdown (faststop) a stopped profile is no error.
rc faststop pool1
expect_status 0 "faststop of a stopped profile"

# A config the router refuses is reported at once, and nothing is started.
rc_conf 'bs_router_enable="YES"' 'bs_router_profiles="bad"' \
    "bs_router_bad_config=\"$root/conf/broken.json\""
rc start
expect_status 1 "start with a broken config"
expect_none "^daemon" "start with a broken config"
expect_output "broker: expected a string" "start with a broken config"

# A missing config file is caught by required_files.
rc_conf 'bs_router_enable="YES"' 'bs_router_profiles="ghost"'
rc start
expect_status 1 "start with a missing config"
expect_none "^daemon" "start with a missing config"
expect_output "$etc/ghost.json is not readable" "start with a missing config"

# A router that does not finish draining in time is left running and
# reported: stop never escalates to SIGKILL.
rc_conf 'bs_router_enable="YES"' 'bs_router_profiles="slow"' \
    "bs_router_slow_config=\"$root/conf/stubborn.json\"" \
    'bs_router_stop_timeout="2"'
rc start
expect_status 0 "start slow"
slow_sup=$(pid_of slow.pid)
rc stop slow
expect_status 1 "stop slow"
expect "kill -TERM $slow_sup" "stop slow"
expect "router stubborn got TERM, still draining" "stop slow"
expect_output "still running after 2s" "stop slow"
no_kill "stop slow"
kill -0 "$slow_sup" 2>/dev/null || fail "stop slow: the supervisor should still be running"
kill -KILL "$(pid_of slow.child.pid)" "$slow_sup" 2>/dev/null
rm -f "$run/slow.pid" "$run/slow.child.pid"

# Stopping every profile signals them all before waiting for any: drain
# times must not add up (rc.shutdown gives all scripts 90 s together).
: >"$root/conf/stubborn1.json"
: >"$root/conf/stubborn2.json"
rc_conf 'bs_router_enable="YES"' 'bs_router_profiles="slow1 slow2"' \
    "bs_router_slow1_config=\"$root/conf/stubborn1.json\"" \
    "bs_router_slow2_config=\"$root/conf/stubborn2.json\"" \
    'bs_router_stop_timeout="3"'
rc start
expect_status 0 "start slow1 slow2"
slow1_sup=$(pid_of slow1.pid)
slow2_sup=$(pid_of slow2.pid)
started=$(date +%s)
rc stop
elapsed=$(($(date +%s) - started))
expect_status 1 "stop slow1 slow2"
expect "router stubborn1 got TERM, still draining" "stop slow1 slow2"
expect "router stubborn2 got TERM, still draining" "stop slow1 slow2"
no_kill "stop slow1 slow2"
[ "$elapsed" -lt 6 ] || fail "stop slow1 slow2 took ${elapsed}s: the profiles were stopped one after the other"
kill -KILL "$(pid_of slow1.child.pid)" "$(pid_of slow2.child.pid)" "$slow1_sup" "$slow2_sup" 2>/dev/null
rm -f "$run"/slow1.* "$run"/slow2.*

# The service switch is over every profile.
rc_conf 'bs_router_enable="NO"' 'bs_router_profiles="pool1 pool2"' \
    'bs_router_pool2_enable="YES"'
rc start
expect_status 0 "start with the service disabled"
expect_none "^daemon" "start with the service disabled"

# Without profiles: one router, as the Go router's script ran it.
rc_conf 'bs_router_enable="YES"'
rc start
expect_status 0 "start without profiles"
expect "daemon -f -c -r -R 5 -P $run/bs_router.pid -p $run/bs_router.child.pid -H -o $logs/bs_router.log -t bs_router $exe -config $root/usr/local/etc/cbsdmq.json" "start without profiles"
rc status
expect_status 0 "status without profiles"
rc stop
expect_status 0 "stop without profiles"
expect "router cbsdmq got TERM" "stop without profiles"

rc_conf 'bs_router_enable="YES"' "bs_router_args=\"-config $root/conf/legacy.json\""
rc start
expect_status 0 "start with bs_router_args"
expect_like "^daemon .* -t bs_router $exe -config $root/conf/legacy.json\$" "start with bs_router_args"
rc stop
expect_status 0 "stop with bs_router_args"

if [ "$failures" -ne 0 ] || [ -n "${BS_TEST_VERBOSE:-}" ]; then
	echo "--- transcript"
	cat "$root/transcript"
fi
if [ "$failures" -ne 0 ]; then
	echo "$failures check(s) failed"
	exit 1
fi
echo "rc.d/bs_router: all profile checks passed"
