#!/bin/sh
# bhyve/create.sh JNAME [KEY=VALUE ...]
#
# Creates bhyve VM JNAME in the pool:
#   cbsd bcreate jname=JNAME vm_os_type=freebsd
#       vm_os_profile=cloud-FreeBSD-ufs-x64-14.1 imgsize=10g vm_ram=1g
#       vm_cpus=1 [KEY=VALUE ...]
# Each KEY=VALUE (vm_ram=4g, ci_ip4_addr=10.0.0.20/24, ci_gw4=10.0.0.1,
# astart=1, ...) is added to the job; one that names a key above replaces
# its default.  The profile must be one your CBSD has: files
# vm-<vm_os_type>-<vm_os_profile>.conf under /usr/local/cbsd/etc/defaults.

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

for default in vm_os_type=freebsd vm_os_profile=cloud-FreeBSD-ufs-x64-14.1 \
    imgsize=10g vm_ram=1g vm_cpus=1; do
	has_key "${default%%=*}" "$@" || set -- "$@" "$default"
done

exec "$client" -config "$config" ${BS_ROUTER_TIMEOUT:+--timeout "$BS_ROUTER_TIMEOUT"} \
    bcreate jname="$jname" "$@"
