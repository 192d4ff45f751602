#!/usr/bin/env python3
"""qcow2 driver against stock qemu-img.

Images made by qemu-img (cluster sizes, refcount widths, compression, lazy
refcounts, v2, backing files, snapshots) are read back byte-identical by our
driver (mpq-io verify) and by qemu-img compare; random mixes of writes,
discards and zero writes through our driver are checked against a raw model
with `qemu-img check` and `qemu-img compare`; a writer killed with SIGKILL
leaves an image that `qemu-img check` accepts (leaks allowed) with every
completed write readable.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

BUILD = os.environ.get("MPQ_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
MPQ_IO = os.path.join(BUILD, "mpq-io")
QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")
MiB = 1 << 20
failures = []


def run(cmd, check=True, cwd=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (" ".join(cmd), p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return p


def random_source(path, size, rng, holes=True, compressible=False):
    if compressible:  # few distinct bytes: deflate/zstd shrink every cluster
        data = bytearray(rng.choices(b"qcow2 mpq", k=size))
    else:
        data = bytearray(rng.randbytes(size))
    if holes:  # zero runs so that the converted image has unallocated parts
        for _ in range(size // (256 * 1024)):
            off = rng.randrange(0, size)
            ln = min(size - off, rng.randrange(4096, 256 * 1024))
            data[off:off + ln] = bytes(ln)
    with open(path, "wb") as f:
        f.write(data)
    return data


def mpq_verify(img, ref, size, cwd=None, extra=()):
    run([MPQ_IO, "-r", *extra, img, "-c", "verify %s 0 %d" % (ref, size)], cwd=cwd)


def qemu_compare(img, ref):
    p = run([QEMU_IMG, "compare", "-f", "qcow2", "-F", "raw", img, ref], check=False)
    if p.returncode != 0:
        raise AssertionError("qemu-img compare %s %s: %s%s" % (img, ref, p.stdout, p.stderr))


def qemu_check(img, allow_leaks=False):
    p = run([QEMU_IMG, "check", img], check=False)
    ok = (0, 3) if allow_leaks else (0,)
    if p.returncode not in ok:
        raise AssertionError("qemu-img check %s -> %d:\n%s%s" % (img, p.returncode, p.stdout[-3000:], p.stderr[-2000:]))
    return p


class Model:
    """The raw image our driver's image must equal."""

    def __init__(self, path, data, cluster, v2_backing=None):
        self.path = path
        self.data = bytearray(data)
        self.cluster = cluster
        self.v2_backing = v2_backing  # v2 + backing: discard exposes the backing file

    def write(self, off, ln, pat):
        self.data[off:off + ln] = bytes([pat]) * ln

    def zero(self, off, ln):
        self.data[off:off + ln] = bytes(ln)

    def discard(self, off, ln):
        c = self.cluster
        start = (off + c - 1) // c * c
        end = off + ln
        end = len(self.data) if end == len(self.data) else end // c * c
        if end > start:
            if self.v2_backing is not None:
                b = self.v2_backing[start:end]
                self.data[start:end] = b + bytes(end - start - len(b))
            else:
                self.data[start:end] = bytes(end - start)

    def save(self):
        with open(self.path, "wb") as f:
            f.write(self.data)


def random_ops(rng, size, cluster, n, max_len=192 * 1024):
    ops = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.65:
            ln = rng.randrange(1, max_len // 512 + 1) * 512
            if rng.random() < 0.2:
                ln = rng.randrange(1, max_len)
            off = rng.randrange(0, size - ln + 1)
            if rng.random() < 0.6:
                off -= off % 512
            ops.append(("write", off, ln, rng.randrange(1, 256)))
        elif kind < 0.80:
            nc = rng.randrange(1, max(2, max_len // cluster + 1))
            off = rng.randrange(0, size // cluster) * cluster
            ops.append(("discard", off, min(nc * cluster, size - off), 0))
        elif kind < 0.95:
            ln = rng.randrange(1, max_len)
            off = rng.randrange(0, size - ln + 1)
            ops.append(("zero", off, ln, 0))
        else:
            ops.append(("flush", 0, 0, 0))
    return ops


def apply_ops(img, model, ops, tmp, extra=()):
    script = os.path.join(tmp, "ops.txt")
    with open(script, "w") as f:
        for kind, off, ln, pat in ops:
            if kind == "write":
                f.write("write -P %d %d %d\n" % (pat, off, ln))
                model.write(off, ln, pat)
            elif kind == "zero":
                f.write("write -z %d %d\n" % (off, ln))
                model.zero(off, ln)
            elif kind == "discard":
                f.write("discard %d %d\n" % (off, ln))
                model.discard(off, ln)
            else:
                f.write("flush\n")
    run([MPQ_IO, *extra, img, "-s", script])
    model.save()


def check_image(img, model, size, allow_leaks=True):
    qemu_check(img, allow_leaks)
    qemu_compare(img, model.path)
    mpq_verify(img, model.path, size)


def case(name):
    def deco(fn):
        def wrapper(*a, **k):
            only = os.environ.get("MPQ_TEST_ONLY", "")
            if only and only not in name:
                return
            try:
                fn(*a, **k)
                print("PASS", name, flush=True)
            except AssertionError as e:
                print("FAIL", name, e, flush=True)
                failures.append(name)
        wrapper.case_name = name
        return wrapper
    return deco


def converted_case(tmp, rng, name, opts, size, cluster, compressed=False, nops=150):
    @case("convert " + name)
    def body():
        d = os.path.join(tmp, name.replace("=", "_").replace(",", "_"))
        os.makedirs(d)
        src = os.path.join(d, "src.raw")
        data = random_source(src, size, rng, compressible=compressed)
        img = os.path.join(d, "img.qcow2")
        cmd = [QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2"]
        if compressed:
            cmd.append("-c")
        if opts:
            cmd += ["-o", opts]
        run(cmd + [src, img])
        if compressed:
            js = json.loads(run([QEMU_IMG, "check", "--output=json", img]).stdout)
            assert js.get("compressed-clusters", 0) > 0, "no compressed clusters: %s" % js
        mpq_verify(img, src, size)
        qemu_compare(img, src)
        info = run([MPQ_IO, "-r", img, "-c", "info"]).stdout
        assert "cluster size: %d" % cluster in info, info
        model = Model(os.path.join(d, "model.raw"), data, cluster)
        apply_ops(img, model, random_ops(rng, size, cluster, nops), d)
        check_image(img, model, size)
    body()


@case("qemu-io filled, lazy refcounts")
def lazy_case(tmp, rng):
    d = os.path.join(tmp, "lazy")
    os.makedirs(d)
    img = os.path.join(d, "img.qcow2")
    size = 8 * MiB
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4096", img, str(size)])
    model = Model(os.path.join(d, "model.raw"), bytes(size), 4096)
    qio = []
    for _ in range(40):
        off = rng.randrange(0, size // 512 - 256) * 512
        ln = rng.randrange(1, 256) * 512
        pat = rng.randrange(1, 256)
        qio += ["-c", "write -P %d %d %d" % (pat, off, ln)]
        model.write(off, ln, pat)
    run([QEMU_IO, "-f", "qcow2", *qio, img])
    model.save()
    mpq_verify(img, model.path, size)
    apply_ops(img, model, random_ops(rng, size, 4096, 200), d)
    check_image(img, model, size, allow_leaks=False)
    # The dirty bit is set only while we have the image open for writing.
    hdr = open(img, "rb").read(80)
    assert int.from_bytes(hdr[72:80], "big") & 1 == 0, "dirty bit left set after a clean close"


def backing_case(tmp, rng, name, base_fmt, top_opts, base_size, top_size, v2=False):
    @case("backing " + name)
    def body():
        d = os.path.join(tmp, "backing_" + name)
        os.makedirs(os.path.join(d, "imgs"))
        base_raw = os.path.join(d, "imgs", "base.raw")
        base = random_source(base_raw, base_size, rng, holes=False)
        base_name = "base.raw"
        if base_fmt == "qcow2":
            run([QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=16384", base_raw,
                 os.path.join(d, "imgs", "base.qcow2")])
            base_name = "base.qcow2"
        top = os.path.join(d, "imgs", "top.qcow2")
        # Relative backing name, resolved against the top image's directory.
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", base_name, "-F", base_fmt, "-o", top_opts, "top.qcow2",
             str(top_size)], cwd=os.path.join(d, "imgs"))
        cluster = 65536
        for o in top_opts.split(","):
            if o.startswith("cluster_size="):
                cluster = int(o.split("=")[1])
        expect = bytearray(top_size)
        expect[:min(base_size, top_size)] = base[:top_size]
        model = Model(os.path.join(d, "model.raw"), expect, cluster, v2_backing=bytes(base) if v2 else None)
        for _ in range(10):
            off = rng.randrange(0, top_size - 200000)
            ln = rng.randrange(1, 200000)
            pat = rng.randrange(1, 256)
            run([QEMU_IO, "-f", "qcow2", "-c", "write -P %d %d %d" % (pat, off, ln), top])
            model.write(off, ln, pat)
        model.save()
        # From another directory: the relative name must not depend on cwd.
        mpq_verify(os.path.join("imgs", "top.qcow2"), model.path, top_size, cwd=d)
        qemu_compare(top, model.path)
        apply_ops(top, model, random_ops(rng, top_size, cluster, 150), d)
        check_image(top, model, top_size)
        # The backing file itself was never written.
        with open(base_raw, "rb") as f:
            assert f.read() == bytes(base), "backing file modified"
    body()


@case("internal snapshot COW")
def snapshot_case(tmp, rng):
    d = os.path.join(tmp, "snap")
    os.makedirs(d)
    size = 4 * MiB
    src = os.path.join(d, "src.raw")
    data = random_source(src, size, rng)
    img = os.path.join(d, "img.qcow2")
    run([QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", src, img])
    run([QEMU_IMG, "snapshot", "-c", "s1", img])
    info = run([MPQ_IO, "-r", img, "-c", "info"]).stdout
    assert "name 's1'" in info, info
    model = Model(os.path.join(d, "model.raw"), data, 4096)
    apply_ops(img, model, random_ops(rng, size, 4096, 200), d)
    check_image(img, model, size)
    snap = os.path.join(d, "snap.raw")
    run([QEMU_IMG, "convert", "-l", "snapshot.name=s1", "-O", "raw", img, snap])
    with open(snap, "rb") as f:
        assert f.read() == bytes(data), "snapshot content changed by writes to the active layer"


@case("long random mix")
def long_mix(tmp, rng, opts, size, cluster, nops):
    d = os.path.join(tmp, "long_" + str(cluster))
    os.makedirs(d)
    src = os.path.join(d, "src.raw")
    data = random_source(src, size, rng)
    img = os.path.join(d, "img.qcow2")
    run([QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2", "-o", opts, src, img])
    model = Model(os.path.join(d, "model.raw"), data, cluster)
    # A small L2 cache forces evictions (and their write-back ordering).
    apply_ops(img, model, random_ops(rng, size, cluster, nops, max_len=96 * 1024), d, extra=("-L", str(4 * cluster)))
    check_image(img, model, size)


def crash_case(tmp, rng, name, opts, rounds=4):
    @case("crash " + name)
    def body():
        d = os.path.join(tmp, "crash_" + name)
        os.makedirs(d)
        size = 16 * MiB
        img = os.path.join(d, "img.qcow2")
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", opts, img, str(size)])
        model = bytearray(size)
        for r in range(rounds):
            p = subprocess.Popen([MPQ_IO, img, "-c", "writeloop %d 100000 262144" % rng.randrange(1, 1 << 30)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            kill_after = rng.randrange(5, 120)
            done = 0
            pending = None
            killed = False
            # After the kill, the lines still in the pipe tell what completed.
            for line in p.stdout:
                w = line.split()
                if w[0] == "begin":
                    pending = (int(w[2]), int(w[3]), int(w[4]))
                elif w[0] == "done":
                    off, ln, pat = pending
                    model[off:off + ln] = bytes([pat]) * ln
                    pending = None
                    done += 1
                    if done >= kill_after and not killed:
                        os.kill(p.pid, signal.SIGKILL)
                        killed = True
            p.wait()
            if not killed:
                raise AssertionError("writer died early: %s" % p.stderr.read())
            p.stdout.close()
            p.stderr.close()
            if "lazy" in name:
                run([MPQ_IO, img, "-c", "info"])  # rebuilds the refcounts
            qemu_check(img, allow_leaks=True)
            dump = os.path.join(d, "dump.raw")
            run([QEMU_IMG, "convert", "-O", "raw", img, dump])
            with open(dump, "rb") as f:
                got = f.read()
            if len(got) != size:
                raise AssertionError("dump size %d" % len(got))
            # Bytes of a write that began but was never reported may be old or new.
            lo, hi, newpat = (0, 0, 0) if pending is None else (pending[0], pending[0] + pending[1], pending[2])
            if got[:lo] != model[:lo] or got[hi:] != model[hi:]:
                for i in range(size):
                    if (i < lo or i >= hi) and got[i] != model[i]:
                        raise AssertionError("round %d: completed write lost at byte %d (%d != %d)" %
                                             (r, i, got[i], model[i]))
            for i in range(lo, hi):
                if got[i] != model[i] and got[i] != newpat:
                    raise AssertionError("round %d: byte %d of the in-flight write is %d" % (r, i, got[i]))
            model[lo:hi] = got[lo:hi]
            mref = os.path.join(d, "model.raw")
            with open(mref, "wb") as f:
                f.write(model)
            mpq_verify(img, mref, size)
    body()


@case("hostile images and failing commands give clear errors and exit 1")
def hostile_case(tmp, rng):
    d = os.path.join(tmp, "hostile")
    os.makedirs(d)
    img = os.path.join(d, "img.qcow2")
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", img, "4M"])
    run([QEMU_IO, "-c", "write -P 0x21 0 64k", img])
    good = open(img, "rb").read()

    def expect_fail(data, cmds, needle, ro=True):
        bad = os.path.join(d, "bad.qcow2")
        with open(bad, "wb") as f:
            f.write(data)
        args = [MPQ_IO] + (["-r"] if ro else []) + [bad]
        for c in cmds:
            args += ["-c", c]
        p = run(args, check=False)
        assert p.returncode == 1, "exit %d for %s: %s" % (p.returncode, needle, p.stderr)
        assert needle in p.stderr, "expected %r in %r" % (needle, p.stderr)

    def patch(off, value, width=8):
        b = bytearray(good)
        b[off:off + width] = value.to_bytes(width, "big")
        return bytes(b)

    l1_off = int.from_bytes(good[40:48], "big")
    expect_fail(patch(72, 1 << 9), ["info"], "unsupported incompatible feature")
    expect_fail(patch(4, 4, 4), ["info"], "unsupported qcow2 version 4")
    expect_fail(patch(20, 30, 4), ["info"], "cluster size")
    expect_fail(patch(40, 12345), ["info"], "not cluster aligned")
    expect_fail(patch(36, 0xffffffff, 4), ["info"], "L1 table too large")
    expect_fail(patch(72, 2), ["write 0 4k"], "marked corrupt", ro=False)
    expect_fail(patch(l1_off, (1 << 63) | 0x10200), ["read 0 4k"], "not cluster aligned")
    expect_fail(good, ["read -P 0x22 0 4k"], "pattern mismatch")
    expect_fail(good, ["read 4M 1"], "beyond the disk")
    expect_fail(good, ["frobnicate"], "unknown command")


def main():
    if not QEMU_IMG or not QEMU_IO:
        print("SKIP: qemu-img/qemu-io not installed")
        return 77
    if not os.path.exists(MPQ_IO):
        print("FAIL: %s not built" % MPQ_IO)
        return 1
    seed = int(os.environ.get("MPQ_TEST_SEED", random.randrange(1 << 30)))
    print("seed", seed, flush=True)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="qcow2-qemu-img-")
    try:
        converted_case(tmp, rng, "cluster_size=512", "cluster_size=512", 2 * MiB, 512)
        converted_case(tmp, rng, "cluster_size=4k", "cluster_size=4096", 4 * MiB, 4096)
        converted_case(tmp, rng, "cluster_size=64k", "cluster_size=65536", 8 * MiB, 65536)
        converted_case(tmp, rng, "cluster_size=2M", "cluster_size=2097152", 16 * MiB, 2 * MiB, nops=60)
        converted_case(tmp, rng, "refcount_bits=1", "cluster_size=4096,refcount_bits=1", 4 * MiB, 4096)
        converted_case(tmp, rng, "refcount_bits=16", "refcount_bits=16", 4 * MiB, 65536)
        converted_case(tmp, rng, "refcount_bits=64", "cluster_size=4096,refcount_bits=64", 4 * MiB, 4096)
        converted_case(tmp, rng, "512_refcount_bits=64", "cluster_size=512,refcount_bits=64", 4 * MiB, 512)
        converted_case(tmp, rng, "compat=0.10", "compat=0.10,cluster_size=4096", 4 * MiB, 4096)
        converted_case(tmp, rng, "compressed_zlib", "compression_type=zlib", 4 * MiB, 65536, compressed=True)
        converted_case(tmp, rng, "compressed_zstd", "compression_type=zstd,cluster_size=4096", 4 * MiB, 4096,
                       compressed=True)
        converted_case(tmp, rng, "compressed_v2", "compat=0.10", 4 * MiB, 65536, compressed=True)
        lazy_case(tmp, rng)
        backing_case(tmp, rng, "raw", "raw", "cluster_size=4096", 4 * MiB, 4 * MiB)
        backing_case(tmp, rng, "qcow2", "qcow2", "cluster_size=65536", 4 * MiB, 4 * MiB)
        backing_case(tmp, rng, "short_raw", "raw", "cluster_size=4096", 3 * MiB, 6 * MiB)
        backing_case(tmp, rng, "v2_raw", "raw", "compat=0.10,cluster_size=4096", 4 * MiB, 4 * MiB, v2=True)
        snapshot_case(tmp, rng)
        hostile_case(tmp, rng)
        long_mix(tmp, rng, "cluster_size=65536", 32 * MiB, 65536, 3000)
        long_mix(tmp, rng, "cluster_size=512,refcount_bits=64", 4 * MiB, 512, 1500)
        crash_case(tmp, rng, "64k", "cluster_size=65536")
        crash_case(tmp, rng, "4k", "cluster_size=4096,refcount_bits=1")
        crash_case(tmp, rng, "lazy", "cluster_size=4096,lazy_refcounts=on")
    finally:
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
