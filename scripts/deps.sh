#!/bin/sh
# Installs the Debian packages the build, the tests and the demo need, when
# any is missing. On FreeBSD the same come from pkg (see README.md).
set -eu

packages="cmake make g++ libboost-dev nlohmann-json3-dev libspdlog-dev libcli11-dev libsqlite3-dev librabbitmq-dev \
libssl-dev libgtest-dev beanstalkd rabbitmq-server clang libclang-rt-14-dev shellcheck mandoc"

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "deps.sh: missing packages:$missing (run as root to install them)" >&2
  exit 1
fi
echo "deps.sh: installing$missing"
$as_root apt-get update
# shellcheck disable=SC2086 # the list is meant to split into words
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y --no-install-recommends $missing
