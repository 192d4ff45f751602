"""A VMM + remote pair driven over qtest, for fault and sandbox tests.

The VMM is stock qemu-system-x86_64 with x-pci-proxy-dev (the well-known
peer); the remote is our qemu-scsi-dev (or stock QEMU's x-remote, to check a
test against the reference). The LSI SCRIPTS driver comes from
$MPQ_SHARED_DIR/tools/qtest-bench (lsi_bench.py); tests skip (77) without it.

Every SCSI command is one SCRIPTS program in guest RAM; a command whose
script ends with the DONE vector and status GOOD is "acknowledged".
"""
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


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(SKIP)


def _import_bench():
    shared = os.environ.get("MPQ_SHARED_DIR", "")
    bench = os.path.join(shared, "tools", "qtest-bench")
    if not os.path.exists(os.path.join(bench, "lsi_bench.py")):
        skip("MPQ_SHARED_DIR/tools/qtest-bench not found")
    sys.dont_write_bytecode = True
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import lsi_bench  # noqa: E402
    import qtest  # noqa: E402
    return lsi_bench, qtest


lb, qt = _import_bench()

QEMU = shutil.which("qemu-system-x86_64")
MEM_MB = 64
BUF = 0x00400000            # data buffers in guest RAM
SLOT = 0x00200000           # the one script slot


def build_dir():
    return os.environ.get("MPQ_BUILD_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")


def remote_binary():
    p = os.path.join(build_dir(), "qemu-scsi-dev")
    return p if os.access(p, os.X_OK) else None


def vmm_binary():
    p = os.path.join(build_dir(), "mpqemu-system-x86_64")
    return p if os.access(p, os.X_OK) else None


def need_peers():
    if not QEMU:
        skip("qemu-system-x86_64 not installed")
    if not remote_binary():
        skip("qemu-scsi-dev not built")


def make_raw(path, mib, pattern=b"\0"):
    with open(path, "wb") as f:
        if pattern == b"\0":
            f.truncate(mib << 20)
        else:
            f.write((pattern * ((1 << 20) // len(pattern) + 1))[: 1 << 20] * mib)


def make_qcow2(path, mib):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "%dM" % mib], check=True)


def make_disk(path, fmt, mib):
    """An empty image of `mib` MiB, raw or qcow2."""
    if fmt == "raw":
        make_raw(path, mib)
    else:
        make_qcow2(path, mib)


def children(sup):
    """(pid, comm) of the live children of `sup` (zombies left out)."""
    try:
        with open("/proc/%d/task/%d/children" % (sup, sup)) as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return []
    out = []
    for k in kids:
        try:
            with open("/proc/%d/comm" % k) as f:
                name = f.read().strip()
            with open("/proc/%d/stat" % k) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # dead, not reaped yet
        except OSError:
            continue
        out.append((k, name))
    return out


def worker_pid(sup):
    """The -x-worker supervisor's worker child (its other children are the
    spawner, mpq-spawner, the spare worker, mpq-spare, and with pidns=on the
    namespace's init, mpq-pidns-init), or None between workers."""
    for k, name in children(sup):
        if name not in ("mpq-spawner", "mpq-spare", "mpq-pidns-init"):
            return k
    return None


def qemu_img_check(path):
    """(clean, text): clean if no corruption (leaked clusters are allowed)."""
    p = subprocess.run(["qemu-img", "check", "--output=human", path],
                       capture_output=True, text=True)
    # 0 = clean, 3 = leaks only; 2 = corruption, 1 = could not check
    return p.returncode in (0, 3), p.stdout + p.stderr


class Rig:
    """Starts remote + VMM; `lsi` is lsi_bench's driver once start() ran."""

    def __init__(self, tmp, disk, fmt="raw", remote="ours", remote_args=(), drive_opts="",
                 env=None, vmm="stock", drive=None, vmm_args=()):
        self.tmp, self.disk, self.fmt = tmp, disk, fmt
        self.kind = remote
        # "stock": qemu-system-x86_64 with x-pci-proxy-dev; "ours":
        # mpqemu-system-x86_64 with pci-proxy-dev (qtest accelerator).
        self.vmm_kind = vmm
        # A whole -drive value instead of the one built from disk/fmt.
        self.drive = drive
        self.remote_args = list(remote_args)
        self.vmm_args = list(vmm_args)
        self.drive_opts = drive_opts
        self.env = env
        self.vmm = self.remote = None
        self.q = None
        self.remote_log = os.path.join(tmp, "remote.log")
        self.vmm_log = os.path.join(tmp, "vmm.log")

    def remote_cmd(self, fd):
        drive = self.drive or "id=d0,file=%s,format=%s,if=none%s" % (
            self.disk, self.fmt, self.drive_opts)
        if self.kind == "stock":
            return [QEMU, "-machine", "x-remote", "-nodefaults", "-display", "none",
                    "-device", "lsi53c895a,id=lsi0", "-drive", drive,
                    "-device", "scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0,lun=0",
                    "-object", "x-remote-object,id=robj0,devid=lsi0,fd=%d" % fd]
        return [remote_binary(), str(fd), "-device", "lsi53c895a,id=lsi0", "-drive", drive,
                "-device", "scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0,lun=0"] + self.remote_args

    def start(self, extra_pass_fds=()):
        sock = os.path.join(self.tmp, "qtest.sock")
        self.q = qt.QTest.listen(sock)
        ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._rlog = open(self.remote_log, "wb")
        self._vlog = open(self.vmm_log, "wb")
        self.remote = subprocess.Popen(self.remote_cmd(rs.fileno()),
                                       pass_fds=[rs.fileno()] + list(extra_pass_fds),
                                       stdin=subprocess.DEVNULL, stdout=self._rlog,
                                       stderr=subprocess.STDOUT, env=self.env)
        common = ["-machine", "pc,memory-backend=mem0", "-m", "%dM" % MEM_MB,
                  "-object", "memory-backend-memfd,id=mem0,size=%dM,share=on" % MEM_MB,
                  "-nodefaults", "-display", "none", "-qtest", "unix:" + sock,
                  "-qtest-log", "none"]
        if self.vmm_kind == "ours":
            vmm = [vmm_binary(), "-accel", "qtest"] + common + [
                "-device", "pci-proxy-dev,id=lsi0,socket=%d" % ms.fileno()] + self.vmm_args
        else:
            vmm = [QEMU, "-accel", "tcg", "-S"] + common + [
                "-device", "x-pci-proxy-dev,id=lsi0,fd=%d" % ms.fileno()]
        self.vmm = subprocess.Popen(vmm, pass_fds=[ms.fileno()], stdin=subprocess.DEVNULL,
                                    stdout=self._vlog, stderr=subprocess.STDOUT)
        ms.close()
        rs.close()
        self.q.accept(timeout=60, proc=self.vmm)
        self.q.cmd("endianness")
        pci = self.pci = lb.PCI(self.q)
        bdf = self.bdf = pci.find(0x1000, 0x0012)
        if bdf is None:
            raise AssertionError("lsi53c895a not found; remote log:\n" + self.log("remote"))
        bars = pci.size_bars(bdf)
        pci.assign(bdf, bars, lb.IO_BASE, lb.MMIO_BASE)
        by = {b["index"]: b for b in bars}
        self.lsi = lb.LSI(self.q, by[0]["addr"], by[1]["addr"], by[2]["addr"])
        # Consume the power-on UNIT ATTENTION.
        for _ in range(8):
            if self.scsi(bytes(6), 0)[0] == 0:
                break
        else:
            raise AssertionError("TEST UNIT READY never GOOD")
        return self

    # ----------------------------------------------------------------- SCSI
    def scsi(self, cdb, data_len, buf=BUF, timeout=20.0):
        """Runs one command. Returns (status byte, vector) — status 0xFF means
        the script never reached the status phase."""
        img = lb.scsi_command_script(SLOT, 0, len(cdb), data_len, buf)
        self.q.memwrite(SLOT, bytes(lb.slot_with_cdb(img, cdb)))
        self.lsi.start(SLOT)
        ist, dstat, s0, s1, dsps = self.lsi.wait_int(timeout)
        status = self.q.memread(SLOT + 0x120, 1)[0]
        return status, dsps if (dstat & lb.DSTAT_SIR) else None

    def write_blocks(self, lba, data, timeout=20.0):
        assert len(data) % 512 == 0
        self.q.memwrite(BUF, data)
        st, vec = self.scsi(lb.cdb_rw10(True, lba, len(data) // 512), len(data), timeout=timeout)
        return st == 0 and vec == lb.VEC_DONE, st

    def read_blocks(self, lba, nblk, timeout=20.0):
        self.q.memset(BUF, nblk * 512, 0xEE)
        st, vec = self.scsi(lb.cdb_rw10(False, lba, nblk), nblk * 512, timeout=timeout)
        ok = st == 0 and vec == lb.VEC_DONE
        return ok, st, (self.q.memread(BUF, nblk * 512) if ok else None)

    def sync_cache(self):
        st, vec = self.scsi(bytes([0x35]) + bytes(9), 0)
        return st == 0 and vec == lb.VEC_DONE

    def request_sense(self):
        self.q.memset(BUF, 18, 0)
        st, vec = self.scsi(bytes([0x03, 0, 0, 0, 18, 0]), 18)
        return self.q.memread(BUF, 18)

    # ---------------------------------------------------------- processes
    def vmm_alive(self):
        """The VMM answers qtest (its main loop runs)."""
        if self.vmm.poll() is not None:
            return False
        try:
            self.q.cmd("endianness")
            return True
        except Exception:
            return False

    def wait_remote_exit(self, timeout=15.0):
        try:
            return self.remote.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self, which):
        path = self.remote_log if which == "remote" else self.vmm_log
        for f in (self._rlog, self._vlog):
            if not f.closed:
                f.flush()
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.q:
            self.q.close()
            self.q = None
        for p in (self.vmm, self.remote):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for f in (getattr(self, "_rlog", None), getattr(self, "_vlog", None)):
            if f:
                f.close()


def pattern(lba, gen, nblk=1):
    """512-byte blocks that name their LBA and generation."""
    out = b""
    for i in range(nblk):
        head = struct.pack("<QQ", lba + i, gen)
        out += (head * 32)
    return out


def file_blocks(path, lba, nblk):
    with open(path, "rb") as f:
        return os.pread(f.fileno(), nblk * 512, lba * 512)


def require_writes(rig):
    """Skips (77) when a plain WRITE(10) does not complete on this build: the
    fault tests need acknowledged writes. The reason is printed."""
    ok, st = rig.write_blocks(2047, pattern(2047, 0xAB, 1))
    if not ok:
        log = rig.log("remote")
        rig.stop()
        skip("WRITE(10) through qemu-scsi-dev does not complete (status 0x%02x): "
             "the write path is broken in this build; remote log:\n%s" % (st, log))


class TmpDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="mpq-fault-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def main(fn):
    """Runs fn(); prints the failure and exits 1 on AssertionError."""
    try:
        fn()
    except AssertionError as e:
        print("FAIL:", e)
        sys.exit(1)
    print("PASS")
    sys.exit(0)
