#!/usr/bin/env python3
"""Our VMM against remotes that misbehave (a fake remote served by this
test): a garbage reply, a hang (receive timeout), a close. The device then
reads as all-ones, writes are dropped, later accesses do not block, the VMM
keeps answering qtest and logs one line. Also: refusals at startup
(anonymous RAM, a stock-like remote asked to carry two devices, a bad fd)."""
import os
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402

HDR = struct.Struct("<i4xQ")
RET, CFGWRITE, CFGREAD, BARWRITE, BARREAD, RESET = 1, 2, 3, 4, 5, 7


def drain_resample(fd):
    """As stock's remote does from its main loop: read every resample kick
    (the VMM waits for the first one at realize)."""
    def run():
        try:
            while True:
                select.select([fd], [], [])
                os.read(fd, 8)
        except OSError:
            return
    threading.Thread(target=run, daemon=True).start()


def recv_frame(s):
    data, anc, _, _ = s.recvmsg(16, socket.CMSG_SPACE(16 * 4))
    if not data:
        return None
    while len(data) < 16:
        more = s.recv(16 - len(data))
        if not more:
            return None
        data += more
    fds = [struct.unpack_from("<i", blob, 4 * i)[0] for _, _, blob in anc for i in range(len(blob) // 4)]
    cmd, size = HDR.unpack(data)
    if cmd == 6 and len(fds) == 2:  # SET_IRQFD: keep the resample fd
        drain_resample(fds.pop())
    for fd in fds:
        os.close(fd)
    body = b""
    while len(body) < size:
        more = s.recv(size - len(body))
        if not more:
            return None
        body += more
    return cmd, body


def fake_remote(mode):
    """A stock-like LSI remote with BAR1 = 1 KiB memory. After a BAR_WRITE of
    0xDEAD it misbehaves on the next request: 'garbage', 'hang' or 'close'."""
    def serve(s):
        cfg = bytearray(256)
        struct.pack_into("<IIII", cfg, 0, 0x00121000, 0, 0x01000000, 0)
        regs = {}
        armed = False
        hold = []
        while True:
            f = recv_frame(s)
            if f is None:
                return
            cmd, body = f
            if cmd in (0, 6):
                continue
            if armed:
                if mode == "garbage":
                    s.sendall(HDR.pack(BARREAD, 8) + b"\xff" * 8)
                    continue
                if mode == "close":
                    s.close()
                    return
                hold.append(s)   # hang: keep the socket open, never answer
                continue
            val = 0
            if cmd in (CFGREAD, CFGWRITE):
                addr, v, ln = struct.unpack("<IIi", body)
                if cmd == CFGWRITE:
                    old = int.from_bytes(cfg[addr:addr + ln], "little")
                    if addr == 0x14:
                        v = (v & 0xFFFFFC00)
                    elif addr not in (0x04,):
                        v = old
                    cfg[addr:addr + ln] = v.to_bytes(ln, "little")
                else:
                    val = int.from_bytes(cfg[addr:addr + ln], "little")
            elif cmd in (BARREAD, BARWRITE):
                addr, v, size, mem = struct.unpack("<QQIB3x", body)
                if size not in (1, 2, 4, 8):
                    val = (1 << 64) - 1
                elif cmd == BARWRITE:
                    regs[addr] = v
                    armed = v == 0xDEAD
                else:
                    val = regs.get(addr, 0)
            if cmd == RESET:
                s.sendall(HDR.pack(RET, 0))
            else:
                s.sendall(HDR.pack(RET, 8) + struct.pack("<Q", val))
    return serve


def misbehaving(c, tmp, mode):
    rig = R.Rig(tmp, remotes=[(fake_remote(mode), ["lsi0"])],
                proxy_props=",x-reply-timeout-ms=500")
    try:
        q = rig.q
        c.eq(q.cfg_readl(2, 0), 0x00121000, "%s: IDs" % mode)
        q.cfg_writel(2, 0x14, R.MMIO_BASE)
        q.cfg_writew(2, 0x04, 0x2)
        q.writel(R.MMIO_BASE + 0x34, 0x1234)
        c.eq(q.readl(R.MMIO_BASE + 0x34), 0x1234, "%s: works before the fault" % mode)
        q.writel(R.MMIO_BASE + 0x34, 0xDEAD)
        c.eq(q.readl(R.MMIO_BASE + 0x34), 0xFFFFFFFF, "%s: faulty reply reads all-ones" % mode)
        t0 = time.monotonic()
        for _ in range(20):
            c.eq(q.readl(R.MMIO_BASE + 0x34), 0xFFFFFFFF, "%s: later reads all-ones" % mode)
        c.eq(q.cfg_readl(2, 0), 0xFFFFFFFF, "%s: config reads all-ones" % mode)
        q.writel(R.MMIO_BASE + 0x34, 1)  # dropped
        c.check(time.monotonic() - t0 < 0.45 * 20, "%s: later accesses do not wait for the remote" % mode)
        q.writel(0x2000, 0x77)
        c.eq(q.readl(0x2000), 0x77, "%s: VMM keeps serving RAM" % mode)
        c.check(rig.vmm.poll() is None, "%s: VMM still running" % mode)
    finally:
        rig.stop()
    log = rig.vmm_log()
    c.eq(log.count("remote device lost"), 1, "%s: exactly one error line (%r)" % (mode, log[-300:]))


def refusals(c, tmp):
    rig = R.Rig(tmp, remotes=[(fake_remote("none"), ["lsi0"])], memfd=False, expect_exit=True)
    c.check(rig.rc != 0, "anonymous RAM: VMM refuses to start")
    c.check("requires fd-backed guest RAM" in rig.vmm_log(), "anonymous RAM: clear message (%r)" % rig.vmm_log())
    rig = R.Rig(tmp, remotes=[(fake_remote("none"), ["lsi0", "lsi1"])], expect_exit=True)
    c.check(rig.rc != 0, "two devices on a stock-like socket: refused")
    c.check("MULTIDEV" in rig.vmm_log(), "two devices: names the missing extension (%r)" % rig.vmm_log())
    rig = R.Rig(tmp, vmm_args=["-device", "x-pci-proxy-dev,id=p,fd=1000"], expect_exit=True)
    c.check(rig.rc != 0 and "is not a socket" in rig.vmm_log(), "bad fd refused (%r)" % rig.vmm_log())
    rig = R.Rig(tmp, vmm_args=["-accel", "kvm"], expect_exit=True)
    c.check(rig.rc != 0 and "no vCPU" in rig.vmm_log(), "kvm refused (%r)" % rig.vmm_log())


def main():
    tmp = R.tmpdir("vmm-fail-")
    c = R.Checker()
    for mode in ("garbage", "hang", "close"):
        misbehaving(c, tmp, mode)
    refusals(c, tmp)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
