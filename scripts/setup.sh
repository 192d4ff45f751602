#!/bin/sh
# Idempotent set-up of a Debian 12 machine for building, testing and running
# mpqemu: installs only the Debian packages that are missing, then prepares the
# bundled guest (kernel + initramfs, scripts/guest/prepare.sh). With nothing to
# do it takes well under a second and never touches the network.
set -e
cd "$(dirname "$0")/.."

PKGS="build-essential cmake pkg-config python3 git
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libfmt-dev
  liburing-dev zlib1g-dev libzstd-dev libseccomp-dev
  clang libclang-rt-14-dev
  qemu-system-x86 qemu-utils socat e2fsprogs dosfstools cpio busybox-static
  util-linux procps"

# one dpkg-query for all: packages not installed (or unknown) are listed
missing=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' $PKGS 2>/dev/null | awk '$2 != "ii" { print $1 }')
for p in $PKGS; do
    dpkg-query -W -f='${Package}\n' "$p" >/dev/null 2>&1 || missing="$missing $p"
done
missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ -n "${missing% }" ]; then
    echo "setup: installing: $missing"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# The guest kernel and initramfs for the main job and the real-guest tests
# (apt-get download + dpkg -x into ~/.cache/mpqemu-guest; nothing installed).
scripts/guest/prepare.sh -q >/dev/null
echo "setup: done"
