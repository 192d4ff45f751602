#!/usr/bin/env python3
"""The launcher without a VM: its host-side image check must reject wrong data,
and --dry-run must describe the processes/sockets the options ask for."""
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guesttest as gt  # noqa: E402

spec = importlib.util.spec_from_file_location("launcher", gt.LAUNCHER)
L = importlib.util.module_from_spec(spec)
spec.loader.exec_module(L)


class Args:
    perf_mb = 4


class FakePlan:
    def __init__(self, disks, nonce):
        self.disks, self.nonce, self.args = disks, nonce, Args()


class FakeConsole:
    def __init__(self, lines):
        self.lines = lines

    def data_lines(self, prefix):
        return [ln[len(prefix):] for ln in self.lines if ln.startswith(prefix)]


def write_selftest_image(path, nonce, dev, idx, size, pattern):
    with open(path, "wb") as f:
        f.truncate(size)
        tag = f"MPQ-SELFTEST nonce={nonce} dev={dev} idx={idx} bytes={size}\n".encode()
        f.write(tag.ljust(512, b"\0"))
        for off, ln, poff in L.selftest_regions(size, idx):
            f.seek(off)
            f.write(L.pattern_slice(pattern, poff, ln))


def expect_reject(what, fn):
    try:
        fn()
    except L.LaunchError as e:
        if e.code != L.EXIT_HOSTCHECK:
            gt.fail(f"{what}: wrong exit code {e.code}")
        gt.log(f"{what}: rejected ({e})")
        return
    gt.fail(f"{what}: the host check accepted wrong data")


def check_selftest(tmp):
    pattern = L.pattern_slice(os.urandom(1 << 20), 0, 2 << 20)
    size = 16 << 20
    a, b = os.path.join(tmp, "a.raw"), os.path.join(tmp, "b.raw")
    write_selftest_image(a, "n1", "sda", 0, size, pattern)
    write_selftest_image(b, "n1", "sdb", 1, size, pattern)
    disks = []
    for i, p in enumerate((a, b)):
        d = L.Disk(p, "raw", created=True)
        d.controller, d.scsi_id = 0, i
        disks.append(d)
    plan = FakePlan(disks, "n1")
    con = FakeConsole(["MPQ-SELFTEST: dev=sda idx=0 ok=1", "MPQ-SELFTEST: dev=sdb idx=1 ok=1"])
    L.check_selftest_disks(plan, con, pattern, tmp)      # good images pass

    def patch(path, off, data):
        with open(path, "r+b") as f:
            f.seek(off)
            old = f.read(len(data))
            f.seek(off)
            f.write(data)
        return old

    # one flipped byte inside each region, a stray write, a foreign nonce, a swapped tag
    # (XOR, not a fixed byte: the random pattern holds that byte 1 time in 256,
    # and then the "flip" changed nothing and the check rightly passed.)
    for off, ln, _ in L.selftest_regions(size, 1):
        with open(b, "rb") as f:
            f.seek(off + ln - 1)
            cur = f.read(1)[0]
        old = patch(b, off + ln - 1, bytes([cur ^ 0xFF]))
        expect_reject(f"byte flipped at {off + ln - 1}", lambda: L.check_selftest_disks(plan, con, pattern, tmp))
        patch(b, off + ln - 1, old)
    old = patch(a, 5 << 20, b"\x01")
    expect_reject("stray byte outside the regions", lambda: L.check_selftest_disks(plan, con, pattern, tmp))
    patch(a, 5 << 20, old)
    expect_reject("tag of another run", lambda: L.check_selftest_disks(FakePlan(disks, "n2"), con, pattern, tmp))
    old = patch(b, 0, f"MPQ-SELFTEST nonce=n1 dev=sdb idx=0 bytes={size}\n".encode())
    expect_reject("two images with the same guest tag", lambda: L.check_selftest_disks(plan, con, pattern, tmp))
    patch(b, 0, old)
    bad_con = FakeConsole(["MPQ-SELFTEST: dev=sda idx=0 ok=1", "MPQ-SELFTEST: dev=sdb idx=1 ok=0"])
    expect_reject("guest reported a mismatch", lambda: L.check_selftest_disks(plan, bad_con, pattern, tmp))
    L.check_selftest_disks(plan, con, pattern, tmp)      # restored: passes again

    # qcow2 goes through qemu-img convert
    q = os.path.join(tmp, "a.qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", a, q], check=True)
    dq = L.Disk(q, "qcow2", created=True)
    dq.controller, dq.scsi_id = 0, 0
    L.check_selftest_disks(FakePlan([dq], "n1"), FakeConsole(con.lines[:1]), pattern, tmp)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", b, q], check=True)
    expect_reject("qcow2 with another disk's data",
                  lambda: L.check_selftest_disks(FakePlan([dq], "n1"), FakeConsole(con.lines[:1]), pattern, tmp))
    gt.log("self-test host check: ok")


def check_perf(tmp):
    pattern = L.pattern_slice(os.urandom(1 << 20), 0, 2 << 20)
    p = os.path.join(tmp, "perf.raw")
    with open(p, "wb") as f:
        f.truncate(16 << 20)
        f.seek(1 << 20)
        f.write(L.pattern_slice(pattern, 0, 4 << 20))
    d = L.Disk(p, "raw", created=True)
    d.controller, d.scsi_id = 0, 0
    L.check_perf_disks(FakePlan([d], "n"), None, pattern, tmp)
    with open(p, "r+b") as f:
        # The last byte written, changed for sure (the pattern is random:
        # writing a fixed value left it unchanged once in 256 runs).
        f.seek((5 << 20) - 1)
        last = f.read(1)[0]
        f.seek((5 << 20) - 1)
        f.write(bytes([last ^ 0xFF]))
    expect_reject("perf data cut short", lambda: L.check_perf_disks(FakePlan([d], "n"), None, pattern, tmp))


def dry(args, env):
    r = subprocess.run([sys.executable, gt.LAUNCHER, "--dry-run"] + args, capture_output=True, text=True, env=env)
    return r.returncode, r.stdout, r.stderr


def check_dry_run(tmp):
    env = dict(os.environ, TMPDIR=tmp, MPQ_BUILD_DIR=gt.BUILD)
    fake = os.path.join(tmp, "fake-remote")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(fake, 0o755)
    rc, out, err = dry(["--remote-bin", fake, "--controllers", "2", "--disk-size", "32M"], env)
    if rc != 0:
        gt.fail(f"dry run failed: {err}")
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    creates = [ln for ln in lines if ln.startswith("qemu-img create")]
    remote = shlex.split(next(ln for ln in lines if ln.startswith(fake)))
    vmm = shlex.split(lines[-1])
    if len(creates) != 2:
        gt.fail(f"expected two disks to be created, got {creates}")
    # our remote: first socket positional, the second controller bound by x-remote-object
    objs = [remote[i + 1] for i, w in enumerate(remote) if w == "-object"]
    proxies = [vmm[i + 1] for i, w in enumerate(vmm) if w == "-device" and vmm[i + 1].startswith("x-pci-proxy-dev")]
    if not remote[1].isdigit() or len(objs) != 1 or "devid=lsi1" not in objs[0]:
        gt.fail(f"remote command line does not bind two controllers: {remote}")
    if len(proxies) != 2 or len({p.split("fd=")[1] for p in proxies}) != 2:
        gt.fail(f"VMM needs one proxy device per controller on its own socket: {proxies}")
    if "memory-backend-memfd,id=mem,size=512M,share=on" not in vmm:
        gt.fail("VMM RAM must be a shared memfd")
    rc, _, err = dry(["--remote", "stock", "--controllers", "2"], env)
    if rc != L.EXIT_USAGE or "one device per process" not in err:
        gt.fail(f"stock remote with two controllers must be refused (rc={rc}): {err}")
    rc, out, _ = dry(["--remote", "stock", "--controllers", "2", "--remotes", "2"], env)
    if rc != 0 or out.count("-machine x-remote") != 2:
        gt.fail("two stock remotes expected")
    rc, _, _ = dry(["--disk", os.path.join(tmp, "does-not-exist")], env)
    if rc != L.EXIT_USAGE:
        gt.fail(f"a missing --disk must be a usage error, got {rc}")
    if os.listdir(tmp) != ["fake-remote"] and sorted(os.listdir(tmp)) != ["fake-remote"]:
        gt.fail(f"dry run left files: {os.listdir(tmp)}")
    gt.log("dry run: ok")


def main():
    if not gt.shutil.which("qemu-img"):
        gt.skip("qemu-img is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        check_selftest(tmp)
        check_perf(tmp)
    with tempfile.TemporaryDirectory() as tmp:
        check_dry_run(tmp)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
