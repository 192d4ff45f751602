#!/bin/sh
# Idempotent set-up of a Debian 12 machine for building, testing and running
# mpqemu: installs only what is missing, then prepares the bundled guest.
set -e
cd "$(dirname "$0")/.."

PKGS="build-essential cmake pkg-config python3 git
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libfmt-dev
  liburing-dev zlib1g-dev libzstd-dev libseccomp-dev
  clang libclang-rt-14-dev ccache
  qemu-system-x86 qemu-utils socat e2fsprogs dosfstools cpio busybox-static"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing:$missing"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# The guest kernel and initramfs for the main job and the real-guest tests.
if [ -x scripts/guest/prepare.sh ]; then
    scripts/guest/prepare.sh
fi
echo "setup: done"
