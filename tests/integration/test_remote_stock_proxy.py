#!/usr/bin/env python3
"""Stock QEMU 7.2's proxy (x-pci-proxy-dev) drives our qemu-scsi-dev.

Both command-line forms of the remote are run. Through qtest (PCI config
mechanism #1 and MMIO) the guest-visible controller must look like stock's
remote LSI: 1000:0012, class 0x0100, BARs I/O 256 / mem 1K / mem 8K; a value
written into the SCRIPTS RAM BAR reads back; QMP system_reset on the VMM
reaches the remote as DEVICE_RESET (seen in its -D log) and leaves its PCI
config intact; when the VMM quits, the remote exits 0 by itself. Then one remote serves
two controllers on two sockets to two stock proxies.
"""
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import mpqtest as T  # noqa: E402

IO_BASE = 0xC000
MMIO_BASE = 0xFEBF0000
RAM_BASE = 0xFEBE0000


def run(form, qemu, remote, chk):
    tmp = T.tmpdir("mpq-stockproxy-")
    log = os.path.join(tmp, "remote.log")
    qsock = os.path.join(tmp, "qtest.sock")
    qmp_path = os.path.join(tmp, "qmp.sock")
    proxy_end, remote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    rfd = remote_end.fileno()
    if form == "first-arg":
        rcmd = [remote, str(rfd), "-device", "lsi53c895a,id=lsi0", "-D", log]
    else:
        rcmd = [remote, "-machine", "x-remote", "-nodefaults", "-display", "none",
                "-device", "lsi53c895a,id=lsi0", "-D", log,
                "-object", "x-remote-object,id=r0,devid=lsi0,fd=%d" % rfd]
    rproc = subprocess.Popen(rcmd, pass_fds=[rfd])
    remote_end.close()

    qt = T.QTest(qsock)
    pfd = proxy_end.fileno()
    vmm = subprocess.Popen(
        [qemu, "-machine", "pc,memory-backend=mem0", "-accel", "tcg", "-S", "-m", "256M",
         "-object", "memory-backend-memfd,id=mem0,size=256M,share=on",
         "-nodefaults", "-display", "none",
         "-qtest", "unix:" + qsock, "-qtest-log", "none",
         "-qmp", "unix:%s,server=on,wait=off" % qmp_path,
         "-device", "x-pci-proxy-dev,id=lsi0,fd=%d" % pfd],
        pass_fds=[pfd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proxy_end.close()
    try:
        qt.accept(vmm)
        qmp = T.Qmp(qmp_path, vmm)
        slot = qt.find_slot(0x1000, 0x0012)
        if not chk.check(slot is not None, "[%s] 1000:0012 found on bus 0" % form):
            return
        chk.eq(qt.cfg_readw(slot, 0x0A), 0x0100, "[%s] class/subclass" % form)
        chk.eq(qt.cfg_readw(slot, 0x2E), 0x1000, "[%s] subsystem id" % form)
        chk.eq((qt.cfg_readl(slot, 0x3C) >> 8) & 0xFF, 1, "[%s] interrupt pin INTA" % form)
        chk.eq((qt.cfg_readl(slot, 0x0C) >> 8) & 0xFF, 0xFF, "[%s] latency timer 0xff (as stock)" % form)

        # BAR sizing exactly as stock's remote answers it.
        sizes = {}
        for i, off in enumerate((0x10, 0x14, 0x18, 0x1C)):
            orig = qt.cfg_readl(slot, off)
            qt.cfg_writel(slot, off, 0xFFFFFFFF)
            sizes[i] = qt.cfg_readl(slot, off)
            qt.cfg_writel(slot, off, orig)
        chk.eq(sizes[0], 0xFFFFFF01, "[%s] BAR0 I/O 256" % form)
        chk.eq(sizes[1], 0xFFFFFC00, "[%s] BAR1 mem 1K" % form)
        chk.eq(sizes[2], 0xFFFFE000, "[%s] BAR2 mem 8K" % form)
        chk.eq(sizes[3], 0, "[%s] BAR3 absent" % form)
        chk.eq(qt.cfg_readl(slot, 0x30), 0, "[%s] no expansion ROM" % form)

        qt.cfg_writel(slot, 0x10, IO_BASE)
        qt.cfg_writel(slot, 0x14, MMIO_BASE)
        qt.cfg_writel(slot, 0x18, RAM_BASE)
        qt.cfg_writew(slot, 0x04, 0x0007)
        chk.eq(qt.cfg_readw(slot, 0x04), 0x0007, "[%s] COMMAND io|mem|master" % form)
        chk.eq(qt.cfg_readl(slot, 0x18), RAM_BASE, "[%s] BAR2 programmed" % form)

        # SCRIPTS RAM through the proxied memory BAR (absolute addresses on the wire).
        qt.writel(RAM_BASE + 0x100, 0xDEADBEEF)
        qt.writel(RAM_BASE + 0x1FFC, 0x12345678)
        chk.eq(qt.readl(RAM_BASE + 0x100), 0xDEADBEEF, "[%s] SCRIPTS RAM word reads back" % form)
        chk.eq(qt.readl(RAM_BASE + 0x1FFC), 0x12345678, "[%s] last SCRIPTS RAM word" % form)
        qt.writeb(RAM_BASE + 0x101, 0xAA)
        chk.eq(qt.readl(RAM_BASE + 0x100), 0xDEADAAEF, "[%s] byte write merged" % form)

        # system_reset on the VMM -> DEVICE_RESET at the remote.
        # (The machine's initial reset already sent one; count.)
        before = T.read_file(log).count("DEVICE_RESET of lsi0")
        qmp.execute("system_reset")
        T.wait_for(lambda: T.read_file(log).count("DEVICE_RESET of lsi0") > before, 30,
                   "DEVICE_RESET in the remote log")
        chk.eq(T.read_file(log).count("DEVICE_RESET of lsi0"), before + 1,
               "[%s] system_reset reached the remote as one DEVICE_RESET" % form)
        # Stock semantics: the remote keeps its PCI config over DEVICE_RESET
        # (config reads are forwarded, so the guest sees the remote's copy).
        chk.eq(qt.cfg_readl(slot, 0x18), RAM_BASE, "[%s] BAR2 kept over DEVICE_RESET" % form)
        chk.check(rproc.poll() is None, "[%s] remote still running" % form)

        qmp.execute("quit")
        qmp.close()
        vmm.wait(30)
        rc = rproc.wait(30)
        chk.eq(rc, 0, "[%s] remote exits 0 when the VMM goes away" % form)
        chk.check("peer closed the connection" in T.read_file(log), "[%s] remote logged the EOF" % form)
    finally:
        qt.close()
        T.stop(vmm)
        T.stop(rproc)
        err = vmm.stderr.read().decode(errors="replace") if vmm.stderr else ""
        if err.strip():
            print("VMM stderr:\n" + err)
        print("remote log:\n" + T.read_file(log))


def run_two(qemu, remote, chk):
    """One remote process, two controllers, each bound by its own
    x-remote-object to its own socket, driven by two stock proxies in one VMM
    (stock's remote allows only one object per process)."""
    tmp = T.tmpdir("mpq-stockproxy2-")
    log = os.path.join(tmp, "remote.log")
    qsock = os.path.join(tmp, "qtest.sock")
    qmp_path = os.path.join(tmp, "qmp.sock")
    p0, r0 = socket.socketpair()
    p1, r1 = socket.socketpair()
    rproc = subprocess.Popen(
        [remote, "-machine", "x-remote", "-nodefaults", "-display", "none", "-D", log, "-d", "remote",
         "-device", "lsi53c895a,id=lsi0", "-device", "lsi53c895a,id=lsi1",
         "-object", "x-remote-object,id=o0,devid=lsi0,fd=%d" % r0.fileno(),
         "-object", "x-remote-object,id=o1,devid=lsi1,fd=%d" % r1.fileno()],
        pass_fds=[r0.fileno(), r1.fileno()])
    r0.close()
    r1.close()
    qt = T.QTest(qsock)
    vmm = subprocess.Popen(
        [qemu, "-machine", "pc,memory-backend=mem0", "-accel", "tcg", "-S", "-m", "256M",
         "-object", "memory-backend-memfd,id=mem0,size=256M,share=on",
         "-nodefaults", "-display", "none", "-qtest", "unix:" + qsock, "-qtest-log", "none",
         "-qmp", "unix:%s,server=on,wait=off" % qmp_path,
         "-device", "x-pci-proxy-dev,id=px0,fd=%d,addr=4" % p0.fileno(),
         "-device", "x-pci-proxy-dev,id=px1,fd=%d,addr=5" % p1.fileno()],
        pass_fds=[p0.fileno(), p1.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p0.close()
    p1.close()
    try:
        qt.accept(vmm)
        qmp = T.Qmp(qmp_path, vmm)
        for slot in (4, 5):
            chk.eq(qt.cfg_readl(slot, 0), 0x00121000, "[two] slot %d is an LSI" % slot)
        bases = {4: 0xFEB00000, 5: 0xFEB10000}
        for slot, base in bases.items():
            qt.cfg_writel(slot, 0x18, base)
            qt.cfg_writew(slot, 0x04, 0x0002)
        qt.writel(bases[4] + 0x40, 0x44444444)
        qt.writel(bases[5] + 0x40, 0x55555555)
        chk.eq(qt.readl(bases[4] + 0x40), 0x44444444, "[two] lsi0 SCRIPTS RAM")
        chk.eq(qt.readl(bases[5] + 0x40), 0x55555555, "[two] lsi1 SCRIPTS RAM is its own")
        chk.eq(qt.cfg_readl(4, 0x18), bases[4], "[two] lsi0 BAR2")
        chk.eq(qt.cfg_readl(5, 0x18), bases[5], "[two] lsi1 BAR2")
        text = T.read_file(log)
        b0, b1 = text.count("DEVICE_RESET of lsi0"), text.count("DEVICE_RESET of lsi1")
        qmp.execute("system_reset")
        T.wait_for(lambda: T.read_file(log).count("DEVICE_RESET of lsi1") > b1 and
                   T.read_file(log).count("DEVICE_RESET of lsi0") > b0, 30, "both DEVICE_RESETs")
        chk.check("<- BAR_WRITE" in T.read_file(log), "[two] -d remote traces frames")
        qmp.execute("quit")
        qmp.close()
        vmm.wait(30)
        chk.eq(rproc.wait(30), 0, "[two] remote exits 0 after both sockets closed")
    finally:
        qt.close()
        T.stop(vmm)
        T.stop(rproc)


def main():
    qemu = T.stock_qemu_or_skip()
    remote = T.program("qemu-scsi-dev")
    chk = T.Checker()
    for form in ("first-arg", "x-remote-object"):
        run(form, qemu, remote, chk)
    run_two(qemu, remote, chk)
    chk.finish()


if __name__ == "__main__":
    main()
