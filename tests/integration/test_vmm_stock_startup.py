#!/usr/bin/env python3
"""Stock QEMU 7.2's x-remote starts reading its socket before its own
startup system reset, carries out every frame already queued until it first
finds the socket empty, and only then runs that reset (COMMAND, BARs and the
device registers cleared). 1) Frames queued before the remote starts are
carried out (whether its reset then undoes them is printed, not checked: seen
both ways). 2) Our VMM against a stock remote that starts after our first frames
are queued and is held 40 ms after each reply (strace delays its sendmsg), so
that it keeps finding our next request waiting: the BARs the guest
programmed and the SCRATCHA it wrote must survive the remote going idle.
Without the VMM waiting for that reset at realize (ProxyDevice::
await_remote_startup) the reset lands after the guest's programming and the
remote exits on "Bad address" (the CI failure "SCRATCHA readback
mismatch")."""
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402

HDR = struct.Struct("<i4xQ")
RET, CFGWRITE, CFGREAD, BARWRITE = 1, 2, 3, 4


def frame(cmd, payload=b""):
    return HDR.pack(cmd, len(payload)) + payload


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        more = s.recv(n - len(b))
        if not more:
            raise EOFError("remote closed")
        b += more
    return b


def recv_ret(s):
    cmd, size = HDR.unpack(recv_exact(s, 16))
    body = recv_exact(s, size)
    return struct.unpack("<Q", body)[0] if size == 8 else None


def cfg(cmd, addr, val, ln):
    return frame(cmd, struct.pack("<IIi", addr, val, ln))


def stock_fact(c, qemu, tmp):
    ms, rs = socket.socketpair()
    ms.settimeout(30)
    bar = struct.pack("<QQIB3x", R.MMIO_BASE + R.SCRATCHA, 0x5A5A1234, 4, 1)
    ms.sendall(cfg(CFGWRITE, 0x14, R.MMIO_BASE, 4) + cfg(CFGWRITE, 0x04, 0x2, 2) + frame(BARWRITE, bar))
    log = open(os.path.join(tmp, "fact-remote.log"), "wb")
    p = subprocess.Popen([qemu, "-machine", "x-remote", "-nodefaults", "-display", "none",
                          "-device", "lsi53c895a,id=lsi0",
                          "-object", "x-remote-object,id=robj0,devid=lsi0,fd=%d" % rs.fileno()],
                         pass_fds=[rs.fileno()], stdout=log, stderr=subprocess.STDOUT)
    rs.close()
    log.close()
    try:
        c.eq([recv_ret(ms) for _ in range(3)], [0, 0, 0], "stock: queued frames carried out")
        # Not checked: the remote's startup does not always finish in the same
        # order (seen both ways here); part 2 is the deterministic case.
        ms.sendall(cfg(CFGREAD, 0x14, 0, 4))
        bar1 = recv_ret(ms)
        ms.sendall(cfg(CFGREAD, 0x04, 0, 2))
        print("note: stock remote after its startup: BAR1 0x%x COMMAND 0x%x (%s)"
              % (bar1, recv_ret(ms), "undone by its reset" if bar1 == 0 else "kept"))
    finally:
        ms.close()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def late_slow_remote(argv, procs, tmp):
    """A Rig remote: starts stock's remote once our VMM's first frame is
    queued, under strace that delays the end of every sendmsg."""
    def serve(s):
        select.select([s], [], [], 60)
        log = open(os.path.join(tmp, "remote0.log"), "wb")
        full = [a.replace("{fd}", str(s.fileno())) for a in argv]
        procs.append(subprocess.Popen(full, pass_fds=[s.fileno()], stdout=log, stderr=subprocess.STDOUT))
        log.close()
        s.close()
    return serve


def vmm_against_slow_stock(c, qemu, tmp):
    strace = shutil.which("strace")
    if not strace:
        print("note: strace not installed; the VMM part is skipped")
        return
    disk = R.make_disk(os.path.join(tmp, "disk.img"), 1)
    argv = [strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=sendmsg",
            "-e", "inject=sendmsg:delay_exit=40000"] + R.stock_remote_argv(qemu, disk)
    procs = []
    rig = R.Rig(tmp, remotes=[(late_slow_remote(argv, procs, tmp), ["lsi0"])])
    try:
        q = rig.q
        c.eq(q.find(R.LSI_VENDOR, R.LSI_DEVICE), [2], "controller at 00:02.0")
        sizes = R.bar_sizes(q, 2)
        R.program_bars(q, 2)
        q.writel(R.MMIO_BASE + R.SCRATCHA, 0x5A5A1234)
        time.sleep(0.5)  # the remote goes idle: a startup reset still pending runs now
        c.eq(q.readl(R.MMIO_BASE + R.SCRATCHA), 0x5A5A1234, "SCRATCHA through the memory BAR")
        c.eq(q.inl(R.IO_BASE + R.SCRATCHA), 0x5A5A1234, "SCRATCHA through the I/O BAR")
        c.eq(q.cfg_readw(2, 0x04) & 0x7, 0x7, "COMMAND as the guest wrote it")
        c.eq(sizes, [0xFFFFFF01, 0xFFFFFC00, 0xFFFFE000], "BAR sizing")
        c.check("remote device lost" not in rig.vmm_log(), "remote not lost (%r)" % rig.vmm_log()[-300:])
    finally:
        rig.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    qemu = R.stock_qemu()
    tmp = R.tmpdir("vmm-stock-startup-")
    c = R.Checker()
    stock_fact(c, qemu, tmp)
    vmm_against_slow_stock(c, qemu, tmp)
    rc = c.done()
    if rc == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("logs kept in", tmp)
    return rc


if __name__ == "__main__":
    sys.exit(main())
