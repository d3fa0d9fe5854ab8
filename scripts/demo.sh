#!/usr/bin/env bash
# A local demonstration: a beanstalkd, one router for a demo pool, and jobs
# sent with bs_router-client. Uses the real cbsd when installed, else the fake
# one the tests use.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target bs_router bs_router-client fake_cbsd

pool=$(mktemp -d /tmp/bs_router-demo.XXXXXX)
cleanup() {
  # Statuses of processes we stop here are not the demo's own.
  if [ -n "${router_pid:-}" ]; then kill "$router_pid" 2>/dev/null || true; wait "$router_pid" 2>/dev/null || true; fi
  if [ -n "${broker_pid:-}" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$pool"
}
trap cleanup EXIT INT TERM

# A free loopback port for the demo's own beanstalkd.
port=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
  candidate=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000 ))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
done
[ -n "$port" ] || { echo "demo: no free port found" >&2; exit 1; }

cbsd=/usr/local/bin/cbsd
[ -x "$cbsd" ] || cbsd="$PWD/build/tests/fake_cbsd"
touch "$pool/nc.inventory"
cat > "$pool/demo.json" <<JSON
{
  "cbsdenv": "$pool",
  "cbsdcolor": false,
  "broker": "beanstalkd",
  "logfile": "$pool/router.log",
  "cbsd_path": "$cbsd",
  "beanstalkd": {
    "uri": "127.0.0.1:$port",
    "tube": "cbsd_demo",
    "reply_tube_prefix": "cbsd_demo_result_id",
    "reconnect_timeout": 1,
    "reserve_timeout": 5,
    "publish_timeout": 5,
    "logdir": "$pool/jobs"
  }
}
JSON

beanstalkd -l 127.0.0.1 -p "$port" & broker_pid=$!
build/bs_router -config "$pool/demo.json" & router_pid=$!

# Wait (bounded) until the router says it is serving.
i=0
until grep -q "watching tube" "$pool/router.log" 2>/dev/null; do
  i=$((i + 1)); [ "$i" -le 100 ] || { cat "$pool/router.log"; exit 1; }
  sleep 0.1
done

echo "== cbsd used: $cbsd"
echo "== bs_router-client -config demo.json jls header=0 display=jname,status"
build/bs_router-client -config "$pool/demo.json" --timeout 30 jls header=0 display=jname,status
echo "== bs_router-client -config demo.json --json jcreate jname=demo1 jail_profile=default astart=1"
build/bs_router-client -config "$pool/demo.json" --timeout 30 --json \
  jcreate jname=demo1 jail_profile=default astart=1
echo "== the router's log"
kill "$router_pid"; wait "$router_pid" || true; router_pid=""
cat "$pool/router.log"
