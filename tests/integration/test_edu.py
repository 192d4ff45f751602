#!/usr/bin/env python3
"""The edu device (QEMU's docs/specs/edu.rst) built by our device registry,
compared with stock QEMU 7.2's own in-process `-device edu`.

What stock shows under qtest (`-accel tcg -S`: its virtual clock stands
still, so its timer-driven DMA never completes) is recorded once and must
be matched by
  - stock's x-pci-proxy-dev driving our remote (qemu-scsi-dev FD -device edu),
  - our VMM with the in-process `-device edu`,
  - our VMM with pci-proxy-dev driving our remote:
config space (with the MSI capability, sizing and writable bits), ID,
liveness, factorial, the interrupt status/raise/ack registers and INTx.
DMA and INTx are then checked under our VMM against edu.rst: in-process on
the virtual clock (qtest clock_step), and through our remote (whose timers
run on host time). Stock's own remote cannot serve edu at all."""
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402

EDU_VENDOR, EDU_DEVICE = 0x1234, 0x11E8
SLOT = 4
BAR = 0xE0000000
ID, LIVE, FACT, STATUS, IRQ_STATUS, IRQ_RAISE, IRQ_ACK = 0x00, 0x04, 0x08, 0x20, 0x24, 0x60, 0x64
DMA_SRC, DMA_DST, DMA_CNT, DMA_CMD = 0x80, 0x88, 0x90, 0x98
DMA_RUN, DMA_TO_RAM, DMA_IRQ = 1, 2, 4
BUF = 0x40000
IRQ_LINE = 11
WATCH_LINES = [True]  # off while stock's proxy runs: its line cannot move


def readq(q, a):
    return int(q.cmd("readq 0x%x" % a), 16)


def writeq(q, a, v):
    q.cmd("writeq 0x%x 0x%x" % (a, v))


def wait_until(q, what, cond, tries=2000):
    """Polls a register (remote timers run on host time); bounded, no clock."""
    for _ in range(tries):
        v = what()
        if cond(v):
            return v
        time.sleep(0.005)
    return what()


def wait_level(q, line, level, tries=400):
    if not WATCH_LINES[0]:
        return None
    for _ in range(tries):
        q.poll_irqs(0.01)
        if q.level.get(line, 0) == level:
            return True
    return False


def observe(q):
    """Everything stock can show under qtest, as one comparable dict."""
    o = {}
    o["config"] = [q.cfg_readl(SLOT, off) for off in range(0, 256, 4)]
    # BAR sizing, then the bits software may change, then reset them.
    q.cfg_writel(SLOT, 0x10, 0xFFFFFFFF)
    o["bar0_size"] = q.cfg_readl(SLOT, 0x10)
    for off in (0x40, 0x44, 0x48, 0x4C, 0x50, 0x3C):
        old = q.cfg_readl(SLOT, off)
        q.cfg_writel(SLOT, off, 0xFFFFFFFF)
        o["wr_%x" % off] = q.cfg_readl(SLOT, off)
        q.cfg_writel(SLOT, off, old)
    o["after_restore"] = [q.cfg_readl(SLOT, off) for off in range(0x40, 0x54, 4)]
    q.cfg_writel(SLOT, 0x10, BAR)
    q.cfg_writew(SLOT, 0x04, 0x0006)
    o["command"] = q.cfg_readw(SLOT, 0x04)
    o["id"] = q.readl(BAR + ID)
    q.writel(BAR + LIVE, 0x12345678)
    o["liveness"] = q.readl(BAR + LIVE)
    o["unknown_reg"] = q.readl(BAR + 0x10)
    facts = []
    for n in (0, 1, 5, 12, 13, 40):
        q.writel(BAR + FACT, n)
        wait_until(q, lambda: q.readl(BAR + STATUS), lambda v: not v & 1)
        facts.append(q.readl(BAR + FACT))
    o["factorials"] = facts
    q.writel(BAR + STATUS, 0xFFFFFFFF)
    o["status_writable"] = q.readl(BAR + STATUS)
    q.writel(BAR + STATUS, 0)
    # Interrupts: PIRQA-D all to IRQ 11, watched on the IOAPIC.
    for i in range(4):
        q.cfg_writeb(1, 0x60 + i, IRQ_LINE)
    q.cmd("irq_intercept_in ioapic")
    # Keys starting with "line_" are the IOAPIC input's level: stock's
    # x-pci-proxy-dev wires INTx only through KVM's irqfd, so under TCG its
    # line never moves and those keys are not compared for it.
    q.events.clear()
    q.writel(BAR + IRQ_RAISE, 0x5)
    o["irq_after_raise"] = q.readl(BAR + IRQ_STATUS)
    o["line_after_raise"] = wait_level(q, IRQ_LINE, 1)
    o["cfg_status_raised"] = q.cfg_readw(SLOT, 0x06)
    q.writel(BAR + IRQ_ACK, 0x1)
    o["irq_after_ack1"] = q.readl(BAR + IRQ_STATUS)
    o["line_after_ack1"] = q.level.get(IRQ_LINE)
    q.writel(BAR + IRQ_ACK, 0x4)
    o["irq_after_ack4"] = q.readl(BAR + IRQ_STATUS)
    o["line_after_ack4"] = wait_level(q, IRQ_LINE, 0)
    o["cfg_status_lowered"] = q.cfg_readw(SLOT, 0x06)
    # The factorial's interrupt.
    q.writel(BAR + STATUS, 0x80)
    q.writel(BAR + FACT, 4)
    wait_until(q, lambda: q.readl(BAR + STATUS), lambda v: not v & 1)
    # Stock's factorial thread clears "computing" before it takes the lock
    # to raise the interrupt: a read in between sees no interrupt yet. So
    # the interrupt status is awaited too (bounded); an implementation that
    # never raises it still differs.
    irq = wait_until(q, lambda: q.readl(BAR + IRQ_STATUS), lambda v: v & 1)
    o["fact_irq"] = (q.readl(BAR + FACT), irq)
    o["line_fact_irq"] = wait_level(q, IRQ_LINE, 1)
    q.writel(BAR + IRQ_ACK, 0xFFFFFFFF)
    o["line_after_ack_all"] = wait_level(q, IRQ_LINE, 0)
    q.writel(BAR + STATUS, 0)
    # DMA registers read back while no transfer runs. 4-byte accesses: a
    # proxy BAR (stock's as ours) splits 8-byte ones in two, and 0x84 is
    # no register.
    q.writel(BAR + DMA_SRC, 0x55667788)
    o["dma_src"] = (q.readl(BAR + DMA_SRC), q.readl(BAR + DMA_SRC + 4))
    q.writel(BAR + DMA_CNT, 0xABCD)
    o["dma_cnt"] = q.readl(BAR + DMA_CNT)
    return o


def start_stock_inprocess(qemu, tmp, qsock):
    return subprocess.Popen(
        [qemu, "-machine", "pc", "-accel", "tcg", "-S", "-m", "64M", "-nodefaults", "-display", "none",
         "-qtest", "unix:" + qsock, "-qtest-log", "none", "-device", "edu,addr=%d" % SLOT],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "stock.log"), "wb"))


def stock_reference(qemu, tmp):
    qsock = os.path.join(tmp, "stock-qtest.sock")
    q = R.QTest(qsock)
    vm = start_stock_inprocess(qemu, tmp, qsock)
    try:
        q.accept(vm)
        return observe(q)
    finally:
        q.close()
        vm.kill()
        vm.wait()


def stock_proxy_our_remote(qemu, remote, tmp):
    qsock = os.path.join(tmp, "proxy-qtest.sock")
    q = R.QTest(qsock)
    pe, re_ = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    rp = subprocess.Popen([remote, str(re_.fileno()), "-device", "edu,id=edu0"], pass_fds=[re_.fileno()],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "remote-stock.log"), "wb"))
    re_.close()
    vm = subprocess.Popen(
        [qemu, "-machine", "pc,memory-backend=mem0", "-accel", "tcg", "-S", "-m", "64M",
         "-object", "memory-backend-memfd,id=mem0,size=64M,share=on", "-nodefaults", "-display", "none",
         "-qtest", "unix:" + qsock, "-qtest-log", "none",
         "-device", "x-pci-proxy-dev,id=edu0,fd=%d,addr=%d" % (pe.fileno(), SLOT)],
        pass_fds=[pe.fileno()], stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "stockproxy.log"), "wb"))
    pe.close()
    try:
        q.accept(vm)
        WATCH_LINES[0] = False
        o = observe(q)
        # Our remote's DMA timer runs on host time, so a transfer completes
        # even with stock's clock stopped.
        o_dma = dma_suite_polled(q)
        return o, o_dma
    finally:
        WATCH_LINES[0] = True
        q.close()
        vm.kill()
        vm.wait()
        rp.wait(timeout=30)


def dma_suite_polled(q):
    """DMA through a remote: poll the command register until RUN clears."""
    data = bytes((i * 7 + 3) & 0xFF for i in range(100))
    q.write(0x100000, data)
    q.write(0x200000, bytes(128))
    q.writel(BAR + DMA_SRC, 0x100000)
    q.writel(BAR + DMA_DST, BUF + 8)
    q.writel(BAR + DMA_CNT, 100)
    q.writel(BAR + DMA_CMD, DMA_RUN)
    c1 = wait_until(q, lambda: q.readl(BAR + DMA_CMD), lambda v: not v & DMA_RUN)
    q.writel(BAR + DMA_SRC, BUF + 8)
    q.writel(BAR + DMA_DST, 0x200000)
    q.writel(BAR + DMA_CMD, DMA_RUN | DMA_TO_RAM | DMA_IRQ)
    c2 = wait_until(q, lambda: q.readl(BAR + DMA_CMD), lambda v: not v & DMA_RUN)
    st = q.readl(BAR + IRQ_STATUS)
    cfg_int = q.cfg_readw(SLOT, 0x06) & 0x08
    raised = wait_level(q, IRQ_LINE, 1)
    q.writel(BAR + IRQ_ACK, 0x100)
    return {"cmd_after": (c1, c2), "copied": q.read(0x200000, 100) == data,
            "past_end_untouched": q.read(0x200000 + 100, 28) == bytes(28),
            "irq_status": st, "cfg_interrupt_bit": cfg_int, "line_raised": raised,
            "line_lowered": wait_level(q, IRQ_LINE, 0)}


def our_vmm(c, tmp, label, remote_argv=None):
    if remote_argv:
        rig = R.Rig(tmp, remotes=[(remote_argv, ["edu0"])], proxy="pci-proxy-dev",
                    proxy_props=",addr=%d" % SLOT)
    else:
        rig = R.Rig(tmp, vmm_args=["-device", "edu,id=edu0,addr=%d" % SLOT], memfd=False)
    return rig


def inprocess_dma(c, q):
    """In-process edu on our VMM's virtual clock: nothing happens until
    qtest moves the clock by the 100 ms edu waits."""
    data = bytes((i * 5 + 1) & 0xFF for i in range(256))
    q.write(0x100000, data)
    q.write(0x300000, bytes(300))
    writeq(q, BAR + DMA_SRC, 0x100000)
    writeq(q, BAR + DMA_DST, BUF)
    writeq(q, BAR + DMA_CNT, 256)
    writeq(q, BAR + DMA_CMD, DMA_RUN | DMA_IRQ)
    c.eq(readq(q, BAR + DMA_CMD), DMA_RUN | DMA_IRQ, "in-process DMA: running before the clock moves")
    writeq(q, BAR + DMA_CNT, 1)
    c.eq(readq(q, BAR + DMA_CNT), 256, "in-process DMA: registers frozen while running")
    c.eq(int(q.cmd("clock_step 99999999")), 99999999, "clock_step moves the clock")
    c.eq(readq(q, BAR + DMA_CMD) & DMA_RUN, DMA_RUN, "in-process DMA: still running 1 ns early")
    q.events.clear()
    q.cmd("clock_step 1")
    c.eq(readq(q, BAR + DMA_CMD), DMA_IRQ, "in-process DMA: done after 100 ms of guest time")
    c.eq(q.readl(BAR + IRQ_STATUS), 0x100, "in-process DMA: interrupt status 0x100")
    c.check(("raise", IRQ_LINE) in q.events, "in-process DMA: IRQ raise %d (%r)" % (IRQ_LINE, q.events))
    q.writel(BAR + IRQ_ACK, 0x100)
    c.eq(q.events[-1], ("lower", IRQ_LINE), "in-process DMA: ack lowers INTx")
    # Back to RAM; clock_step without a count goes to the next deadline.
    writeq(q, BAR + DMA_SRC, BUF)
    writeq(q, BAR + DMA_DST, 0x300000)
    writeq(q, BAR + DMA_CMD, DMA_RUN | DMA_TO_RAM)
    q.cmd("clock_step")
    c.eq(q.read(0x300000, 256), data, "in-process DMA: buffer back in RAM")
    c.eq(q.read(0x300000 + 256, 44), bytes(44), "in-process DMA: nothing past the count")
    # dma_mask (28 bits): bit 28 of the guest address is dropped.
    q.write(0x100000, b"\x5a")
    writeq(q, BAR + DMA_SRC, (1 << 28) | 0x100000)
    writeq(q, BAR + DMA_DST, BUF + 4095)
    writeq(q, BAR + DMA_CNT, 1)
    writeq(q, BAR + DMA_CMD, DMA_RUN)
    q.cmd("clock_step")
    writeq(q, BAR + DMA_SRC, BUF + 4095)
    writeq(q, BAR + DMA_DST, 0x300400)
    writeq(q, BAR + DMA_CMD, DMA_RUN | DMA_TO_RAM)
    q.cmd("clock_step")
    c.eq(q.read(0x300400, 1), b"\x5a", "in-process DMA: guest address cut to dma_mask")
    # A transfer that leaves the 4 KiB buffer moves nothing but completes.
    q.write(0x300800, b"\xee" * 16)
    writeq(q, BAR + DMA_SRC, BUF + 4090)
    writeq(q, BAR + DMA_DST, 0x300800)
    writeq(q, BAR + DMA_CNT, 16)
    writeq(q, BAR + DMA_CMD, DMA_RUN | DMA_TO_RAM | DMA_IRQ)
    q.cmd("clock_step")
    c.eq(q.read(0x300800, 16), b"\xee" * 16, "in-process DMA: out-of-buffer transfer refused")
    c.eq(readq(q, BAR + DMA_CMD) & DMA_RUN, 0, "in-process DMA: refused transfer still ends")
    q.writel(BAR + IRQ_ACK, 0x100)
    # Bus mastering off: guest memory is not touched.
    q.cfg_writew(SLOT, 0x04, 0x0002)
    writeq(q, BAR + DMA_SRC, BUF)
    writeq(q, BAR + DMA_CMD, DMA_RUN | DMA_TO_RAM)
    q.cmd("clock_step")
    c.eq(q.read(0x300800, 16), b"\xee" * 16, "in-process DMA: no bus master, no write")


def stock_remote_refuses_edu(c, qemu, tmp):
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    p = subprocess.run([qemu, "-machine", "x-remote", "-nodefaults", "-display", "none", "-device", "edu,id=e",
                        "-object", "x-remote-object,id=r,devid=e,fd=%d" % s2.fileno()],
                       pass_fds=[s2.fileno()], capture_output=True, timeout=60)
    s1.close()
    s2.close()
    err = p.stderr.decode(errors="replace")
    c.check(p.returncode != 0 and "MSI is not supported by interrupt controller" in err,
            "stock's remote cannot serve edu (rc %s, %r)" % (p.returncode, err[-200:]))


def main():
    qemu = R.stock_qemu()
    remote = R.program("qemu-scsi-dev")
    tmp = R.tmpdir("mpq-edu-")
    c = R.Checker()
    ref = stock_reference(qemu, tmp)
    c.eq(ref["config"][0], EDU_DEVICE << 16 | EDU_VENDOR, "stock: edu at 00:%02x.0" % SLOT)

    c.check(ref["line_after_raise"] and ref["line_after_ack4"], "stock in-process: INTx on IRQ %d" % IRQ_LINE)

    def compare(label, got, lines=True):
        for k in ref:
            if lines or not k.startswith("line_"):
                c.eq(got.get(k), ref[k], "%s vs stock in-process: %s" % (label, k))

    dma_want = {"cmd_after": (0, DMA_TO_RAM | DMA_IRQ), "copied": True, "past_end_untouched": True,
                "irq_status": 0x100, "cfg_interrupt_bit": 0x08, "line_raised": True, "line_lowered": True}
    got, dma = stock_proxy_our_remote(qemu, remote, tmp)
    compare("stock x-pci-proxy-dev + our remote", got, lines=False)
    dma_want_stock = dict(dma_want, line_raised=None, line_lowered=None)  # no irqfd under TCG
    c.eq(dma, dma_want_stock, "stock proxy + our remote: DMA and its interrupt status")

    rig = our_vmm(c, tmp, "in-process")
    try:
        compare("our VMM, in-process edu", observe(rig.q))
        inprocess_dma(c, rig.q)
    finally:
        rig.stop()

    rig = our_vmm(c, tmp, "remote", remote_argv=[remote, "{fd}", "-device", "edu,id=edu0"])
    try:
        compare("our VMM + our remote", observe(rig.q))
        c.eq(dma_suite_polled(rig.q), dma_want, "our VMM + our remote: DMA and INTx")
    finally:
        rig.stop()

    stock_remote_refuses_edu(c, qemu, tmp)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
