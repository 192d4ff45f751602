#!/usr/bin/env python3
"""Build mpqemu's guest initramfs from an unpacked Debian kernel package.

    build-initramfs.py --kernel-tree DIR --busybox FILE --init FILE --out DIR

DIR is a `dpkg -x` of linux-image-<ver>-amd64-unsigned; FILE a static busybox.
Module dependencies are read from each module's ELF `.modinfo` section
(`depends=` and `softdep=pre:`), so the host needs no kmod/depmod.

Writes to --out (each file replaced atomically):
  vmlinuz      the kernel
  initrd.img   gzip'd cpio (newc): busybox, /init, /lib/modules/*.ko,
               /etc/mpq/{storage,fs}.mods (load order), /etc/mpq/pattern.bin
  pattern.bin  the self-test data, identical to the copy in the initramfs
  guest.json   kernel version, module lists, pattern digest
"""
import argparse
import gzip
import hashlib
import json
import os
import struct
import sys

# Module sets, by root module; their dependencies are pulled in.  The
# *_generic crypto modules are listed because the crc users find them through
# the crypto API (request_module via the usermode helper, absent here), not
# through a `depends=` entry.
STORAGE_ROOTS = ("crct10dif_generic", "crc64_rocksoft_generic", "sym53c8xx", "sd_mod")
FS_ROOTS = ("crc32c_generic", "ext4", "vfat", "nls_cp437", "nls_utf8", "nls_iso8859_1", "nls_ascii")

PATTERN_BYTES = 2 << 20
PATTERN_KEY = b"mpqemu-selftest-1"


def pattern_bytes(n=PATTERN_BYTES):
    """Reproducible filler: BLAKE2b keyed with PATTERN_KEY over a block counter."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.blake2b(block.to_bytes(8, "big"), key=PATTERN_KEY, digest_size=64).digest()
        block += 1
    return bytes(out[:n])


def canonical(mod):
    return mod.replace("-", "_")


class ElfModinfo:
    """Reads key=value strings from the `.modinfo` section of an x86-64 .ko."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.blob = f.read()
        self.path = path

    def entries(self):
        b = self.blob
        if len(b) < 64 or b[:4] != b"\x7fELF" or b[4] != 2 or b[5] != 1:
            raise SystemExit(f"{self.path}: not an ELF64 little-endian module")
        e_shoff = struct.unpack_from("<Q", b, 40)[0]
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", b, 58)
        if e_shentsize < 64 or e_shoff + e_shnum * e_shentsize > len(b) or e_shstrndx >= e_shnum:
            raise SystemExit(f"{self.path}: bad section table")

        def section(i):
            # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
            name, _t, _f, _a, off, size = struct.unpack_from("<IIQQQQ", b, e_shoff + i * e_shentsize)
            return name, off, size

        _n, names_off, _s = section(e_shstrndx)
        for i in range(e_shnum):
            name, off, size = section(i)
            start = names_off + name
            if b[start:b.index(b"\0", start)] != b".modinfo":
                continue
            for item in b[off:off + size].split(b"\0"):
                key, sep, val = item.partition(b"=")
                if sep:
                    yield key.decode(), val.decode(errors="replace")
        return


class ModuleTree:
    def __init__(self, moddir):
        self.files = {}
        for root, _dirs, names in os.walk(os.path.join(moddir, "kernel")):
            for n in names:
                if n.endswith(".ko"):
                    self.files[canonical(n[:-3])] = os.path.join(root, n)
        self.builtin = set()
        try:
            with open(os.path.join(moddir, "modules.builtin")) as f:
                for line in f:
                    n = os.path.basename(line.strip())
                    if n.endswith(".ko"):
                        self.builtin.add(canonical(n[:-3]))
        except FileNotFoundError:
            pass

    def deps(self, mod):
        wanted = []
        for key, val in ElfModinfo(self.files[mod]).entries():
            if key == "depends":
                wanted += [d for d in val.split(",") if d]
            elif key == "softdep":
                words = val.split()
                # "pre: a b post: c": only the pre: list must be loaded first
                take = False
                for w in words:
                    if w.endswith(":"):
                        take = w == "pre:"
                    elif take and (canonical(w) in self.files or canonical(w) in self.builtin):
                        wanted.append(w)
        return [canonical(d) for d in wanted]

    def load_order(self, roots, skip=()):
        """Dependencies first; modules in `skip` (already loaded) are left out."""
        done = set(skip)
        order = []
        active = []

        def add(mod, why):
            mod = canonical(mod)
            if mod in done or mod in self.builtin:
                return
            if mod in active:
                raise SystemExit(f"module dependency cycle: {' -> '.join(active + [mod])}")
            if mod not in self.files:
                raise SystemExit(f"kernel module {mod} not found (wanted by {why})")
            active.append(mod)
            for d in self.deps(mod):
                add(d, mod)
            active.pop()
            done.add(mod)
            order.append(mod)

        for r in roots:
            add(r, "the module list")
        return order


class NewcArchive:
    """cpio "newc" writer (the format the kernel unpacks into its rootfs)."""

    def __init__(self):
        self.out = bytearray()
        self.next_ino = 1

    def _entry(self, path, mode, body=b"", major=0, minor=0):
        name = path.encode() + b"\0"
        fields = [self.next_ino, mode, 0, 0, 1, 0, len(body), 0, 0, major, minor, len(name), 0]
        self.next_ino += 1
        self.out += b"070701" + b"".join(b"%08x" % v for v in fields) + name
        self._pad()
        self.out += body
        self._pad()

    def _pad(self):
        while len(self.out) % 4:
            self.out.append(0)

    def directory(self, path):
        self._entry(path, 0o040755)

    def regular(self, path, body, mode=0o644):
        self._entry(path, 0o100000 | mode, body)

    def link(self, path, target):
        self._entry(path, 0o120777, target.encode())

    def chr_node(self, path, major, minor, mode=0o600):
        self._entry(path, 0o020000 | mode, b"", major, minor)

    def close(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-tree", required=True)
    ap.add_argument("--busybox", required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stamp", default="")
    args = ap.parse_args()

    libmod = os.path.join(args.kernel_tree, "lib", "modules")
    versions = os.listdir(libmod) if os.path.isdir(libmod) else []
    if len(versions) != 1:
        raise SystemExit(f"want exactly one kernel under {libmod}, found {versions}")
    kver = versions[0]
    kernel = os.path.join(args.kernel_tree, "boot", "vmlinuz-" + kver)
    if not os.path.isfile(kernel):
        raise SystemExit(f"{kernel} is missing")

    tree = ModuleTree(os.path.join(libmod, kver))
    storage = tree.load_order(STORAGE_ROOTS)
    fs = tree.load_order(FS_ROOTS, skip=storage)
    pattern = pattern_bytes()
    with open(args.init, "rb") as f:
        init = f.read()
    with open(args.busybox, "rb") as f:
        busybox = f.read()

    arc = NewcArchive()
    for d in ("bin", "dev", "etc", "etc/mpq", "lib", "lib/modules", "mnt", "proc", "root", "sbin",
              "sys", "tmp", "usr", "usr/bin", "usr/sbin"):
        arc.directory(d)
    arc.chr_node("dev/console", 5, 1)
    arc.chr_node("dev/null", 1, 3, 0o666)
    arc.regular("bin/busybox", busybox, 0o755)
    arc.link("bin/sh", "busybox")
    arc.regular("init", init, 0o755)
    for mod in storage + fs:
        with open(tree.files[mod], "rb") as f:
            arc.regular(f"lib/modules/{mod}.ko", f.read())
    arc.regular("etc/mpq/storage.mods", "".join(m + "\n" for m in storage).encode())
    arc.regular("etc/mpq/fs.mods", "".join(m + "\n" for m in fs).encode())
    arc.regular("etc/mpq/pattern.bin", pattern)
    arc.regular("etc/mpq/kernel", (kver + "\n").encode())
    initrd = gzip.compress(arc.close(), 6, mtime=0)

    os.makedirs(args.out, exist_ok=True)

    def publish(name, data):
        tmp = os.path.join(args.out, f".{name}.new")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(args.out, name))

    with open(kernel, "rb") as f:
        publish("vmlinuz", f.read())
    publish("initrd.img", initrd)
    publish("pattern.bin", pattern)
    info = {
        "kernel": kver,
        "storage_modules": storage,
        "fs_modules": fs,
        "pattern_bytes": len(pattern),
        "pattern_sha256": hashlib.sha256(pattern).hexdigest(),
        "init_sha256": hashlib.sha256(init).hexdigest(),
        "initrd_bytes": len(initrd),
        "stamp": args.stamp,
    }
    publish("guest.json", (json.dumps(info, indent=1) + "\n").encode())
    print(f"guest: kernel {kver}, {len(storage)} storage + {len(fs)} fs modules, "
          f"initrd {len(initrd) // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
