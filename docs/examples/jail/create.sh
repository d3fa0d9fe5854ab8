#!/bin/sh
# jail/create.sh JNAME [KEY=VALUE ...]
#
# Creates jail JNAME in the pool and starts it:
#   cbsd jcreate jname=JNAME jail_profile=default
#       host_hostname=JNAME.my.domain astart=1 runasap=1 [KEY=VALUE ...]
# Each KEY=VALUE (ip4_addr=10.0.0.5/24, pkg_bootstrap=0, ...) is added to
# the job; one that names a key above replaces its default.

set -eu

config=${BS_ROUTER_CONFIG:-/usr/local/etc/bs_router/pool1.json}
client=${BS_ROUTER_CLIENT:-bs_router-client}

if [ $# -lt 1 ] || [ -z "$1" ]; then
	echo "usage: ${0##*/} jname [key=value ...]" >&2
	exit 2
fi
jname=$1
shift

# has_key KEY ARG...: whether one of the ARGs is KEY=something.
has_key() {
	_key=$1
	shift
	for _arg; do
		case $_arg in
		"$_key"=*) return 0 ;;
		esac
	done
	return 1
}

for default in jail_profile=default "host_hostname=${jname}.my.domain" \
    astart=1 runasap=1; do
	has_key "${default%%=*}" "$@" || set -- "$@" "$default"
done

exec "$client" -config "$config" ${BS_ROUTER_TIMEOUT:+--timeout "$BS_ROUTER_TIMEOUT"} \
    jcreate jname="$jname" "$@"
