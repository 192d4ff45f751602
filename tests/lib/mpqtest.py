"""Shared helpers for mpqemu integration tests (Python 3 stdlib only).

- paths: build dir, our binaries, stock QEMU (skip with 77 when missing)
- Wire: the QEMU 7.2 multi-process frame format, proxy side
- QTest: a qtest server socket that QEMU connects to (-qtest unix:PATH)
- Qmp: a QMP client (QEMU listening on -qmp unix:PATH,server=on,wait=off)
- process helpers: fd counts, waiting for log lines, clean shutdown
"""
import array
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77

# ----------------------------------------------------------------- paths


def build_dir():
    d = os.environ.get("MPQ_BUILD_DIR")
    if not d:
        d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
    return os.path.abspath(d)


def program(name):
    p = os.path.join(build_dir(), name)
    if not os.path.exists(p):
        raise SystemExit("missing program %s (build it first)" % p)
    return p


def stock_qemu_or_skip():
    q = os.environ.get("QEMU") or shutil.which("qemu-system-x86_64")
    if not q:
        print("SKIP: qemu-system-x86_64 not installed")
        sys.exit(SKIP)
    return q


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


# ------------------------------------------------------------ wire format

SYNC_SYSMEM, RET, PCI_CFGWRITE, PCI_CFGREAD, BAR_WRITE, BAR_READ, SET_IRQFD, DEVICE_RESET = range(8)
SELECT_DEVICE = 64
BAR_WRITE_POSTED = 65
MIRROR_SETUP = 66
EXT_PROBE_ADDR = 0x4D50514558540001
EXT_REPLY_MAGIC = 0x4D50000000000000
FEAT_MULTIDEV = 1
FEAT_POSTED_WRITES = 2
FEAT_REG_MIRROR = 4
ALL_ONES = (1 << 64) - 1

_HDR = struct.Struct("<i4xQ")
_CONF = struct.Struct("<IIi")
_BAR = struct.Struct("<QQIB3x")
_SYSMEM = struct.Struct("<8Q8Q8q")
_U64 = struct.Struct("<Q")


class PeerClosed(Exception):
    pass


class Wire:
    """Proxy side of one socket: sends requests, reads RET replies."""

    def __init__(self, sock, timeout=20.0):
        self.sock = sock
        self.sock.settimeout(timeout)

    @staticmethod
    def header(cmd, size):
        return _HDR.pack(cmd, size)

    def send_raw(self, data, fds=()):
        anc = []
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(fds)).tobytes())]
        n = self.sock.sendmsg([data], anc)
        if n < len(data):
            self.sock.sendall(data[n:])

    def send(self, cmd, payload=b"", fds=()):
        self.send_raw(_HDR.pack(cmd, len(payload)) + payload, fds)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise PeerClosed("EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    def recv(self):
        """Returns (cmd, payload bytes)."""
        data, anc, _flags, _ = self.sock.recvmsg(16, socket.CMSG_SPACE(16 * 4))
        for level, typ, cdata in anc:  # replies never carry fds; close any
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                for fd in array.array("i", cdata[: len(cdata) - len(cdata) % 4]):
                    os.close(fd)
        if not data:
            raise PeerClosed("EOF at a frame boundary")
        if len(data) < 16:
            data += self._exact(16 - len(data))
        cmd, size = _HDR.unpack(data)
        if size > 192:
            raise RuntimeError("reply size %d" % size)
        return cmd, self._exact(size) if size else b""

    def ret(self):
        cmd, p = self.recv()
        if cmd != RET:
            raise RuntimeError("expected RET, got cmd %d" % cmd)
        if len(p) == 8:
            return _U64.unpack(p)[0]
        if len(p) == 0:
            return None
        raise RuntimeError("RET with %d bytes" % len(p))

    # requests
    def cfg_read(self, addr, length):
        self.send(PCI_CFGREAD, _CONF.pack(addr, 0, length))
        return self.ret()

    def cfg_write(self, addr, val, length):
        self.send(PCI_CFGWRITE, _CONF.pack(addr, val & 0xFFFFFFFF, length))
        return self.ret()

    def bar_read(self, addr, size, memory):
        self.send(BAR_READ, _BAR.pack(addr, 0, size, 1 if memory else 0))
        return self.ret()

    def bar_write(self, addr, val, size, memory):
        self.send(BAR_WRITE, _BAR.pack(addr, val, size, 1 if memory else 0))
        return self.ret()

    def bar_write_posted(self, addr, val, size, memory):
        """No reply comes back (POSTED_WRITES), so none is read."""
        self.send(BAR_WRITE_POSTED, _BAR.pack(addr, val, size, 1 if memory else 0))

    def reset(self):
        self.send(DEVICE_RESET)
        return self.ret()

    def set_irqfd(self, irq_fd, resample_fd):
        self.send(SET_IRQFD, b"", [irq_fd, resample_fd])

    def sync_sysmem(self, regions):
        """regions: list of (fd, gpa, size, offset)."""
        g = [0] * 8
        s = [0] * 8
        o = [0] * 8
        for i, (_fd, gpa, size, off) in enumerate(regions):
            g[i], s[i], o[i] = gpa, size, off
        self.send(SYNC_SYSMEM, _SYSMEM.pack(*(g + s + o)), [r[0] for r in regions])

    def negotiate(self, features):
        self.send(BAR_READ, _BAR.pack(EXT_PROBE_ADDR, features, 0, 0))
        return self.ret()

    def mirror_setup(self, fds, page_size=4096):
        self.send(MIRROR_SETUP, _U64.pack(page_size), fds)
        return self.ret()

    def select(self, dev_id):
        raw = dev_id.encode() if isinstance(dev_id, str) else dev_id
        self.send(SELECT_DEVICE, raw.ljust(64, b"\0")[:64])
        return self.ret()


def pack_conf(addr, val, length):
    return _CONF.pack(addr, val, length)


def pack_bar(addr, val, size, memory):
    return _BAR.pack(addr, val, size, memory)


def pack_sysmem(gpas, sizes, offsets):
    pad = lambda l: list(l) + [0] * (8 - len(l))
    return _SYSMEM.pack(*(pad(gpas) + pad(sizes) + pad(offsets)))


# ------------------------------------------------------------------- qtest


class QTest:
    """qtest: we listen, QEMU connects (-qtest unix:PATH)."""

    def __init__(self, path):
        self.path = path
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(1)
        self.sock = None
        self.buf = b""

    def accept(self, proc, timeout=60.0):
        self.lsock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock, _ = self.lsock.accept()
                break
            except socket.timeout:
                if proc.poll() is not None:
                    raise RuntimeError("QEMU exited (%s) before connecting qtest" % proc.returncode)
                if time.monotonic() > deadline:
                    raise RuntimeError("QEMU did not connect qtest")
        self.lsock.close()
        self.sock.settimeout(60.0)

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("qtest connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\n")
        while True:
            line = self._line()
            if line.startswith("IRQ"):
                continue
            if line.startswith("OK"):
                return line[2:].strip()
            raise RuntimeError("qtest %r: %s" % (text, line))

    def outl(self, port, v):
        self.cmd("outl 0x%x 0x%x" % (port, v))

    def outw(self, port, v):
        self.cmd("outw 0x%x 0x%x" % (port, v))

    def outb(self, port, v):
        self.cmd("outb 0x%x 0x%x" % (port, v))

    def inl(self, port):
        return int(self.cmd("inl 0x%x" % port), 16)

    def inw(self, port):
        return int(self.cmd("inw 0x%x" % port), 16)

    def inb(self, port):
        return int(self.cmd("inb 0x%x" % port), 16)

    def readl(self, addr):
        return int(self.cmd("readl 0x%x" % addr), 16)

    def writel(self, addr, v):
        self.cmd("writel 0x%x 0x%x" % (addr, v))

    def readb(self, addr):
        return int(self.cmd("readb 0x%x" % addr), 16)

    def writeb(self, addr, v):
        self.cmd("writeb 0x%x 0x%x" % (addr, v))

    # PCI config mechanism #1, bus 0
    def cfg_addr(self, slot, off, fn=0):
        return 0x80000000 | (slot << 11) | (fn << 8) | (off & 0xFC)

    def cfg_readl(self, slot, off):
        self.outl(0xCF8, self.cfg_addr(slot, off))
        return self.inl(0xCFC)

    def cfg_readw(self, slot, off):
        self.outl(0xCF8, self.cfg_addr(slot, off))
        return self.inw(0xCFC + (off & 2))

    def cfg_writel(self, slot, off, v):
        self.outl(0xCF8, self.cfg_addr(slot, off))
        self.outl(0xCFC, v)

    def cfg_writew(self, slot, off, v):
        self.outl(0xCF8, self.cfg_addr(slot, off))
        self.outw(0xCFC + (off & 2), v)

    def find_slot(self, vendor, device):
        for slot in range(32):
            if self.cfg_readl(slot, 0) == (device << 16) | vendor:
                return slot
        return None

    def close(self):
        for s in (self.sock, self.lsock):
            try:
                if s:
                    s.close()
            except OSError:
                pass


# --------------------------------------------------------------------- QMP


class Qmp:
    def __init__(self, path, proc=None, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError("process exited before its QMP socket appeared")
                if time.monotonic() > deadline:
                    raise RuntimeError("no QMP socket at %s" % path)
                time.sleep(0.05)
        self.sock.settimeout(60.0)
        self.buf = b""
        self.events = []
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise RuntimeError("QMP %s: %s" % (cmd, r["error"]))
            return r.get("return")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- processes


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def wait_for(pred, timeout=30.0, what="condition"):
    """Waits for pred() to become true (a bound against hangs, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


def read_file(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def stop(proc, timeout=10.0):
    """Ends a process we started (SIGTERM, then SIGKILL); returns its status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Checker:
    """Collects failures so a test reports all of them, then exits 1."""

    def __init__(self):
        self.failures = []

    def check(self, cond, msg):
        if cond:
            print("ok   " + msg)
        else:
            print("FAIL " + msg)
            self.failures.append(msg)
        return cond

    def eq(self, got, want, msg):
        return self.check(got == want, "%s (got %r, want %r)" % (msg, got, want))

    def finish(self):
        if self.failures:
            print("%d check(s) failed" % len(self.failures))
            sys.exit(1)
        print("all checks passed")
        sys.exit(0)
