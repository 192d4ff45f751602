"""Helpers for the VMM integration tests (test_vmm_*.py): start our VMM
(mpqemu-system-x86_64) with remotes (stock QEMU x-remote or our
qemu-scsi-dev) or an in-process controller, talk qtest to it (with the
asynchronous IRQ lines), and drive the LSI53C895A a little.
Python 3 stdlib only."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77
LSI_VENDOR, LSI_DEVICE = 0x1000, 0x0012
IO_BASE, MMIO_BASE, RAM_BAR_BASE = 0xC000, 0xE0000000, 0xE0002000
# LSI registers
DSTAT, ISTAT0, DSP, DSPS, SCRATCHA, DIEN = 0x0C, 0x14, 0x2C, 0x30, 0x34, 0x39
ISTAT_DIP, DSTAT_SIR = 0x01, 0x04


def build_dir():
    d = os.environ.get("MPQ_BUILD_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
    return os.path.abspath(d)


def program(name):
    p = os.path.join(build_dir(), name)
    if not os.path.exists(p):
        print("SKIP: %s not built" % p)
        sys.exit(SKIP)
    return p


def stock_qemu():
    q = os.environ.get("QEMU") or shutil.which("qemu-system-x86_64")
    if not q:
        print("SKIP: stock qemu-system-x86_64 not installed")
        sys.exit(SKIP)
    return q


class QTestError(RuntimeError):
    pass


class QTest:
    """qtest client: we listen, the VMM connects (-qtest unix:PATH)."""

    def __init__(self, path):
        self.path = path
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ls.bind(path)
        self.ls.listen(1)
        self.sock = None
        self.buf = b""
        self.events = []          # ('raise'|'lower', n) in arrival order
        self.level = {}

    def accept(self, proc, timeout=60):
        self.ls.settimeout(0.2)
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock, _ = self.ls.accept()
                break
            except socket.timeout:
                if proc.poll() is not None:
                    raise QTestError("VMM exited (rc=%s) before connecting" % proc.returncode)
                if time.monotonic() > end:
                    raise QTestError("VMM never connected")
        self.ls.close()
        os.unlink(self.path)
        self.sock.settimeout(60)

    def _line(self):
        while b"\n" not in self.buf:
            c = self.sock.recv(65536)
            if not c:
                raise QTestError("qtest connection closed")
            self.buf += c
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def _irq(self, line):
        _, what, n = line.split()
        self.events.append((what, int(n)))
        self.level[int(n)] = 1 if what == "raise" else 0

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\n")
        while True:
            line = self._line()
            if line.startswith("IRQ "):
                self._irq(line)
                continue
            if line.startswith("OK"):
                return line[2:].strip()
            raise QTestError("%s -> %s" % (text, line))

    def poll_irqs(self, wait=0.0):
        """Collect IRQ lines that arrived without a request."""
        end = time.monotonic() + wait
        while True:
            self.sock.settimeout(max(0.0, end - time.monotonic()))
            try:
                c = self.sock.recv(65536)
                if not c:
                    raise QTestError("qtest connection closed")
                self.buf += c
            except (socket.timeout, BlockingIOError):
                break
            finally:
                self.sock.settimeout(60)
        while b"\n" in self.buf:
            line = self._line()
            if not line.startswith("IRQ "):
                raise QTestError("unexpected line %r" % line)
            self._irq(line)

    def outl(self, p, v): self.cmd("outl 0x%x 0x%x" % (p, v))
    def outw(self, p, v): self.cmd("outw 0x%x 0x%x" % (p, v))
    def outb(self, p, v): self.cmd("outb 0x%x 0x%x" % (p, v))
    def inl(self, p): return int(self.cmd("inl 0x%x" % p), 16)
    def inw(self, p): return int(self.cmd("inw 0x%x" % p), 16)
    def inb(self, p): return int(self.cmd("inb 0x%x" % p), 16)
    def readl(self, a): return int(self.cmd("readl 0x%x" % a), 16)
    def readb(self, a): return int(self.cmd("readb 0x%x" % a), 16)
    def writel(self, a, v): self.cmd("writel 0x%x 0x%x" % (a, v))
    def writeb(self, a, v): self.cmd("writeb 0x%x 0x%x" % (a, v))
    def write(self, a, data): self.cmd("write 0x%x 0x%x 0x%s" % (a, len(data), data.hex()))
    def read(self, a, n): return bytes.fromhex(self.cmd("read 0x%x 0x%x" % (a, n))[2:])

    # PCI config mechanism #1, bus 0
    @staticmethod
    def _ca(slot, off, fn=0):
        return 0x80000000 | (slot << 11) | (fn << 8) | (off & 0xFC)

    def cfg_readl(self, slot, off, fn=0):
        self.outl(0xCF8, self._ca(slot, off, fn))
        return self.inl(0xCFC)

    def cfg_readw(self, slot, off):
        self.outl(0xCF8, self._ca(slot, off))
        return self.inw(0xCFC + (off & 2))

    def cfg_writel(self, slot, off, v):
        self.outl(0xCF8, self._ca(slot, off))
        self.outl(0xCFC, v)

    def cfg_writew(self, slot, off, v):
        self.outl(0xCF8, self._ca(slot, off))
        self.outw(0xCFC + (off & 2), v)

    def cfg_writeb(self, slot, off, v, fn=0):
        self.outl(0xCF8, self._ca(slot, off, fn))
        self.outb(0xCFC + (off & 3), v)

    def find(self, vendor, device):
        out = []
        for slot in range(32):
            v = self.cfg_readl(slot, 0)
            if v == (device << 16 | vendor):
                out.append(slot)
        return out

    def close(self):
        for s in (self.sock, self.ls):
            try:
                if s:
                    s.close()
            except OSError:
                pass


def make_disk(path, mb=8):
    with open(path, "wb") as f:
        for i in range(mb * 2048):
            f.write(struct.pack("<I", i) * 128)
    return path


class Rig:
    """One VMM plus its remote processes. `remotes` is a list of
    (argv-template, [proxy device ids]) - one socketpair each; '{fd}' in the
    template is the remote's end. `devices` adds raw VMM -device/-drive args."""

    def __init__(self, tmp, remotes=(), vmm_args=(), proxy="x-pci-proxy-dev",
                 mem_mb=64, memfd=True, proxy_props=",x-resample-wait-us=200000",
                 expect_exit=False):
        self.tmp = tmp
        self.remote_procs = []
        self.vmm = None
        self.q = None
        self.log = os.path.join(tmp, "vmm.log")
        qpath = os.path.join(tmp, "qtest-%d.sock" % os.getpid())
        self.q = QTest(qpath)
        keep = []
        args = [program("mpqemu-system-x86_64"), "-machine", "pc", "-accel", "qtest",
                "-m", "%dM" % mem_mb, "-nodefaults", "-display", "none",
                "-qtest", "unix:" + qpath, "-qtest-log", "none"]
        if memfd:
            args += ["-object", "memory-backend-memfd,id=mem0,size=%dM,share=on" % mem_mb,
                     "-machine", "memory-backend=mem0"]
        pass_fds = []
        for i, (tmpl, ids) in enumerate(remotes):
            ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            keep += [ms, rs]
            if callable(tmpl):  # a fake remote served by the test itself
                import threading
                served = socket.socket(fileno=os.dup(rs.fileno()))
                self.threads = getattr(self, "threads", [])
                t = threading.Thread(target=tmpl, args=(served,), daemon=True)
                t.start()
                self.threads.append(t)
            else:
                argv = [a.replace("{fd}", str(rs.fileno())) for a in tmpl]
                rlog = open(os.path.join(tmp, "remote%d.log" % i), "wb")
                self.remote_procs.append(subprocess.Popen(argv, pass_fds=[rs.fileno()],
                                                          stdout=rlog, stderr=subprocess.STDOUT))
                rlog.close()
            key = "fd" if proxy == "x-pci-proxy-dev" else "socket"
            for dev in ids:
                args += ["-device", "%s,id=%s,%s=%d%s" % (proxy, dev, key, ms.fileno(), proxy_props)]
            pass_fds.append(ms.fileno())
        args += list(vmm_args)
        self.argv = args
        with open(self.log, "wb") as lf:
            self.vmm = subprocess.Popen(args, pass_fds=pass_fds, stdout=lf, stderr=subprocess.STDOUT)
        for s in keep:
            s.close()
        if expect_exit:
            self.rc = self.vmm.wait(timeout=60)
            self.q.close()
            os.unlink(qpath)
            return
        try:
            self.q.accept(self.vmm)
        except QTestError:
            self.stop()
            raise
        self.q.cmd("endianness")

    def vmm_log(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.q:
            self.q.close()
        procs = ([self.vmm] if self.vmm else []) + self.remote_procs
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def stock_remote_argv(qemu, disk, devid="lsi0"):
    return [qemu, "-machine", "x-remote", "-nodefaults", "-display", "none",
            "-device", "lsi53c895a,id=%s" % devid,
            "-drive", "if=none,id=drive0,file=%s,format=raw" % disk,
            "-device", "scsi-hd,id=sd0,drive=drive0,bus=%s.0,scsi-id=0" % devid,
            "-object", "x-remote-object,id=robj0,devid=%s,fd={fd}" % devid]


def our_remote_argv(disks_by_dev):
    argv = [program("qemu-scsi-dev"), "{fd}"]
    for i, (dev, disk) in enumerate(disks_by_dev):
        argv += ["-device", "lsi53c895a,id=%s" % dev,
                 "-drive", "if=none,id=d%d,file=%s,format=raw" % (i, disk),
                 "-device", "scsi-hd,drive=d%d,bus=%s.0,scsi-id=0" % (i, dev)]
    return argv


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class Checker:
    def __init__(self):
        self.failures = []

    def check(self, cond, msg):
        if not cond:
            self.failures.append(msg)
            print("FAIL:", msg, flush=True)
        return cond

    def eq(self, got, want, msg):
        return self.check(got == want, "%s: got %r, want %r" % (msg, got, want))

    def done(self):
        if self.failures:
            print("%d check(s) failed" % len(self.failures))
            return 1
        print("all checks passed")
        return 0


# --------------------------------------------------------------- the suite
def program_bars(q, slot, io=IO_BASE, mmio=MMIO_BASE, ram=RAM_BAR_BASE):
    q.cfg_writel(slot, 0x10, io)
    q.cfg_writel(slot, 0x14, mmio)
    q.cfg_writel(slot, 0x18, ram)
    q.cfg_writew(slot, 0x04, 0x7)


def bar_sizes(q, slot):
    out = []
    for i in range(3):
        off = 0x10 + 4 * i
        orig = q.cfg_readl(slot, off)
        q.cfg_writel(slot, off, 0xFFFFFFFF)
        out.append(q.cfg_readl(slot, off))
        q.cfg_writel(slot, off, orig)
    return out


INT_SCRIPT_AT = 0x100000


def int_script(vector):
    return struct.pack("<II", 0x98080000, vector)


def device_suite(c, q, slot, label, reset=True):
    """IDs, BAR sizing, register access, BAR remapping, SCRIPTS INT with
    INTx raised/lowered, DMA, system reset. `slot` is the PCI slot."""
    c.eq(q.cfg_readl(slot, 0), 0x00121000, "%s: vendor/device" % label)
    c.eq(q.cfg_readw(slot, 0x0A), 0x0100, "%s: class" % label)
    c.eq(bar_sizes(q, slot), [0xFFFFFF01, 0xFFFFFC00, 0xFFFFE000], "%s: BAR sizing" % label)
    program_bars(q, slot)
    q.writel(MMIO_BASE + SCRATCHA, 0x5A5A1234)
    c.eq(q.readl(MMIO_BASE + SCRATCHA), 0x5A5A1234, "%s: SCRATCHA via MMIO" % label)
    c.eq(q.inl(IO_BASE + SCRATCHA), 0x5A5A1234, "%s: SCRATCHA via I/O" % label)
    q.writel(RAM_BAR_BASE + 0x40, 0xFEEDF00D)
    c.eq(q.readl(RAM_BAR_BASE + 0x40), 0xFEEDF00D, "%s: SCRIPTS RAM" % label)
    # Move the MMIO BAR: the device answers at the new address only.
    q.cfg_writel(slot, 0x14, MMIO_BASE + 0x100000)
    c.eq(q.cfg_readl(slot, 0x14), MMIO_BASE + 0x100000, "%s: moved BAR1 reads back" % label)
    c.eq(q.readl(MMIO_BASE + 0x100000 + SCRATCHA), 0x5A5A1234, "%s: SCRATCHA at moved BAR" % label)
    c.eq(q.readl(MMIO_BASE + SCRATCHA), 0, "%s: old BAR1 address no longer decodes" % label)
    q.cfg_writel(slot, 0x14, MMIO_BASE)
    c.eq(q.readl(MMIO_BASE + SCRATCHA), 0x5A5A1234, "%s: SCRATCHA after moving back" % label)
    # Memory decode off: nothing answers (and nothing is sent to the remote).
    q.cfg_writew(slot, 0x04, 0x5)
    c.eq(q.readl(MMIO_BASE + SCRATCHA), 0, "%s: MMIO with COMMAND.MEM off" % label)
    c.eq(q.inl(IO_BASE + SCRATCHA), 0x5A5A1234, "%s: I/O still decodes" % label)
    q.cfg_writew(slot, 0x04, 0x7)

    # SCRIPTS INT -> INTx -> PIRQ -> IRQ 11 -> "IRQ raise 11"; DSTAT read lowers it.
    for i in range(4):
        q.cfg_writeb(1, 0x60 + i, 11)
    q.cmd("irq_intercept_in ioapic")
    q.write(INT_SCRIPT_AT, int_script(0x3333))
    q.writeb(MMIO_BASE + DIEN, DSTAT_SIR)
    q.events.clear()
    q.writel(MMIO_BASE + DSP, INT_SCRIPT_AT)
    q.poll_irqs(0.5)
    c.check(("raise", 11) in q.events, "%s: IRQ raise 11 after INT (events %r)" % (label, q.events))
    ist = q.readb(MMIO_BASE + ISTAT0)
    c.check(ist & ISTAT_DIP, "%s: ISTAT.DIP set (0x%x)" % (label, ist))
    q.poll_irqs(0.1)
    c.eq(q.level.get(11), 1, "%s: line still up after ISTAT read" % label)
    dstat = q.readb(MMIO_BASE + DSTAT)
    c.check(dstat & DSTAT_SIR, "%s: DSTAT.SIR (0x%x)" % (label, dstat))
    q.poll_irqs(0.3)
    c.eq(q.events[-1:] if q.events else None, [("lower", 11)], "%s: IRQ lowered after DSTAT read" % label)
    c.eq(q.readl(MMIO_BASE + DSPS), 0x3333, "%s: DSPS vector" % label)
    q.writeb(MMIO_BASE + DIEN, 0)

    # DMA: a 4 KiB memory move through the shared guest RAM.
    src, dst = 0x200000, 0x300000
    data = bytes((i * 7 + 3) & 0xFF for i in range(4096))
    q.cmd("b64write 0x%x 0x%x %s" % (src, len(data), __import__("base64").b64encode(data).decode()))
    q.cmd("memset 0x%x 0x1000 0" % dst)
    q.write(INT_SCRIPT_AT, struct.pack("<III", 0xC0000000 | 4096, src, dst) + int_script(0x4444))
    q.writel(MMIO_BASE + DSP, INT_SCRIPT_AT)
    for _ in range(1000):
        if q.readb(MMIO_BASE + ISTAT0) & ISTAT_DIP:
            break
    q.readb(MMIO_BASE + DSTAT)
    c.eq(q.readl(MMIO_BASE + DSPS), 0x4444, "%s: memmove finished" % label)
    got = __import__("base64").b64decode(q.cmd("b64read 0x%x 0x1000" % dst))
    c.check(got == data, "%s: DMA copied 4 KiB through guest RAM" % label)

    if reset:
        # System reset (PIIX3 RCR): BARs and COMMAND cleared on both sides.
        q.outb(0xCF9, 0x06)
        q.cmd("endianness")
        c.eq(q.cfg_readw(slot, 0x04), 0, "%s: COMMAND after reset" % label)
        c.eq(q.cfg_readl(slot, 0x14), 0, "%s: BAR1 after reset" % label)
        c.eq(q.readl(MMIO_BASE + SCRATCHA), 0, "%s: no decode after reset" % label)
        program_bars(q, slot)
        c.eq(q.readl(MMIO_BASE + SCRATCHA), 0, "%s: SCRATCHA cleared by device reset" % label)
        q.writel(MMIO_BASE + SCRATCHA, 0x600DF00D)
        c.eq(q.readl(MMIO_BASE + SCRATCHA), 0x600DF00D, "%s: works after reset" % label)
