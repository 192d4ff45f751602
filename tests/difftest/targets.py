"""The setups a differential program runs on, and what is observed of them.

Every setup is a running set of processes with an lsi53c895a at BAR addresses
we assign, two scsi-hd disks (targets 0 and 3, each on its own copy of a
master image) and guest RAM the device can DMA into.  A setup is started once
and reused: `reset()` brings it back to the state a program starts from,
`snapshot()` records everything a driver can observe.
"""
import base64
import hashlib
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def shared_dir():
    d = os.environ.get("MPQ_SHARED_DIR") or os.path.join(ROOT, "..", "shared")
    return os.path.abspath(d)


BENCH_DIR = os.path.join(shared_dir(), "tools", "qtest-bench")
sys.path.insert(0, BENCH_DIR)
try:
    from qtest import QTest  # noqa: E402
except ImportError:
    QTest = None

IO_BASE = 0xC000
MMIO_BASE = 0xE0000000
RAM_BASE = 0xE0002000      # SCRIPTS RAM (BAR2, 8 KiB)
RAM_SIZE = 0x2000
# Guest memory a program may touch; cleared before and read back after it.
WIN_BASE = 0x00100000
WIN_SIZE = 0x00100000
MEM_MB = 64
DISK_SECTORS = 4096        # 2 MiB per disk
DISK_TARGETS = (0, 3)
IRQ_LINE = 11

# Registers whose read changes the chip: left out of the sweep, read once
# in this order at the end.
RTC_OFFS = (0x0C, 0x1A, 0x42, 0x43)

SETUPS = ("stock", "ours-remote", "ours-stockproxy", "ours-inproc")
REFERENCE = "stock"


def build_dir():
    return os.path.abspath(os.environ.get("MPQ_BUILD_DIR") or os.path.join(ROOT, "build"))


def stock_qemu():
    return os.environ.get("QEMU") or shutil.which("qemu-system-x86_64")


def make_master(path):
    """A deterministic disk pattern: sector n holds n and a hash stream."""
    with open(path, "wb") as f:
        for n in range(DISK_SECTORS):
            h = hashlib.sha256(b"%d" % n).digest()
            f.write((n.to_bytes(4, "little") + h[:12]) * 32)


def _disk_args(disks, bus, style):
    out = []
    for i, (t, d) in enumerate(zip(DISK_TARGETS, disks)):
        if style == "stock":
            drive = "if=none,id=drive%d,file=%s,format=raw,cache=writeback,aio=threads" % (i, d)
        else:
            drive = "if=none,id=drive%d,file=%s,format=raw" % (i, d)
        out += ["-drive", drive,
                "-device", "scsi-hd,id=sd%d,drive=drive%d,bus=%s.0,scsi-id=%d,lun=0" % (i, i, bus, t)]
    return out


class Setup:
    def __init__(self, name, tmp, master):
        self.name = name
        self.tmp = tmp
        self.master = master
        self.procs = []
        self.logs = []
        self.disks = []
        for t in DISK_TARGETS:
            d = os.path.join(tmp, "%s-t%d.img" % (name, t))
            shutil.copyfile(master, d)
            self.disks.append(d)
        self.irq_visible = name in ("stock", "ours-remote", "ours-inproc")
        self.q = None
        self.ram_dirty = True
        self._start()

    # ------------------------------------------------------------ processes
    def _spawn(self, argv, pass_fds, tag):
        log = open(os.path.join(self.tmp, "%s-%s.log" % (self.name, tag)), "wb")
        self.logs.append(log)
        p = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def _start(self):
        qemu = stock_qemu()
        vmm = os.path.join(build_dir(), "mpqemu-system-x86_64")
        remote = os.path.join(build_dir(), "qemu-scsi-dev")
        sock = os.path.join(self.tmp, "qtest-%s.sock" % self.name)
        self.q = QTest.listen(sock)
        mem = ["-m", "%dM" % MEM_MB, "-nodefaults", "-display", "none",
               "-object", "memory-backend-memfd,id=mem0,size=%dM,share=on" % MEM_MB,
               "-qtest", "unix:" + sock, "-qtest-log", "none"]
        stock_main = [qemu, "-machine", "pc,memory-backend=mem0", "-accel", "tcg", "-S"] + mem
        our_main = [vmm, "-machine", "pc,memory-backend=mem0", "-accel", "qtest"] + mem
        pass_fds = []
        if self.name == "stock":
            argv = stock_main + ["-device", "lsi53c895a,id=lsi0"] + _disk_args(self.disks, "lsi0", "stock")
        elif self.name == "ours-inproc":
            argv = our_main + ["-device", "lsi53c895a,id=lsi0"] + _disk_args(self.disks, "lsi0", "ours")
        else:
            ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            rargv = [remote, str(rs.fileno()), "-device", "lsi53c895a,id=lsi0"] + \
                _disk_args(self.disks, "lsi0", "ours")
            self._spawn(rargv, [rs.fileno()], "remote")
            rs.close()
            base = our_main if self.name == "ours-remote" else stock_main
            argv = base + ["-device", "x-pci-proxy-dev,id=lsi0,fd=%d" % ms.fileno()]
            pass_fds = [ms.fileno()]
            self._ms = ms
        self.argv = argv
        main = self._spawn(argv, pass_fds, "main")
        if pass_fds:
            self._ms.close()
        self.q.accept(timeout=60, proc=main)
        self.q.cmd("endianness")
        self.slot = self._find()
        if self.irq_visible:
            self.q.irq_intercept_in("ioapic")

    def _find(self):
        for slot in range(32):
            self.q.outl(0xCF8, 0x80000000 | (slot << 11))
            if self.q.inl(0xCFC) == 0x00121000:
                return slot
        raise RuntimeError("%s: no lsi53c895a on bus 0" % self.name)

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def stop(self):
        if self.q:
            self.q.close()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.logs:
            f.close()

    # ------------------------------------------------------------ helpers
    def cfg_addr(self, off):
        return 0x80000000 | (self.slot << 11) | (off & 0xFC)

    def cfg_write(self, off, size, val):
        self.q.outl(0xCF8, self.cfg_addr(off))
        port = 0xCFC + (off & 3)
        self.q.cmd("out%s 0x%x 0x%x" % ("bwl"[size >> 1], port, val))

    def cfg_read(self, off, size):
        self.q.outl(0xCF8, self.cfg_addr(off))
        port = 0xCFC + (off & 3)
        return int(self.q.cmd("in%s 0x%x" % ("bwl"[size >> 1], port)), 16)

    def program_bars(self):
        self.cfg_write(0x10, 4, IO_BASE)
        self.cfg_write(0x14, 4, MMIO_BASE)
        self.cfg_write(0x18, 4, RAM_BASE)
        self.cfg_write(0x04, 2, 0x7)
        for i in range(4):   # PIIX3 PIRQ routing: INTA..D -> IRQ 11
            self.q.outl(0xCF8, 0x80000000 | (1 << 11) | 0x60)
            self.q.outb(0xCFC + i, IRQ_LINE)

    def restore_disks(self):
        with open(self.master, "rb") as f:
            m = f.read()
        for d in self.disks:
            with open(d, "r+b") as f:
                if f.read() != m:
                    f.seek(0)
                    f.write(m)
                    f.flush()

    def reset(self):
        """Power-on-like state: system reset (PCI reset of the device),
        BARs assigned, SCRIPTS RAM and the memory window zeroed, SFBR 0,
        disks back to the master image, unit attentions consumed alike."""
        q = self.q
        q.outb(0xCF9, 0x06)
        q.cmd("endianness")
        self.program_bars()
        # A chip reset keeps the ADDER (last JUMP target), which the host
        # cannot write: one JUMP to a fixed address sets it alike on every
        # setup, then a second reset clears what that script left.
        at = WIN_BASE + WIN_SIZE - 0x10
        # Stock QEMU's scsi-hd keeps its last sense data across a reset, and
        # REQUEST SENSE right after a reset answers from it when it was a
        # unit attention: a program would start from what the one before it
        # left. An INQUIRY to each disk (which leaves the reset's unit
        # attention pending) clears it on every setup. Before the JUMP
        # below, which sets ADDER last.
        self._inquire_disks(at - 0x400)
        q.readb(MMIO_BASE + 0x0C)     # DSTAT: its DIP is read and cleared
        q.write(at, struct.pack("<IIII", 0x80080000, at + 8, 0x98080000, 0))
        q.writel(MMIO_BASE + 0x2C, at)
        self._wait_dip("the ADDER script")
        q.outb(0xCF9, 0x06)
        q.cmd("endianness")
        self.program_bars()
        q.memset(WIN_BASE, WIN_SIZE, 0)
        if self.ram_dirty:
            q.memset(RAM_BASE, RAM_SIZE, 0)
            self.ram_dirty = False
        q.writeb(MMIO_BASE + 0x08, 0)   # SFBR survives a chip reset
        self.restore_disks()
        q.irq_events.clear()

    def _wait_dip(self, what):
        """Until ISTAT shows an interrupt: the tester's own scripts end in
        one. A time bound only against a hang (then the run stops)."""
        end = time.monotonic() + 60
        while not self.q.readb(MMIO_BASE + 0x14) & 3:
            if time.monotonic() > end:
                raise RuntimeError("%s: %s did not finish" % (self.name, what))
            time.sleep(0.0002)

    def _inquire_disks(self, base):
        """INQUIRY (LUN 0, no disconnect) to every disk target, one SCRIPTS
        program; waits for its final INT."""
        q = self.q
        msg, cdb, buf = base + 0x200, base + 0x210, base + 0x240
        q.write(msg, bytes([0x80]))
        q.write(cdb, bytes([0x12, 0, 0, 0, 36, 0]))
        words = []
        for t in DISK_TARGETS:
            words += [0x41000000 | (t << 16), 0,          # SELECT ATN t
                      0x0E000001, msg,                    # MOVE 1, MSG OUT
                      0x0A000006, cdb,                    # MOVE 6, COMMAND
                      0x09000024, buf,                    # MOVE 36, DATA IN
                      0x0B000001, buf + 0x30,             # MOVE 1, STATUS
                      0x0F000001, buf + 0x38,             # MOVE 1, MSG IN
                      0x60000040, 0,                      # CLEAR ACK
                      0x48000000, 0]                      # WAIT DISCONNECT
        words += [0x98080000, 0x1D1E]                     # INT
        # A failed selection jumps to the final INT as well (alternate address).
        end = base + 4 * (len(words) - 2)
        for i in range(0, len(words) - 2, 16):
            words[i + 1] = end
        q.write(base, b"".join(w.to_bytes(4, "little") for w in words))
        q.writel(MMIO_BASE + 0x2C, base)
        self._wait_dip("the INQUIRY script")
        st = q.memread(buf + 0x30, 1)[0]
        if st != 0:
            raise RuntimeError("%s: INQUIRY after reset ended with status 0x%02x" % (self.name, st))

    def poll_irq(self):
        if not self.irq_visible:
            return None
        # Remote setups deliver the line asynchronously (the device raises
        # its irqfd before it answers the access that showed the interrupt,
        # the VMM forwards it from its event loop): two more round trips
        # through that loop and a short wait let it arrive.
        if self.name != "stock":
            self.q.cmd("endianness")
            self.q.cmd("endianness")
        self.q.poll_async(0.002)
        return self.q.irq_level.get(IRQ_LINE, 0)

    # ------------------------------------------------------------ observe
    def snapshot(self, mem_ranges=((WIN_BASE, WIN_SIZE),), ram=True):
        """Everything a driver can observe, as a dict of comparable items.
        `ram`: read SCRIPTS RAM back (8 KiB of BAR reads; skipped for
        programs that cannot reach it)."""
        q = self.q
        snap = {}
        snap["irq-before-reads"] = self.poll_irq()
        # Register sweep through both BARs at every access size, leaving out
        # any access that covers a read-to-clear register.
        lines, keys = [], []
        for bar, base, rd in (("mmio", MMIO_BASE, "read"), ("io", IO_BASE, "in")):
            for size, suf in ((1, "b"), (2, "w"), (4, "l")):
                for off in range(0, 256, size):
                    if any(o in RTC_OFFS for o in range(off, off + size)):
                        continue
                    lines.append("%s%s 0x%x" % (rd, suf, base + off))
                    keys.append("%s%d@%02x" % (bar, size, off))
        # The upper mirrors of the MMIO BAR and an unaligned dword.
        for off in (0x100, 0x234, 0x310, 0x3FC):
            lines.append("readl 0x%x" % (MMIO_BASE + off))
            keys.append("mmio4@%03x" % off)
        lines.append("readl 0x%x" % (MMIO_BASE + 0x35))
        keys.append("mmio4@35u")
        vals = q.cmd_batch(lines)
        for k, v in zip(keys, vals):
            snap["reg:" + k] = int(v, 16)
        # Read-to-clear registers in one fixed order (a dword at DSTAT,
        # a word at SIST0, CTEST2, then again to see them cleared).
        rtc = ["readl 0x%x" % (MMIO_BASE + 0x0C), "readw 0x%x" % (MMIO_BASE + 0x42),
               "readb 0x%x" % (MMIO_BASE + 0x1A), "readb 0x%x" % (MMIO_BASE + 0x14),
               "inl 0x%x" % (IO_BASE + 0x0C), "inw 0x%x" % (IO_BASE + 0x42),
               "inb 0x%x" % (IO_BASE + 0x1A), "inb 0x%x" % (IO_BASE + 0x14)]
        for i, v in enumerate(q.cmd_batch(rtc)):
            snap["rtc:%d:%s" % (i, rtc[i].split()[0])] = int(v, 16)
        snap["irq-after-reads"] = self.poll_irq()
        # PCI configuration space.
        cfg = []
        for off in range(0, 256, 4):
            cfg += ["outl 0xcf8 0x%x" % self.cfg_addr(off), "inl 0xcfc"]
        vals = q.cmd_batch(cfg)
        for i, off in enumerate(range(0, 256, 4)):
            snap["cfg@%02x" % off] = int(vals[2 * i + 1], 16)
        if ram:
            snap["scripts-ram"] = q.b64read(RAM_BASE, RAM_SIZE)
            self.ram_dirty = True
        for a, n in mem_ranges:
            snap["mem@%x" % a] = q.memread(a, n)
        for t, d in zip(DISK_TARGETS, self.disks):
            with open(d, "rb") as f:
                snap["disk-t%d" % t] = hashlib.sha256(f.read()).hexdigest()
        return snap


def start_setups(names, tmp):
    master = os.path.join(tmp, "master.img")
    if not os.path.exists(master):
        make_master(master)
    out = {}
    for n in names:
        out[n] = Setup(n, tmp, master)
    return out


def available_setups():
    """The setups this machine can run (stock QEMU and our build present)."""
    have_stock = bool(stock_qemu())
    have_ours = os.path.exists(os.path.join(build_dir(), "mpqemu-system-x86_64")) and \
        os.path.exists(os.path.join(build_dir(), "qemu-scsi-dev"))
    out = []
    for n in SETUPS:
        if n in ("stock", "ours-stockproxy") and not have_stock:
            continue
        if n != "stock" and not have_ours:
            continue
        out.append(n)
    return out
