#!/usr/bin/env python3
"""Register reads served from the remote's register mirror (MPQEXT REG_MIRROR).

Our remote publishes the LSI register file into a page shared with our VMM,
which then answers reads of side-effect-free registers without a round trip.
What must hold:
- every read returns what a forwarded BAR_READ returns: the same sequence of
  writes and reads (all 256 register offsets, widths 1/2/4, MMIO and I/O,
  unaligned, read-to-clear registers included) gives the same values with the
  mirror on and with x-reg-mirror=off;
- a read right after a posted write sees the write (the mirror must not
  answer before the remote has carried it out);
- a register changed by SCRIPTS reads back changed once SCRIPTS stopped;
- reads are really served locally: the remote's frame trace (-d remote)
  shows almost no BAR_READ for a burst of SCRATCHA reads with the mirror on,
  and one per read with it off;
- the INTx level after an access (the DSTAT read that acknowledges an INT
  lowers it) is read from the mirror, without the resample handshake that
  can only tell a lowered line by waiting out its timeout (VMM trace
  mpq_proxy_irq_check); without the mirror the handshake does it."""
import os
import random
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402

# Plain read/write registers: scratch A/B, DSA, TEMP, mailboxes, scratch C..R.
PLAIN = [0x34, 0x5C, 0x10, 0x1C] + list(range(0x60, 0xA0, 4))
BURST = 300


def remote_log(tmp):
    with open(os.path.join(tmp, "remote0.log"), "rb") as f:
        return f.read().decode(errors="replace")


def bar_reads(tmp):
    return remote_log(tmp).count("<- BAR_READ")


def sweep(q, rng):
    """Writes then reads; returns everything read, in order."""
    out = []
    for off in PLAIN:
        q.writel(R.MMIO_BASE + off, rng.getrandbits(32))
    q.writeb(R.MMIO_BASE + 0x16, 0x5A)  # MBOX0
    q.writeb(R.MMIO_BASE + 0x17, 0xA5)  # MBOX1
    for off in range(256):
        out.append(("b", off, q.readb(R.MMIO_BASE + off)))
    for off in range(0, 256, 4):
        out.append(("l", off, q.readl(R.MMIO_BASE + off)))
        out.append(("inl", off, q.inl(R.IO_BASE + off)))
    for off in range(1, 255, 2):
        out.append(("w", off, int(q.cmd("readw 0x%x" % (R.MMIO_BASE + off)), 16)))
    for off in (0x31, 0x33, 0x35, 0x5D, 0xFD):
        out.append(("ul", off, q.readl(R.MMIO_BASE + off)))
    return out


def scenario(c, label, q, tmp):
    slot = q.find(R.LSI_VENDOR, R.LSI_DEVICE)[0]
    R.program_bars(q, slot)
    # A read right after each posted write sees it.
    stale = [v for v in range(1, 201) if (q.writel(R.MMIO_BASE + R.SCRATCHA, v * 0x01010101) or
                                          q.readl(R.MMIO_BASE + R.SCRATCHA) != v * 0x01010101)]
    c.eq(stale, [], "%s: every read after a posted write sees it" % label)
    result = sweep(q, random.Random(1234))
    # SCRIPTS change a register: MOVE 0x5A TO SCRATCHA0, then INT.
    q.write(R.INT_SCRIPT_AT, struct.pack("<II", 0x78345A00, 0) + R.int_script(0x6161))
    q.writel(R.MMIO_BASE + R.DSP, R.INT_SCRIPT_AT)
    for _ in range(100000):
        if q.readb(R.MMIO_BASE + R.ISTAT0) & R.ISTAT_DIP:
            break
    c.check(q.readb(R.MMIO_BASE + R.ISTAT0) & R.ISTAT_DIP, "%s: SCRIPTS reached the INT" % label)
    q.readb(R.MMIO_BASE + R.DSTAT)
    c.eq(q.readl(R.MMIO_BASE + R.DSPS), 0x6161, "%s: DSPS is the INT's vector" % label)
    c.eq(q.readb(R.MMIO_BASE + R.SCRATCHA), 0x5A, "%s: SCRATCHA0 as the SCRIPTS left it" % label)
    before = bar_reads(tmp)
    for _ in range(BURST):
        q.readl(R.MMIO_BASE + R.SCRATCHA)
    frames = bar_reads(tmp) - before
    # INTx: raised by a SCRIPTS INT, lowered by the DSTAT read.
    for i in range(4):
        q.cfg_writeb(1, 0x60 + i, 11)
    q.cmd("irq_intercept_in ioapic")
    q.write(R.INT_SCRIPT_AT, R.int_script(0x7777))
    q.writeb(R.MMIO_BASE + R.DIEN, R.DSTAT_SIR)
    q.events.clear()
    q.writel(R.MMIO_BASE + R.DSP, R.INT_SCRIPT_AT)
    q.poll_irqs(0.5)
    c.check(("raise", 11) in q.events, "%s: IRQ raised by the INT (%r)" % (label, q.events))
    posted_before = remote_log(tmp).count("<- BAR_READ_POSTED")
    c.check(q.readb(R.MMIO_BASE + R.DSTAT) & R.DSTAT_SIR, "%s: DSTAT.SIR" % label)
    q.poll_irqs(0.3)
    c.eq(q.events[-1:], [("lower", 11)], "%s: IRQ lowered by the DSTAT read" % label)
    if label.startswith("mirror"):
        # The predicted read reached the remote while the VMM sat idle: the
        # VMM holds it back only until its answer to the guest is out.
        c.eq(remote_log(tmp).count("<- BAR_READ_POSTED") - posted_before, 1,
             "%s: the predicted DSTAT read was sent with nothing after it" % label)
    # The read was carried out in the remote (a predicted one too): ISTAT's
    # DIP is clear and a second DSTAT read finds nothing pending.
    c.eq(q.readb(R.MMIO_BASE + R.ISTAT0) & R.ISTAT_DIP, 0, "%s: ISTAT.DIP clear after the DSTAT read" % label)
    c.eq(q.readb(R.MMIO_BASE + R.DSTAT), 0x80, "%s: DSTAT read again: DFE only" % label)
    q.writeb(R.MMIO_BASE + R.DIEN, 0)
    return result, frames


def run(c, props, label, env=()):
    tmp = R.tmpdir("mpq-mirror-")
    disk = R.make_disk(os.path.join(tmp, "d.img"), 4)
    argv = (["env"] + list(env) if env else []) + R.our_remote_argv([("lsi0", disk)]) + ["-d", "remote"]
    rig = R.Rig(tmp, remotes=[(argv, ["lsi0"])], proxy="pci-proxy-dev", vmm_args=["-trace", "mpq_proxy_irq_check", "-trace", "mpq_proxy_mirror_predicted"],
                proxy_props=",x-resample-wait-us=200000" + props, mem_mb=64)
    try:
        result, frames = scenario(c, label, rig.q, tmp)
    finally:
        rig.stop()
    with open(rig.log, "rb") as f:
        vlog = f.read().decode(errors="replace")
    checks = {how: vlog.count("INTx after the access, from the %s" % how) for how in ("mirror", "resample")}
    checks["predicted DSTAT"] = vlog.count("0xc = 0x84 (mirror prediction, INTx 0 after)")
    return result, frames, checks


def main():
    c = R.Checker()
    on, on_frames, on_checks = run(c, "", "mirror")
    off, off_frames, off_checks = run(c, ",x-reg-mirror=off", "no mirror")
    # The remote's epoll loop sends replies inside its round, before it
    # publishes: fewer reads hit, none may be wrong.
    epoll, _, _ = run(c, "", "mirror, epoll loop", env=["MPQ_REMOTE_LOOP=epoll"])
    # With the mirror the acknowledging DSTAT read (SIR | DFE) is answered
    # from the remote's prediction, which also says the line goes down.
    c.check(on_checks["predicted DSTAT"] >= 1 and on_checks["resample"] == 0,
            "with the mirror the level after the DSTAT read comes from its prediction (%r)" % on_checks)
    c.check(off_checks["resample"] >= 1 and off_checks["mirror"] == 0 and off_checks["predicted DSTAT"] == 0,
            "without the mirror the resample handshake tells it (%r)" % off_checks)
    for name, got in (("ring loop", on), ("epoll loop", epoll)):
        diff = [(a, b) for a, b in zip(got, off) if a != b]
        c.eq(len(got), len(off), "%s: same number of reads" % name)
        c.eq(diff[:5], [], "%s: the mirror answers every read as the remote does" % name)
    c.check(off_frames >= BURST, "without the mirror every read is a BAR_READ (%d)" % off_frames)
    c.check(on_frames < BURST // 10, "with the mirror the reads stay in the VMM (%d BAR_READ)" % on_frames)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
