#!/bin/sh
# Prepare mpqemu's bundled guest: Debian's kernel + busybox-static, fetched with
# `apt-get download` (nothing is installed), unpacked with `dpkg -x`, and our own
# initramfs built from them. Idempotent: with nothing changed it touches neither
# apt nor the network and finishes in a fraction of a second.
#
#   scripts/guest/prepare.sh [--update] [--rebuild] [-q]
#     --update    ask apt again which kernel linux-image-amd64 means now
#     --rebuild   rebuild the initramfs even if no input changed
#     -q          quiet
#   env: MPQ_GUEST_CACHE (default ~/.cache/mpqemu-guest)
#        MPQ_KERNEL_PKG  (pin the kernel package, e.g. linux-image-6.1.0-56-amd64-unsigned)
#
# Prints the output directory: vmlinuz, initrd.img, pattern.bin, guest.json.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${MPQ_GUEST_CACHE:-${HOME:-/root}/.cache/mpqemu-guest}
update=no rebuild=no quiet=no
while [ $# -gt 0 ]; do
    case $1 in
        --update) update=yes ;;
        --rebuild) rebuild=yes ;;
        -q|--quiet) quiet=yes ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "prepare.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { [ $quiet = yes ] || echo "guest-prepare: $*" >&2; }
die() { echo "guest-prepare: error: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg dpkg-deb python3 sha256sum; do
    command -v $tool >/dev/null 2>&1 || die "'$tool' is missing (a Debian host is required; run scripts/setup.sh)"
done
mkdir -p "$cache/pkgs" "$cache/trees" "$cache/guest"

# One preparation at a time per cache (tests may start in parallel).
if command -v flock >/dev/null 2>&1; then
    exec 8>"$cache/.prepare.lock"
    flock 8
fi

apt_refreshed=no
refresh_apt() {
    [ $apt_refreshed = no ] || return 0
    apt_refreshed=yes
    say "apt-get update"
    apt-get update -q >/dev/null 2>&1 || say "apt-get update failed (continuing with the lists we have)"
}

# linux-image-amd64 depends on linux-image-<abi>-amd64; we want the -unsigned
# build of that (same kernel without the EFI signature wrapper).
kernel_pkg_from_apt() {
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    if [ -z "$pkg" ]; then
        refresh_apt
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    fi
    [ -n "$pkg" ] || die "apt does not know linux-image-amd64"
    case $pkg in *-unsigned) ;; *) pkg=$pkg-unsigned ;; esac
    echo "$pkg"
}

if [ -n "${MPQ_KERNEL_PKG:-}" ]; then
    kpkg=$MPQ_KERNEL_PKG
elif [ $update = no ] && [ -s "$cache/kernel.pkg" ]; then
    kpkg=$(cat "$cache/kernel.pkg")
else
    kpkg=$(kernel_pkg_from_apt)
fi
echo "$kpkg" >"$cache/kernel.pkg"

# The .deb of a package already in the cache (highest version wins).
have_deb() {
    best=
    for deb in "$cache/pkgs/$1"_*.deb; do
        [ -f "$deb" ] || continue
        if [ -z "$best" ] || dpkg --compare-versions "$(dpkg-deb -f "$deb" Version)" gt "$(dpkg-deb -f "$best" Version)"; then
            best=$deb
        fi
    done
    echo "$best"
}

download() {
    # apt's download sandbox user cannot write to root's cache; stay root then.
    opt=
    [ "$(id -u)" != 0 ] || opt="-o APT::Sandbox::User=root"
    (cd "$cache/pkgs" && apt-get -q $opt download "$1") >&2
}

get_deb() {
    deb=$(have_deb "$1")
    if [ -z "$deb" ] || [ $update = yes ]; then
        say "apt-get download $1"
        if ! download "$1"; then
            refresh_apt
            download "$1" || die "cannot download $1"
        fi
        deb=$(have_deb "$1")
    fi
    [ -n "$deb" ] || die "no $1 package in $cache/pkgs"
    echo "$deb"
}

unpack() {
    tree="$cache/trees/$(basename "$1" .deb)"
    if [ ! -f "$tree/.unpacked" ]; then
        say "dpkg -x $(basename "$1")"
        rm -rf "$tree" "$tree.part"
        dpkg -x "$1" "$tree.part"
        : >"$tree.part/.unpacked"
        mv "$tree.part" "$tree"
    fi
    echo "$tree"
}

kdeb=$(get_deb "$kpkg")
bdeb=$(get_deb busybox-static)
ktree=$(unpack "$kdeb")
btree=$(unpack "$bdeb")
[ -x "$btree/bin/busybox" ] || die "$bdeb has no bin/busybox"

out="$cache/guest"
inputs=$( (basename "$kdeb"; basename "$bdeb"; cat "$here/init.sh" "$here/build-initramfs.py") | sha256sum | cut -c1-64)
if [ $rebuild = no ] && [ "$(cat "$out/.inputs" 2>/dev/null)" = "$inputs" ] \
    && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/pattern.bin" ] && [ -s "$out/guest.json" ]; then
    say "up to date: $out"
else
    say "building the initramfs"
    python3 "$here/build-initramfs.py" --kernel-tree "$ktree" --busybox "$btree/bin/busybox" \
        --init "$here/init.sh" --out "$out" --stamp "$inputs" >&2
    echo "$inputs" >"$out/.inputs"
fi
echo "$out"
