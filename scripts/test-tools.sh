#!/bin/sh
# The Debian tools the test suite and the benchmark drive as real peers: NBD clients (qemu-io,
# qemu-img, nbdinfo, nbdcopy, nbdsh with its Python binding), e2fsprogs for a file system on an
# export, openssl for the TLS tests' certificates, chromium for the dashboard's browser test, fio and
# nbdkit for the benchmark's baselines.
# Present: nothing happens. Missing: installed with apt-get when this user may (root, or sudo without
# a password); otherwise the exact command is printed and the script fails, so `npm test` never runs
# half a suite on a machine that lacks them.
set -eu

packages="qemu-utils libnbd-bin python3-libnbd e2fsprogs fio nbdkit openssl chromium"
PATH="$PATH:/usr/sbin:/sbin"

missing() {
  for tool in qemu-io qemu-img nbdinfo nbdcopy nbdsh mkfs.ext4 e2fsck fio nbdkit openssl chromium; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool"; return 0; }
  done
  /usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || { echo "python3-libnbd"; return 0; }
  return 0
}

first=$(missing)
[ -z "$first" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
  as_root="sudo -n"
else
  echo "test-tools: $first is missing; the tests need Debian's $packages." >&2
  echo "Install them, then run npm test again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $packages" >&2
  exit 1
fi

echo "test-tools: $first is missing; installing $packages with apt-get"
export DEBIAN_FRONTEND=noninteractive
attempt=1
until $as_root apt-get update -qq && $as_root apt-get install -y -qq --no-install-recommends $packages; do
  if [ "$attempt" -ge 3 ]; then
    echo "test-tools: apt-get failed three times; install by hand: apt-get install $packages" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep 10
done

first=$(missing)
if [ -n "$first" ]; then
  echo "test-tools: $first is still missing after apt-get install $packages" >&2
  exit 1
fi
