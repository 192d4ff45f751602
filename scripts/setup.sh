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

# one dpkg-query for all of them; whatever is not fully installed is missing
installed=" $(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' $PKGS 2>/dev/null | awk '$2 == "ii" { printf "%s ", $1 }')"
missing=""
for p in $PKGS; do
    case $installed in *" $p "*) ;; *) missing="$missing $p" ;; esac
done
missing=${missing# }
if [ -n "$missing" ]; then
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
