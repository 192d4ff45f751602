#!/usr/bin/env python3
"""Posted BAR writes (MPQEXT POSTED_WRITES) between our VMM and our remote.

The VMM does not wait for a RET after a BAR write while the device's INTx is
down, so `writel DSP` returns before the remote has even started the SCRIPTS
it launches. What must still hold:
- a qtest read of guest RAM right after the write sees everything the write
  made the device do (the VMM fences the socket before touching RAM): here a
  1 MiB SCRIPTS memory move into RAM the remote never touched, which takes
  milliseconds, read back at once without polling the controller first;
- register accesses after posted writes see them in order;
- with x-posted-writes=off, and with a stock remote (which is never offered
  the feature), the same sequence works with synchronous writes.
The remote's log says which features were negotiated."""
import base64
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402

SRC, DST, SIZE = 0x400000, 0x800000, 1 << 20


def remote_log(tmp):
    with open(os.path.join(tmp, "remote0.log"), "rb") as f:
        return f.read().decode(errors="replace")


def scenario(c, label, q):
    slot = q.find(R.LSI_VENDOR, R.LSI_DEVICE)[0]
    R.program_bars(q, slot)
    # Register writes, posted or not, land in order before the next read.
    for v in (0x11111111, 0x22222222, 0x33333333):
        q.writel(R.MMIO_BASE + R.SCRATCHA, v)
    c.eq(q.readl(R.MMIO_BASE + R.SCRATCHA), 0x33333333, "%s: last of three writes wins" % label)

    pattern = bytes((i * 13 + 5) & 0xFF for i in range(4096)) * (SIZE // 4096)
    for off in range(0, SIZE, 64 << 10):
        chunk = pattern[off:off + (64 << 10)]
        q.cmd("b64write 0x%x 0x%x %s" % (SRC + off, len(chunk), base64.b64encode(chunk).decode()))
    q.cmd("memset 0x%x 0x%x 0" % (DST, SIZE))
    q.write(R.INT_SCRIPT_AT, struct.pack("<III", 0xC0000000 | SIZE, SRC, DST) + R.int_script(0x5151))
    q.writel(R.MMIO_BASE + R.DSP, R.INT_SCRIPT_AT)
    # No ISTAT poll in between: the RAM read itself must wait for the move.
    tail = bytes.fromhex(q.cmd("read 0x%x 0x100" % (DST + SIZE - 0x100))[2:])
    c.eq(tail, pattern[-0x100:], "%s: RAM read right after the DSP write sees the whole move" % label)
    got = b"".join(base64.b64decode(q.cmd("b64read 0x%x 0x%x" % (DST + off, 64 << 10)))
                   for off in range(0, SIZE, 64 << 10))
    c.check(got == pattern, "%s: all 1 MiB moved" % label)
    c.check(q.readb(R.MMIO_BASE + R.ISTAT0) & R.ISTAT_DIP, "%s: DIP after the move" % label)
    q.readb(R.MMIO_BASE + R.DSTAT)
    c.eq(q.readl(R.MMIO_BASE + R.DSPS), 0x5151, "%s: SCRIPTS ended at the INT" % label)


def run(c, tmp, disk, remote_argv, props, label, want_features):
    rig = R.Rig(tmp, remotes=[(remote_argv, ["lsi0"])], proxy="pci-proxy-dev",
                proxy_props=",x-resample-wait-us=200000" + props, mem_mb=64)
    try:
        scenario(c, label, rig.q)
    finally:
        rig.stop()
    if want_features is not None:
        c.check("MPQEXT v1 negotiated, features %s" % want_features in remote_log(tmp),
                "%s: remote negotiated features %s" % (label, want_features))


def main():
    c = R.Checker()
    for name, props, feats in (("posted", "", "0x7"), ("synchronous", ",x-posted-writes=off", "0x5")):
        tmp = R.tmpdir("mpq-posted-")
        disk = R.make_disk(os.path.join(tmp, "d.img"), 4)
        run(c, tmp, disk, R.our_remote_argv([("lsi0", disk)]), props, "our remote, " + name, feats)
    tmp = R.tmpdir("mpq-posted-")
    disk = R.make_disk(os.path.join(tmp, "d.img"), 4)
    run(c, tmp, disk, R.stock_remote_argv(R.stock_qemu(), disk), "", "stock remote", None)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
