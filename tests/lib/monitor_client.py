"""QMP and HMP clients for the monitor integration tests (stdlib only).

Unlike mpqtest.Qmp these keep raw access: negotiation is explicit, errors
come back as values, events are collected, and a caller can send any bytes.
"""
import array
import json
import os
import socket
import time


def connect_unix(path, proc=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(30.0)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("process exited before %s appeared" % path)
            if time.monotonic() > deadline:
                raise RuntimeError("no socket at %s" % path)
            time.sleep(0.05)


class QmpClient:
    def __init__(self, path, proc=None):
        self.sock = connect_unix(path, proc)
        self.buf = b""
        self.events = []
        self.greeting = self.read()

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.sock.sendall(data)

    def response(self):
        """Next non-event message."""
        while True:
            r = self.read()
            if "event" in r:
                self.events.append(r)
                continue
            return r

    def cmd(self, name, args=None, id=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        if id is not None:
            msg["id"] = id
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return self.response()

    def ret(self, name, **args):
        r = self.cmd(name, args if args else None)
        if "return" not in r:
            raise RuntimeError("QMP %s failed: %r" % (name, r))
        return r["return"]

    def negotiate(self):
        r = self.cmd("qmp_capabilities")
        if r != {"return": {}}:
            raise RuntimeError("negotiation failed: %r" % r)

    def wait_event(self, name, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    return e
            if time.monotonic() > deadline:
                raise AssertionError("no %s event" % name)
            self.events.append(self.read())

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class HmpClient:
    PROMPT = b"(qemu) "

    def __init__(self, path, proc=None):
        self.sock = connect_unix(path, proc)
        self.banner = self._until_prompt()

    def _until_prompt(self):
        buf = b""
        while not buf.endswith(self.PROMPT):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("HMP connection closed; got %r" % buf[-200:])
            buf += chunk
        return buf.decode(errors="replace")

    def cmd(self, line):
        """Output of one command line (echo stripped), '\\r\\n' line ends kept."""
        self.sock.sendall(line.encode() + b"\r\n")
        out = self._until_prompt()
        out = out[: -len(self.PROMPT)]
        echo = line + "\r\n"
        if out.startswith(echo):
            out = out[len(echo):]
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class RemoteRig:
    """Our qemu-scsi-dev with -monitor/-qmp unix sockets, driven by stock
    QEMU's x-pci-proxy-dev; the test holds the VMM's qtest socket.
    `qtest_cls` is the qtest-bench QTest class (listening side)."""

    def __init__(self, T, qemu, remote, tmp, disk, qtest_cls, extra_remote_args=()):
        import subprocess
        self.T = T
        self.hmp_path = os.path.join(tmp, "hmp.sock")
        self.qmp_path = os.path.join(tmp, "qmp.sock")
        self.log = os.path.join(tmp, "remote.log")
        qsock = os.path.join(tmp, "qtest.sock")
        proxy_end, remote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rfd = remote_end.fileno()
        self.remote = subprocess.Popen(
            [remote, str(rfd), "-device", "lsi53c895a,id=lsi0",
             "-drive", "id=d0,file=%s,format=raw,if=none" % disk,
             "-device", "scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0",
             "-monitor", "unix:%s,server,nowait" % self.hmp_path,
             "-qmp", "unix:%s,server,nowait" % self.qmp_path, "-D", self.log]
            + list(extra_remote_args),
            pass_fds=[rfd])
        remote_end.close()
        self.q = qtest_cls.listen(qsock)
        pfd = proxy_end.fileno()
        self.vmm = subprocess.Popen(
            [qemu, "-machine", "pc,memory-backend=mem0", "-accel", "tcg", "-S", "-m", "128M",
             "-object", "memory-backend-memfd,id=mem0,size=128M,share=on",
             "-nodefaults", "-display", "none", "-qtest", "unix:" + qsock, "-qtest-log", "none",
             "-device", "x-pci-proxy-dev,id=lsi0,fd=%d" % pfd],
            pass_fds=[pfd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proxy_end.close()
        try:
            self.q.accept(timeout=60, proc=self.vmm)
            self.q.cmd("endianness")
        except Exception:
            self.stop()
            raise

    def stop(self):
        try:
            self.q.close()
        except Exception:
            pass
        self.T.stop(self.vmm)
        self.T.stop(self.remote)


class Scsi:
    """One SCSI command at a time through the lsi53c895a SCRIPTS engine, with
    the shared qtest-bench's SCRIPTS assembler and driver (module `B`)."""

    def __init__(self, B, q):
        self.B, self.q = B, q
        pci = B.PCI(q)
        self.bdf = pci.find(0x1000, 0x0012)
        if self.bdf is None:
            raise RuntimeError("lsi53c895a not found on bus 0")
        bars = pci.assign(self.bdf, pci.size_bars(self.bdf), B.IO_BASE, B.MMIO_BASE)
        self.bars = {x["index"]: x for x in bars}
        self.lsi = B.LSI(q, self.bars[0]["addr"], self.bars[1]["addr"], self.bars[2]["addr"])

    def run(self, cdb, dlen, allow_check=False):
        B = self.B
        img = B.scsi_command_script(B.SLOT_BASE, 0, len(cdb), dlen, B.SCSI_BUF)
        self.q.memwrite(B.SLOT_BASE, bytes(B.slot_with_cdb(img, cdb)))
        self.lsi.run(B.SLOT_BASE)
        st = self.q.memread(B.SLOT_BASE + 0x120, 1)[0]
        if st != 0 and not (allow_check and st == 2):
            raise RuntimeError("SCSI status 0x%02x for cdb %s" % (st, cdb.hex()))
        return st

    def ready(self):
        for _ in range(8):
            if self.run(bytes(6), 0, allow_check=True) == 0:
                return
        raise RuntimeError("TEST UNIT READY never GOOD")


def bench_setup(T, bench_dir, tmp_prefix, disk_mb, seed):
    """The common start of the monitor tests that drive our remote through
    stock QEMU's proxy with qtest-bench: peers found (or the test skips),
    qtest-bench imported, a temp dir with a random raw disk of `disk_mb` MiB.
    Returns a namespace: qemu, remote, B (lsi_bench), QTest, chk, tmp, disk,
    rng (seeded, already used for the disk)."""
    import random
    import sys
    import types
    qemu = T.stock_qemu_or_skip()
    remote = T.program("qemu-scsi-dev")
    if not os.path.exists(os.path.join(bench_dir, "lsi_bench.py")):
        print("SKIP: qtest-bench not found under MPQ_SHARED_DIR (%s)" % bench_dir)
        sys.exit(T.SKIP)
    sys.path.insert(0, bench_dir)
    import lsi_bench as B  # noqa: E402
    from qtest import QTest  # noqa: E402
    tmp = T.tmpdir(tmp_prefix)
    disk = os.path.join(tmp, "disk.img")
    rng = random.Random(seed)
    with open(disk, "wb") as f:
        f.write(rng.randbytes(disk_mb << 20))
    return types.SimpleNamespace(qemu=qemu, remote=remote, B=B, QTest=QTest, chk=T.Checker(),
                                 tmp=tmp, disk=disk, rng=rng)


def send_fd(qmp, name, args, fd):
    """One QMP command with `fd` attached (SCM_RIGHTS), as QEMU's clients pass fds."""
    msg = json.dumps({"execute": name, "arguments": args}).encode() + b"\n"
    qmp.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    return qmp.response()


class Target:
    """SCSI commands to one target id through the qtest-bench SCRIPTS driver
    (`scsi` is a Scsi)."""

    def __init__(self, scsi, target):
        self.s, self.B, self.q, self.t = scsi, scsi.B, scsi.q, target

    def run(self, cdb, dlen):
        B = self.B
        img = B.scsi_command_script(B.SLOT_BASE, self.t, len(cdb), dlen, B.SCSI_BUF)
        self.q.memwrite(B.SLOT_BASE, bytes(B.slot_with_cdb(img, cdb)))
        self.s.lsi.run(B.SLOT_BASE)
        return self.q.memread(B.SLOT_BASE + 0x120, 1)[0]

    def sense(self):
        self.q.memset(self.B.SCSI_BUF, 18, 0)
        self.run(bytes([0x03, 0, 0, 0, 18, 0]), 18)
        d = self.q.memread(self.B.SCSI_BUF, 18)
        return (d[2] & 0x0F, d[12], d[13])

    def read(self, lba, blocks):
        st = self.run(self.B.cdb_rw10(False, lba, blocks), blocks * 512)
        return st, self.q.memread(self.B.SCSI_BUF, blocks * 512)

    def write(self, lba, data):
        self.q.memwrite(self.B.SCSI_BUF, data)
        return self.run(self.B.cdb_rw10(True, lba, len(data) // 512), len(data))

    def inquiry(self):
        """(status, peripheral qualifier/type byte) of a standard INQUIRY."""
        self.q.memset(self.B.SCSI_BUF, 36, 0)
        st = self.run(bytes([0x12, 0, 0, 0, 36, 0]), 36)
        return st, self.q.memread(self.B.SCSI_BUF, 1)[0]

    def selection_timeout(self, cdb=bytes(6), dlen=0):
        """Whether `cdb` (TEST UNIT READY unless given) ends in a selection timeout: no target."""
        try:
            self.run(cdb, dlen)
        except Exception as e:  # the SCRIPTS stop with SIST1 STO instead of finishing
            print("selection: %s" % e)
            return "SIST1=0x04" in str(e)
        return False
