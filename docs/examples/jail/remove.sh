#!/bin/sh
# jail/remove.sh JNAME
#
# Removes jail JNAME and its data: cbsd jremove jname=JNAME.

set -eu

config=${BS_ROUTER_CONFIG:-/usr/local/etc/bs_router/pool1.json}
client=${BS_ROUTER_CLIENT:-bs_router-client}

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: ${0##*/} jname" >&2
	exit 2
fi

exec "$client" -config "$config" ${BS_ROUTER_TIMEOUT:+--timeout "$BS_ROUTER_TIMEOUT"} \
    jremove jname="$1"
