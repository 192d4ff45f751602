#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (valid inputs each target
starts from; libFuzzer mutates them). Re-run after changing a format."""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(cmd, payload=b""):
    return struct.pack("<iIQ", cmd, 0, len(payload)) + payload


def cfg(cmd, addr, val=0, ln=4):
    return frame(cmd, struct.pack("<IIi", addr, val, ln))


def bar(cmd, addr, val=0, size=4, memory=1):
    return frame(cmd, struct.pack("<QQIB3x", addr, val, size, memory))


def sysmem(n):
    gpa = [i * 0x100000 for i in range(8)]
    size = [0x100000 if i < n else 0 for i in range(8)]
    off = [0] * 8
    return frame(0, struct.pack("<8Q8Q8q", *gpa, *size, *off))


def chunks(data, nfds=0, memfd=False, split=255):
    """wire_channel_fuzz input: [len][flags][bytes] per chunk."""
    out = b""
    first = True
    for i in range(0, len(data), split):
        part = data[i:i + split]
        flags = (nfds | (16 if memfd else 0)) if first else 0
        out += bytes([len(part), flags]) + part
        first = False
    return out


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    t = "wire_channel_fuzz"
    write(t, "cfgread", chunks(cfg(3, 0x0, 0, 4)))
    write(t, "cfgwrite-split", chunks(cfg(2, 0x4, 0x7, 2), split=5))
    write(t, "barwrite-read", chunks(bar(4, 0xfebf0000, 0x12345678, 4) + bar(5, 0xc000, 0, 1, 0)))
    write(t, "sysmem-2fds", chunks(sysmem(2), nfds=2, memfd=True))
    write(t, "irqfd", chunks(frame(6), nfds=2))
    write(t, "reset", chunks(frame(7)))
    write(t, "probe", chunks(bar(5, 0x4d50514558540001, 1, 0, 0)))
    write(t, "select", chunks(frame(64, b"lsi0".ljust(64, b"\0"))))
    write(t, "oversize", chunks(struct.pack("<iIQ", 3, 0, 1 << 40)))
    t = "options_fuzz"
    argvs = [
        ["3", "-device", "lsi53c895a,id=lsi0", "-drive",
         "id=d0,file=disk.img,format=raw,if=none,cache=none,aio=io_uring",
         "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0"],
        ["-machine", "x-remote", "-nodefaults", "-display", "none",
         "-object", "x-remote-object,id=r0,devid=lsi0,fd=4"],
        ["-sandbox", "on,spawn=deny,action=log", "-run-with", "user=nobody", "-D", "log.txt"],
        ["-qmp", "unix:/tmp/q.sock,server=on,wait=off", "-chardev",
         "socket,id=c0,path=/tmp/m.sock,server=on,wait=off", "-mon", "chardev=c0,mode=readline"],
        ["-drive", "file=a,,b.img,format=qcow2,l2-cache-size=1M,readonly=on,cache.direct=on"],
        ["-m", "256M", "-smp", "1", "--nodefaults"],
    ]
    for i, argv in enumerate(argvs):
        for sel in (0, 1):
            write(t, "argv%d-%d" % (i, sel), bytes([sel]) + b"\0".join(a.encode() for a in argv))
    lsi_seeds()
    dispatch_seeds()
    qmp_seeds()
    qcow2_seeds()
    sandbox_seeds()
    return 0


def sandbox_seeds():
    t = "sandbox_option_fuzz"
    for i, text in enumerate([
            b"on", b"off", b"on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            b"on,spawn=allow", b"on,elevateprivileges=children", b"on,action=log",
            b"user=nobody", b"chroot=/var/empty,user=65534:65534", b"async-teardown=on"]):
        write(t, "opt%02d" % i, text)


def qcow2_seeds():
    """qcow2_fuzz inputs: small images made by qemu-img / qemu-io with each
    feature the driver reads (dev-time only). Clusters are small so the
    images are a few KiB; backing files are raw (the fuzzer serves every
    backing name from memory as a raw pattern)."""
    import shutil
    import subprocess
    import tempfile
    if not shutil.which("qemu-img") or not shutil.which("qemu-io"):
        print("qcow2 seeds skipped: no qemu-img / qemu-io")
        return
    t = "qcow2_fuzz"
    tmp = tempfile.mkdtemp(prefix="mpq-qcow2-seeds.")

    def run(*argv):
        subprocess.run(argv, cwd=tmp, check=True, stdout=subprocess.DEVNULL)

    def io(img, *cmds, fmt="qcow2"):
        argv = ["qemu-io", "-f", fmt]
        for c in cmds:
            argv += ["-c", c]
        run(*argv, img)

    def make(name, opts, size="256K", data=True, extra=None):
        img = os.path.join(tmp, name + ".qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, size)
        if data:
            io(img, "write -P 0xa5 0 3k", "write -P 0x5a 8k 1k", "write -z 4k 2k")
        if extra:
            extra(img)
        with open(img, "rb") as f:
            write(t, name, f.read())

    make("v2-c512", "compat=0.10,cluster_size=512")
    make("v3-c512", "compat=1.1,cluster_size=512")
    make("v3-empty", "cluster_size=512", data=False)
    for bits in (1, 2, 4, 8, 16, 32, 64):
        make("refcount%d" % bits, "cluster_size=512,refcount_bits=%d" % bits)
    make("c4k", "cluster_size=4096", size="1M")
    make("c64k", "cluster_size=65536", data=False)
    make("lazy-refcounts", "cluster_size=512,lazy_refcounts=on")
    make("prealloc-metadata", "cluster_size=512,preallocation=metadata", size="64K", data=False)
    make("zstd", "cluster_size=512,compression_type=zstd", data=False)
    make("extended-l2", "cluster_size=16384,extended_l2=on", data=False)

    def zeroes(img):
        io(img, "write -P 0x11 0 16k", "write -z 0 4k", "write -z -u 8k 4k", "discard 12k 2k")
    make("zero-clusters", "cluster_size=512", data=False, extra=zeroes)
    make("zero-clusters-v2", "compat=0.10,cluster_size=512", data=False, extra=zeroes)

    def snapshots(img):
        run("qemu-img", "snapshot", "-c", "s1", img)
        io(img, "write -P 0x77 1k 2k")
        run("qemu-img", "snapshot", "-c", "second-snapshot", img)
        io(img, "write -P 0x66 0 512")
    make("snapshots", "cluster_size=512", extra=snapshots)
    make("snapshots-v2", "compat=0.10,cluster_size=512", extra=snapshots)

    def bitmaps(img):
        run("qemu-img", "bitmap", "--add", img, "b0")
    make("bitmaps", "cluster_size=512", extra=bitmaps)

    def dirty(img):
        # lazy refcounts + an abort: the dirty bit stays set.
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 1k", "-c", "abort", img],
                       cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    make("dirty", "cluster_size=512,lazy_refcounts=on", data=False, extra=dirty)

    raw = os.path.join(tmp, "src.raw")
    with open(raw, "wb") as f:
        f.write(bytes((i * 7 + (i >> 9)) & 0xFF for i in range(64 * 1024)) + bytes(64 * 1024))
    for name, opts in (("compressed-zlib", "cluster_size=4096"),
                       ("compressed-zstd", "cluster_size=4096,compression_type=zstd"),
                       ("compressed-v2", "compat=0.10,cluster_size=4096")):
        img = os.path.join(tmp, name + ".qcow2")
        run("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", opts, raw, img)
        with open(img, "rb") as f:
            write(t, name, f.read())

    run("qemu-img", "create", "-q", "-f", "raw", os.path.join(tmp, "base.raw"), "128K")
    for name, opts in (("backing", "cluster_size=512,backing_file=base.raw,backing_fmt=raw"),
                       ("backing-v2", "compat=0.10,cluster_size=512,backing_file=base.raw,backing_fmt=raw")):
        make(name, opts, size="128K")
    shutil.rmtree(tmp)


def qmp_seeds():
    t = "qmp_fuzz"
    neg = b'{"execute":"qmp_capabilities"}\n'
    cmds = [b'{"execute":"query-pci"}', b'{"execute":"query-block","id":1}',
            b'{"execute":"query-blockstats"}', b'{"execute":"query-status"}',
            b'{"execute":"query-commands"}', b'{"execute":"query-version"}',
            b'{"execute":"system_reset"}', b'{"execute":"query-chardev"}',
            b'{"execute":"human-monitor-command","arguments":{"command-line":"info pci"}}',
            b'{"execute":"human-monitor-command","arguments":{"command-line":"info block"}}',
            b'{"execute":"human-monitor-command","arguments":{"command-line":"help"}}',
            b'{"execute":"quit"}', b'{"execute":"nope","arguments":{"x":[1,{"y":null}]}}',
            b'[1,2,{"a":"\\u0041"}] 12 "str" {"execute":', b'{"exec-oob":"query-status"}']
    for i, c in enumerate(cmds):
        write(t, "cmd%02d" % i, bytes([0x7f]) + neg + c + b"\n")
        write(t, "split%02d" % i, bytes([0x01]) + neg + c + b"\n")


def dispatch_seeds():
    """wire_dispatch_fuzz: what stock x-pci-proxy-dev sends, then a guest
    starting a tiny SCRIPTS program that raises an interrupt."""
    t = "wire_dispatch_fuzz"

    def ch(data, nfds=0, memfd=False, settle=False):
        return bytes([len(data), nfds | (8 if memfd else 0) | (16 if settle else 0)]) + data

    # SYNC_SYSMEM: one 64 KiB region at gpa 0; the memfd holds this chunk's
    # bytes, so a script placed after the frame lands at gpa 208.
    gpa = [0] * 8
    size = [0x10000] + [0] * 7
    off = [0] * 8
    sysmem = frame(0, struct.pack("<8Q8Q8q", *gpa, *size, *off))
    script = struct.pack("<II", 0x98080000, 0x600D)  # INT 0x600d
    setup = ch(sysmem + script, 1, memfd=True) + ch(frame(6), 2)
    setup += ch(cfg(3, 0x00)) + ch(cfg(2, 0x10, 0xC000, 4)) + ch(cfg(2, 0x14, 0xE0000000, 4))
    setup += ch(cfg(2, 0x04, 0x7, 2)) + ch(cfg(3, 0x04, 0, 2))
    write(t, "setup", setup)
    go = setup + ch(bar(4, 0xE000002C, 208, 4, 1), settle=True) + ch(bar(5, 0xE0000014, 0, 1, 1))
    go += ch(bar(5, 0xE000000C, 0, 1, 1)) + ch(bar(5, 0xC014, 0, 1, 0))
    write(t, "script-int", go)
    write(t, "reset", setup + ch(frame(7)) + ch(cfg(3, 0x10)))
    write(t, "probe-select", ch(bar(5, 0x4D50514558540001, 1, 0, 0)) +
          ch(frame(64, b"lsi0".ljust(64, b"\0"))) + ch(frame(64, b"nope".ljust(64, b"\0"))))
    write(t, "bad", ch(cfg(3, 0xFE, 0, 2)) + ch(bar(5, 0xDEAD0000, 0, 4, 1)) + ch(frame(6), 1))


def lsi_seeds():
    """lsi_fuzz inputs: SCSI command scripts assembled by the qtest-bench
    SCRIPTS assembler (dev-time only), started through DSP."""
    shared = os.environ.get("MPQ_SHARED_DIR", os.path.join(HERE, "..", "..", "shared"))
    bench = os.path.join(shared, "tools", "qtest-bench")
    if not os.path.exists(os.path.join(bench, "lsi_bench.py")):
        print("lsi seeds skipped: no qtest-bench")
        return
    sys.dont_write_bytecode = True
    sys.path.insert(0, bench)
    import lsi_bench as lb

    def op(kind, off=0, size=2, val=0):
        return struct.pack("<BHBI", kind, off, size, val)

    slot, buf = 0x1000, 0x8000
    cmds = {
        "tur": (bytes(6), 0),
        "inquiry": (bytes([0x12, 0, 0, 0, 36, 0]), 36),
        "read10": (lb.cdb_rw10(False, 3, 2), 1024),
        "write10": (lb.cdb_rw10(True, 5, 1), 512),
        "capacity": (bytes([0x25]) + bytes(9), 8),
        "sense": (bytes([0x03, 0, 0, 0, 18, 0]), 18),
        "sync": (bytes([0x35]) + bytes(9), 0),
    }
    for name, (cdb, dlen) in cmds.items():
        img = lb.scsi_command_script(slot, 0, len(cdb), dlen, buf)
        ram = bytearray(0x9000)
        ram[slot:slot + 0x200] = lb.slot_with_cdb(img, cdb)
        ram[buf:buf + 0x400] = bytes((i * 7) & 0xFF for i in range(0x400))
        ops = (op(8, val=slot) + op(7, val=31) + op(1, off=lb.ISTAT0, size=0) +
               op(1, off=lb.DSTAT, size=0) + op(1, off=lb.SIST0, size=0) +
               op(1, off=lb.DSPS, size=2))
        # The power-on UNIT ATTENTION first eats one command: run it twice.
        ops = ops + ops
        write("lsi_fuzz", name, struct.pack("<H", len(ops)) + ops + bytes(ram))
    # A memory-move script and a register-only poke sequence.
    sc = lb.Script(slot)
    sc.memmove(256, 0x2000, 0x3000)
    sc.int_(lb.VEC_DONE)
    ram = bytearray(0x4000)
    code = sc.assemble()
    ram[slot:slot + len(code)] = code
    ops = op(8, val=slot) + op(7, val=8)
    write("lsi_fuzz", "memmove", struct.pack("<H", len(ops)) + ops + bytes(ram))
    ops = b"".join(op(0, off=o, size=0, val=v) for o, v in
                   ((lb.ISTAT0, 0x40), (lb.ISTAT0, 0), (lb.DMODE, 0x80), (lb.DIEN, 0x7F),
                    (lb.SIEN0, 0xFF), (lb.DCNTL, 0x04), (lb.SCRATCHA, 0x55)))
    write("lsi_fuzz", "regs", struct.pack("<H", len(ops)) + ops)


if __name__ == "__main__":
    sys.exit(main())
