#!/bin/sh
# bhyve/list.sh [JNAME]
#
# Lists the pool's VMs, one per line: name, jid, IPv4 address, status,
# VNC port (cbsd bls header=0 display=jname,jid,ip4_addr,status,vnc).
# With JNAME, only that VM's line; the status is 1 when there is no such VM.

set -eu

config=${BS_ROUTER_CONFIG:-/usr/local/etc/bs_router/pool1.json}
client=${BS_ROUTER_CLIENT:-bs_router-client}

if [ $# -gt 1 ]; then
	echo "usage: ${0##*/} [jname]" >&2
	exit 2
fi
jname=${1:-}

status=0
listing=$("$client" -config "$config" --no-progress ${BS_ROUTER_TIMEOUT:+--timeout "$BS_ROUTER_TIMEOUT"} \
    bls header=0 display=jname,jid,ip4_addr,status,vnc) || status=$?

if [ -z "$jname" ] || [ "$status" -ne 0 ]; then
	[ -n "$listing" ] && printf '%s\n' "$listing"
	exit "$status"
fi
if ! printf '%s\n' "$listing" | awk -v jname="$jname" '
	$1 == jname { print; found = 1 }
	END { exit !found }'; then
	echo "${0##*/}: no VM ${jname} in this pool" >&2
	exit 1
fi
