#!/bin/sh
# bhyve/start.sh JNAME
#
# Starts VM JNAME (cbsd bstart jname=JNAME) and prints the address of its
# VNC console, the reply's Vnc field ("<bind>:<port>").  On failure the
# reply is shown on standard error.

set -eu

config=${BS_ROUTER_CONFIG:-/usr/local/etc/bs_router/pool1.json}
client=${BS_ROUTER_CLIENT:-bs_router-client}

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: ${0##*/} jname" >&2
	exit 2
fi
jname=$1

# field NAME: the string or number field NAME of the one-line JSON $reply.
# jq reads JSON properly when it is installed (pkg install jq); the fields
# asked for here hold no quotes or backslashes, so sed will do otherwise.
field() {
	if command -v jq >/dev/null 2>&1; then
		printf '%s\n' "$reply" | jq -r ".$1 // empty"
	else
		printf '%s\n' "$reply" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"
	fi
}

status=0
reply=$("$client" -config "$config" --json ${BS_ROUTER_TIMEOUT:+--timeout "$BS_ROUTER_TIMEOUT"} \
    bstart jname="$jname") || status=$?
# No reply at all: the client has said why on standard error.
[ -n "$reply" ] || exit "$status"

if [ "$status" -ne 0 ]; then
	echo "${0##*/}: bstart ${jname} failed, ErrCode $(field ErrCode):" >&2
	printf '%s\n' "$reply" >&2
	exit "$status"
fi
vnc=$(field Vnc)
echo "${jname}: started; VNC console at ${vnc:-(unknown)}"
