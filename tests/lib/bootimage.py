#!/usr/bin/env python3
"""Build a BIOS-bootable disk image from Debian packages (Python 3 stdlib + host tools).

    python3 tests/lib/bootimage.py OUT.raw [--format raw|qcow2] [--marker TEXT] [--append ARGS]

Layout, as grub-install would make it on a real disk:
  sector 0          GRUB's boot.img (MBR code) + an MBR partition table, one bootable Linux partition
  sectors 1..       GRUB's core.img (grub-mkimage: biosdisk, part_msdos, ext2; prefix (hd0,msdos1)/boot/grub)
  MARKER_LBA        one sector of text: the marker (read back by the booted guest through the SCSI disk)
  1 MiB ..          ext2 partition (mke2fs -d): /boot/vmlinuz and /boot/initrd.img of the bundled guest
                    (scripts/guest/prepare.sh), /boot/grub/grub.cfg, /boot/grub/i386-pc/*.mod

GRUB comes from Debian's grub-pc-bin and grub-common packages, fetched with `apt-get download` into
the guest cache (nothing is installed) and unpacked with `dpkg-deb -x`. No loop device, no root:
grub-bios-setup's two patches are not needed because core.img sits at sector 1, where boot.img's and
diskboot.img's default block pointers already point (grub-mkimage fills in core.img's length).

grub.cfg boots the bundled kernel with its initramfs in `mpq.mode=run`: the guest's /init loads the
SCSI driver, waits for the disk and runs `dd` on /dev/sda to print the marker sector, then powers off.
The kernel arguments include `irqpoll ...` (needed under TCG: stock's proxy delivers interrupts only
through KVM) and `console=ttyS0`.
"""
import argparse
import base64
import fcntl
import glob
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("MPQ_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
MiB = 1 << 20
SECTOR = 512
PART_START = 2048            # 1 MiB, the usual alignment; leaves the MBR gap for core.img
MARKER_LBA = 1536            # inside the gap, well after core.img (~60 sectors)
GRUB_PACKAGES = ("grub-pc-bin", "grub-common")
TCG_KERNEL_ARGS = "irqpoll noapictimer nohz=off"


class Unavailable(Exception):
    """A prerequisite (Debian archive, host tool) is missing: the caller skips."""


def guest_cache():
    return os.environ.get("MPQ_GUEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mpqemu-guest")


def _newest_deb(pkgdir, name):
    debs = sorted(glob.glob(os.path.join(pkgdir, f"{name}_*.deb")))
    return debs[-1] if debs else None


def grub_tree():
    """Unpacked grub-pc-bin + grub-common (cached); returns the tree's root."""
    os.makedirs(guest_cache(), exist_ok=True)
    # Tests in several checkouts share the cache: one download/unpack at a time.
    with open(os.path.join(guest_cache(), ".grub.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _grub_tree_locked()


def _grub_tree_locked():
    cache = guest_cache()
    pkgdir = os.path.join(cache, "pkgs")
    tree = os.path.join(cache, "trees", "grub-pc")
    stamp = os.path.join(tree, ".debs")
    os.makedirs(pkgdir, exist_ok=True)
    debs = []
    for name in GRUB_PACKAGES:
        deb = _newest_deb(pkgdir, name)
        if deb is None:
            if not shutil.which("apt-get"):
                raise Unavailable("apt-get is missing (a Debian host is required)")
            r = subprocess.run(["apt-get", "download", "-q", name], cwd=pkgdir, capture_output=True, text=True)
            deb = _newest_deb(pkgdir, name)
            if r.returncode != 0 or deb is None:
                raise Unavailable(f"apt-get download {name} failed: {r.stderr.strip()[-300:]}")
        debs.append(os.path.basename(deb))
    want = "\n".join(debs)
    if os.path.isfile(stamp) and open(stamp).read() == want:
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", os.path.join(pkgdir, deb), tree], check=True)
    with open(stamp, "w") as f:
        f.write(want)
    return tree


def bundled_guest():
    r = subprocess.run(["sh", os.path.join(SOURCE, "scripts", "guest", "prepare.sh"), "-q"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Unavailable("the bundled guest cannot be prepared: " + r.stderr.strip()[-300:])
    out = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else os.path.join(guest_cache(), "guest")
    files = {n: os.path.join(out, n) for n in ("vmlinuz", "initrd.img")}
    for p in files.values():
        if not os.path.isfile(p):
            raise Unavailable(f"{p} is missing after scripts/guest/prepare.sh")
    return files


def marker_command():
    """The guest command (busybox sh) that prints the marker sector's first line."""
    return f"dd if=/dev/sda bs={SECTOR} skip={MARKER_LBA} count=1 2>/dev/null | head -n 1"


def grub_cfg(marker, append):
    cmd = base64.b64encode(marker_command().encode()).decode()
    args = (f"console=ttyS0 loglevel=4 panic=-1 {TCG_KERNEL_ARGS} mpq.mode=run mpq.nonce={marker} "
            f"mpq.disks=1 mpq.wait=120 mpq.limit=120 mpq.run={cmd} {append}").strip()
    return ("serial --unit=0 --speed=115200\n"
            "terminal_input serial console\n"
            "terminal_output serial console\n"
            "set timeout=0\n"
            "set default=0\n"
            "menuentry 'mpqemu bundled guest from disk' {\n"
            "    echo 'GRUB: loading /boot/vmlinuz'\n"
            f"    linux /boot/vmlinuz {args}\n"
            "    initrd /boot/initrd.img\n"
            "}\n")


def mbr(boot_img, part_sectors):
    """boot.img's code + one bootable partition (type 0x83, LBA PART_START..)."""
    m = bytearray(boot_img[:SECTOR])
    # CHS fields: the "beyond CHS" form (LBA addressing is what GRUB and Linux use)
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", PART_START, part_sectors)
    m[446:446 + 64] = entry + bytes(48)
    m[510:512] = b"\x55\xaa"
    return bytes(m)


def build(out, fmt="raw", marker="MPQ-BOOTDISK", size=64 * MiB, append=""):
    for tool in ("mke2fs", "qemu-img"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}") and not os.path.exists(f"/sbin/{tool}"):
            raise Unavailable(f"{tool} is not installed")
    mke2fs = shutil.which("mke2fs") or ("/usr/sbin/mke2fs" if os.path.exists("/usr/sbin/mke2fs") else "/sbin/mke2fs")
    tree = grub_tree()
    moddir = os.path.join(tree, "usr", "lib", "grub", "i386-pc")
    mkimage = os.path.join(tree, "usr", "bin", "grub-mkimage")
    guest = bundled_guest()
    work = tempfile.mkdtemp(prefix="bootimage-")
    try:
        core = os.path.join(work, "core.img")
        subprocess.run([mkimage, "-O", "i386-pc", "-d", moddir, "-o", core, "-p", "(hd0,msdos1)/boot/grub",
                        "biosdisk", "part_msdos", "ext2"], check=True, capture_output=True)
        core_bytes = open(core, "rb").read()
        if 1 + (len(core_bytes) + SECTOR - 1) // SECTOR > MARKER_LBA:
            raise RuntimeError(f"core.img is {len(core_bytes)} bytes: it would overlap the marker sector")
        root = os.path.join(work, "root")
        os.makedirs(os.path.join(root, "boot", "grub"))
        shutil.copy(guest["vmlinuz"], os.path.join(root, "boot", "vmlinuz"))
        shutil.copy(guest["initrd.img"], os.path.join(root, "boot", "initrd.img"))
        shutil.copytree(moddir, os.path.join(root, "boot", "grub", "i386-pc"),
                        ignore=shutil.ignore_patterns("grub-bios-setup", "*.image", "*.module", "*.exec"))
        with open(os.path.join(root, "boot", "grub", "grub.cfg"), "w") as f:
            f.write(grub_cfg(marker, append))
        part_sectors = size // SECTOR - PART_START
        part = os.path.join(work, "part.ext2")
        subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-L", "mpqboot", "-E", "root_owner=0:0", "-d", root,
                        part, f"{part_sectors * SECTOR // 1024}k"], check=True, capture_output=True)
        raw = out if fmt == "raw" else os.path.join(work, "disk.raw")
        with open(raw, "wb") as f:
            f.truncate(size)
            f.write(mbr(open(os.path.join(moddir, "boot.img"), "rb").read(), part_sectors))
            f.seek(SECTOR)
            f.write(core_bytes)
            f.seek(MARKER_LBA * SECTOR)
            f.write((marker + "\n").encode().ljust(SECTOR, b"\0"))
            f.seek(PART_START * SECTOR)
            with open(part, "rb") as p:
                shutil.copyfileobj(p, f, 1 << 20)
        if fmt == "qcow2":
            subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out], check=True)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--format", choices=("raw", "qcow2"), default="raw")
    ap.add_argument("--marker", default="MPQ-BOOTDISK")
    ap.add_argument("--append", default="", help="more kernel arguments for grub.cfg")
    a = ap.parse_args()
    try:
        build(a.out, a.format, a.marker, append=a.append)
    except Unavailable as e:
        print(f"bootimage: {e}", file=sys.stderr)
        return 77
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
