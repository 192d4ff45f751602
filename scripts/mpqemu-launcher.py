#!/usr/bin/env python3
"""mpqemu-launcher: boot a real Linux guest whose SCSI controller(s) run in
separate device process(es).

With no arguments it creates a fresh qcow2 disk, starts our device process
(qemu-scsi-dev: lsi53c895a + scsi-hd) on one end of a socketpair, then stock
QEMU (qemu-system-x86_64 with memfd RAM and x-pci-proxy-dev) on the other end,
booting the bundled Debian kernel + busybox initramfs with the console on this
terminal. `poweroff` in the guest ends the run; Ctrl-C stops everything.
With --boot disk the firmware boots the first disk instead (an image with its
own boot loader and kernel).

Exit status:
   0  success (guest powered off; --self-test passed; --run command exited 0)
   1  the guest workload failed (self-test mismatch, --run command non-zero)
   2  bad usage
   3  set-up failed (missing program or guest files, disk creation)
   4  the host-side check of a disk image failed
  10  a remote (device process) failed to start
  11  a remote died while the VM ran (or exited with an error)
  12  the VMM failed to start
  13  the VMM exited with an error
  14  timeout
  15  the guest printed nothing on its console within --silent-limit seconds of
      the VMM's start (the accelerator cannot run it)
 129/130/143  stopped by SIGHUP/SIGINT/SIGTERM
"""
import argparse
import base64
import ctypes
import hashlib
import json
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import mpqemu_accel  # noqa: E402  (scripts/mpqemu_accel.py: the one accelerator decision)

EXIT_OK, EXIT_GUEST, EXIT_USAGE, EXIT_SETUP, EXIT_HOSTCHECK = 0, 1, 2, 3, 4
EXIT_REMOTE_START, EXIT_REMOTE_DIED, EXIT_VMM_START, EXIT_VMM_DIED, EXIT_TIMEOUT = 10, 11, 12, 13, 14
EXIT_SILENT_GUEST = 15
SIGNAL_EXIT = {signal.SIGHUP: 129, signal.SIGINT: 130, signal.SIGTERM: 143}

SCRIPTS = os.path.dirname(os.path.realpath(__file__))
SOURCE = os.path.dirname(SCRIPTS)
MiB = 1 << 20
STOP_GRACE = 5.0          # SIGTERM -> SIGKILL
REMOTE_EXIT_GRACE = 10.0  # remotes exit by themselves once the VMM closed its socket ends
MAX_DISKS_PER_CONTROLLER = 7  # SCSI ids 0..6; 7 is the controller
# Stock x-pci-proxy-dev forwards INTx only through a KVM irqfd; under TCG the
# guest polls instead (see mpqemu_accel).
TCG_IRQ_WORKAROUND = mpqemu_accel.TCG_IRQ_POLL
SILENT_LIMIT = 60.0   # default --silent-limit
# --boot disk: firmware and a boot loader may print nothing on the serial line
# before the kernel does (and read the kernel through the proxy, slowly under TCG).
SILENT_LIMIT_BOOT_DISK = 180.0
BOOT_DISK_TCG_NOTE = ("note: under TCG the guest kernel needs the 'irqpoll' argument (stock's proxy "
                      "delivers interrupts only through KVM); with --boot disk the launcher does not load "
                      "the kernel and cannot add it: put it in the image's boot loader configuration")


class LaunchError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def say(msg):
    sys.stderr.write(f"[mpqemu] {msg}\n")
    sys.stderr.flush()


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMGT]?)(?:i?B)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def qemu_escape(value):
    """QEMU option values double a literal comma."""
    return str(value).replace(",", ",,")


# ---- finding things -----------------------------------------------------------

def build_dirs():
    dirs = []
    if os.environ.get("MPQ_BUILD_DIR"):
        dirs.append(os.environ["MPQ_BUILD_DIR"])
    try:
        with open(os.path.join(SOURCE, "config.mk")) as f:
            for line in f:
                m = re.match(r"\s*BUILD_DIR\s*:?=\s*(\S+)", line)
                if m:
                    d = m.group(1)
                    dirs.append(d if os.path.isabs(d) else os.path.join(SOURCE, d))
    except OSError:
        pass
    dirs.append(os.path.join(SOURCE, "build"))
    return dirs


def find_program(name, explicit=None, search_build=True):
    if explicit:
        path = shutil.which(explicit) if os.sep not in explicit else explicit
        if not path or not os.access(path, os.X_OK):
            raise LaunchError(EXIT_SETUP, f"{explicit}: not an executable program")
        return os.path.abspath(path)
    if search_build:
        for d in build_dirs():
            cand = os.path.join(d, name)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return os.path.abspath(cand)
    path = shutil.which(name)
    if path:
        return path
    hint = " (build it: ./configure && make)" if search_build else ""
    raise LaunchError(EXIT_SETUP, f"{name} not found in {', '.join(build_dirs()) if search_build else ''} "
                      f"or on PATH{hint}")


def guest_cache():
    return os.environ.get("MPQ_GUEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mpqemu-guest")


def guest_files(prepare=True):
    out = os.path.join(guest_cache(), "guest")
    names = ("vmlinuz", "initrd.img", "pattern.bin", "guest.json")
    if not all(os.path.isfile(os.path.join(out, n)) for n in names):
        script = os.path.join(SCRIPTS, "guest", "prepare.sh")
        if not (prepare and os.path.isfile(script)):
            raise LaunchError(EXIT_SETUP, f"guest kernel/initramfs missing in {out}: run scripts/guest/prepare.sh")
        say("preparing the guest kernel and initramfs (first run only)")
        r = subprocess.run(["sh", script, "-q"], stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            raise LaunchError(EXIT_SETUP, "scripts/guest/prepare.sh failed")
    files = {n.split(".")[0]: os.path.join(out, n) for n in names}
    with open(files["guest"]) as f:
        files["info"] = json.load(f)
    return files


# ---- what to start ----------------------------------------------------------------

class Disk:
    def __init__(self, path, fmt, created):
        self.path, self.fmt, self.created = path, fmt, created
        self.controller = None
        self.scsi_id = None

    @property
    def label(self):
        return f"lsi{self.controller}.{self.scsi_id}"


def parse_disk(spec):
    path, *opts = spec.split(",")
    fmt = None
    for o in opts:
        k, _, v = o.partition("=")
        if k == "format" and v in ("raw", "qcow2"):
            fmt = v
        else:
            raise LaunchError(EXIT_USAGE, f"--disk {spec}: unknown option {o!r} (only format=raw|qcow2)")
    if not path or not os.path.isfile(path):
        raise LaunchError(EXIT_USAGE, f"--disk {spec}: {path!r} is not an existing file")
    if fmt is None:
        with open(path, "rb") as f:
            fmt = "qcow2" if f.read(4) == b"QFI\xfb" else "raw"
    return Disk(os.path.abspath(path), fmt, created=False)


class Plan:
    """The processes, sockets and disks of one run, built from the options."""

    def __init__(self, args, rundir):
        self.args = args
        self.rundir = rundir
        self.nonce = secrets.token_hex(6)
        self.disks = [parse_disk(d) for d in args.disk]
        n_ctl = args.controllers
        n_rem = min(args.remotes, n_ctl)
        while len(self.disks) < n_ctl:
            path = os.path.join(rundir, f"disk{len(self.disks)}.{args.disk_format}")
            self.disks.append(Disk(path, args.disk_format, created=True))
        self.controllers = [[] for _ in range(n_ctl)]
        for i, d in enumerate(self.disks):
            k = i % n_ctl
            d.controller, d.scsi_id = k, len(self.controllers[k])
            if d.scsi_id >= MAX_DISKS_PER_CONTROLLER:
                raise LaunchError(EXIT_USAGE, f"too many disks: at most {MAX_DISKS_PER_CONTROLLER} per controller")
            self.controllers[k].append(d)
        if args.remote == "stock" and n_rem < n_ctl:
            # QEMU 7.2's x-remote machine takes a single x-remote-object
            raise LaunchError(EXIT_USAGE, "stock QEMU's remote hosts one device per process: "
                              f"use --remotes {n_ctl} with --remote stock")
        # controller k lives in remote k % n_rem
        self.remotes = [[k for k in range(n_ctl) if k % n_rem == r] for r in range(n_rem)]
        self.remote_monitors = []
        for r in range(n_rem):
            mon = args.remote_monitor
            if mon and n_rem > 1:
                mon = mon.replace("{i}", str(r)) if "{i}" in mon else f"{mon}.{r}"
            self.remote_monitors.append(mon)

    def create_disks(self, dry_run):
        cmds = []
        for d in self.disks:
            if d.created:
                cmd = ["qemu-img", "create", "-q", "-f", d.fmt, d.path, str(self.args.disk_size)]
                cmds.append(cmd)
                if not dry_run:
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        raise LaunchError(EXIT_SETUP, f"qemu-img create failed: {r.stderr.strip()}")
        return cmds

    # -- remote side
    def remote_argv(self, r, fds):
        a = self.args
        ctls = self.remotes[r]
        stock = a.remote == "stock"
        if stock:
            argv = [a.remote_bin, "-machine", "x-remote", "-nodefaults", "-display", "none"]
        else:
            argv = [a.remote_bin, str(fds[ctls[0]])]
        for k in ctls:
            argv += ["-device", f"lsi53c895a,id=lsi{k}"]
            for d in self.controllers[k]:
                drv = f"d{k}_{d.scsi_id}"
                argv += ["-drive", f"id={drv},file={qemu_escape(d.path)},format={d.fmt},if=none",
                         "-device", f"scsi-hd,id=sd{k}_{d.scsi_id},drive={drv},bus=lsi{k}.0,scsi-id={d.scsi_id}"]
        for k in ctls:
            if stock or k != ctls[0]:
                argv += ["-object", f"x-remote-object,id=ro{k},devid=lsi{k},fd={fds[k]}"]
        mon = self.remote_monitors[r]
        if mon:
            argv += ["-monitor", f"unix:{qemu_escape(mon)},server=on,wait=off"]
        for extra in a.remote_arg:
            argv += shlex.split(extra)
        return argv

    # -- VMM side
    def kernel_cmdline(self, accel):
        a = self.args
        loglevel = {"shell": 3, "run": 1}.get(a.mode, 4)
        # No earlyprintk: its first line comes out within a fraction of a second, before a
        # remote that fails on its options is seen to exit, which would then count as
        # "died while the VM ran" (11) instead of "failed to start" (10).
        words = ["console=ttyS0", f"loglevel={loglevel}", "panic=-1",
                 f"mpq.mode={a.mode}", f"mpq.nonce={self.nonce}", f"mpq.disks={len(self.disks)}",
                 f"mpq.wait={a.disk_wait}", f"mpq.limit={self.guest_limit()}"]
        if a.mode == "run":
            words.append("mpq.run=" + base64.b64encode(a.run.encode()).decode())
        if a.mode == "perf":
            words.append(f"mpq.perf_mb={a.perf_mb}")
        if mpqemu_accel.irq_poll(accel):
            words.append(TCG_IRQ_WORKAROUND)
        if a.append:
            words.append(a.append)
        line = " ".join(words)
        if len(line) > 2000:
            raise LaunchError(EXIT_USAGE, "kernel command line too long (shorten the --run command)")
        return line

    def guest_limit(self):
        """The guest's own workload limit: well inside the host's --timeout so the
        guest's verdict (with its dmesg) arrives before the host gives up."""
        t = self.args.timeout or 3600
        return max(20, int(t * 0.8) - 45)

    def vmm_argv(self, fds, guest, accel):
        a = self.args
        mem = a.memory
        if a.vmm == "mpqemu":
            argv = [a.vmm_bin, "-nodefaults", "-display", "none", "-machine", "pc,memory-backend=mem",
                    "-accel", "qtest", "-m", mem,
                    "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
                    "-qtest", f"unix:{qemu_escape(self.qtest_path)}", "-qtest-log", "none"]
            for k in range(len(self.controllers)):
                argv += ["-device", f"pci-proxy-dev,id=lsi{k},socket={fds[k]}"]
        else:
            argv = [a.vmm_bin, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                    "-machine", f"pc,accel={accel},memory-backend=mem", "-m", mem,
                    "-object", f"memory-backend-memfd,id=mem,size={mem},share=on"]
            if a.boot == "kernel":
                argv += ["-kernel", guest["vmlinuz"], "-initrd", guest["initrd"],
                         "-append", self.kernel_cmdline(accel)]
            # --boot disk: no kernel; with -nodefaults the only disks are behind our
            # controllers, and SeaBIOS boots the first one it finds (lsi0, SCSI id 0).
            argv += ["-serial", "stdio"]
            if a.firmware == "qboot":
                argv += ["-bios", "qboot.rom"]
            for k in range(len(self.controllers)):
                argv += ["-device", f"x-pci-proxy-dev,id=lsi{k},fd={fds[k]}"]
        if a.vmm_monitor:
            argv += ["-monitor", f"unix:{qemu_escape(a.vmm_monitor)},server=on,wait=off"]
        elif a.vmm == "stock":
            argv += ["-monitor", "none"]
        for extra in a.vmm_arg:
            argv += shlex.split(extra)
        return argv

    @property
    def qtest_path(self):
        return os.path.join(self.rundir, "qtest.sock")


# ---- children -------------------------------------------------------------------

_libc = None


def _child_setup():
    """In the child: die with the launcher (SIGTERM if it vanishes)."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class Child:
    def __init__(self, name, argv, log_path, pass_fds=(), console=False, stdin_pipe=False):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.log = open(log_path, "ab")
        self.rc = None
        self.stopped_by_us = False
        self.started = time.monotonic()
        try:
            self.p = subprocess.Popen(
                argv, pass_fds=pass_fds, start_new_session=True, preexec_fn=_child_setup,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE if console else self.log, stderr=self.log)
        except OSError as e:
            self.log.close()
            raise LaunchError(EXIT_REMOTE_START if name.startswith("remote") else EXIT_VMM_START,
                              f"cannot start {name} ({argv[0]}): {e}")
        self.pid = self.p.pid

    def poll(self):
        if self.rc is None:
            self.rc = self.p.poll()
        return self.rc

    def describe_exit(self):
        rc = self.poll()
        if rc is None:
            return "running"
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exit status {rc}"

    def signal_group(self, sig):
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout):
        try:
            self.rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.rc

    def stop(self):
        if self.poll() is None:
            self.stopped_by_us = True
            self.signal_group(signal.SIGTERM)
            if self.wait(STOP_GRACE) is None:
                self.signal_group(signal.SIGKILL)
                self.wait(STOP_GRACE)
        # anything else left in its group (a helper it forked) goes too
        self.signal_group(signal.SIGKILL)
        for s in (self.p.stdin, self.p.stdout):
            if s:
                try:
                    s.close()
                except OSError:
                    pass
        self.log.close()

    def tail(self, n=8):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 4096))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + ln for ln in lines[-n:])


# ---- the guest's console ----------------------------------------------------------

class Console:
    """Splits the serial console into lines, tracks the guest's progress markers."""

    def __init__(self, log_path, echo, nonce):
        self.log = open(log_path, "wb")
        self.echo = echo
        self.nonce = nonce
        self.partial = b""
        self.lines = []
        self.events = []          # (name, text) of milestones, in order
        self.first_output = None
        self.result = None
        self.run_output = None
        self.run_status = None
        self._in_run = False

    def feed(self, data):
        if self.first_output is None:
            self.first_output = time.monotonic()
        self.log.write(data)
        self.log.flush()
        if self.echo:
            os.write(sys.stdout.fileno(), data)
        self.partial += data
        *complete, self.partial = self.partial.split(b"\n")
        for raw in complete:
            self._line(raw.decode(errors="replace").rstrip("\r"))

    def _line(self, line):
        self.lines.append(line)
        if self._in_run:
            if line.startswith("MPQ-RUN-END nonce=" + self.nonce):
                self._in_run = False
                m = re.search(r"status=(\d+)", line)
                self.run_status = int(m.group(1)) if m else None
            else:
                self.run_output.append(line)
            return
        if line.startswith("MPQ-RUN-BEGIN nonce=" + self.nonce):
            self._in_run = True
            self.run_output = []
        elif line.startswith("MPQ-GUEST: "):
            self.events.append(("guest", line[len("MPQ-GUEST: "):]))
        elif line.startswith("MPQ-RESULT: ") and self.result is None:
            self.result = line[len("MPQ-RESULT: "):]
        elif line.startswith(("MPQ-SELFTEST: ", "MPQ-PERF: ", "MPQ-PERF-TOTAL: ")):
            self.events.append(("data", line))

    def data_lines(self, prefix):
        return [ln[len(prefix):] for ln in self.lines if ln.startswith(prefix)]

    def close(self):
        self.log.close()


def kv(text):
    return dict(w.split("=", 1) for w in text.split() if "=" in w)


# ---- host-side checks -------------------------------------------------------------

def selftest_regions(nbytes, idx):
    """Same layout as the guest's /init (scripts/guest/init.sh, selftest)."""
    s = idx * 16384
    return [(MiB, MiB, s),
            (nbytes // 1024 * 512 + 1536, 65536, MiB + s),
            (nbytes - 262144, 262144, MiB + 65536 + s)]


def pattern_slice(pattern, poff, length):
    out = bytearray()
    while len(out) < length:
        p = (poff + len(out)) % len(pattern)
        out += pattern[p:p + length - len(out)]
    return bytes(out)


def raw_view(disk, workdir, idx):
    """Path of the disk's guest-visible bytes: the file itself, or a converted copy."""
    if disk.fmt == "raw":
        return disk.path
    chk = subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", disk.path], capture_output=True, text=True)
    if chk.returncode != 0:
        raise LaunchError(EXIT_HOSTCHECK, f"{disk.path}: qemu-img check failed: {(chk.stdout + chk.stderr).strip()}")
    flat = os.path.join(workdir, f"check{idx}.raw")
    r = subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", disk.path, flat],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise LaunchError(EXIT_HOSTCHECK, f"{disk.path}: qemu-img convert failed: {r.stderr.strip()}")
    return flat


def zero_outside(f, size, spans):
    """Offset of the first non-zero byte outside spans, or None (holes are skipped)."""
    fd = f.fileno()
    pos = 0
    gaps = []
    for a, b in sorted(spans):
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
    gaps.append((pos, size))
    for a, b in gaps:
        off = a
        while off < b:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            if off >= b:
                break
            n = min(b - off, 4 * MiB)
            f.seek(off)
            chunk = f.read(n)
            nz = len(chunk) - len(chunk.lstrip(b"\0"))
            if nz < len(chunk):
                return off + nz
            off += n
    return None


def check_selftest_disks(plan, console, pattern, workdir):
    reported = {}
    for ln in console.data_lines("MPQ-SELFTEST: "):
        f = kv(ln)
        reported[f.get("dev")] = f
    seen_idx = {}
    for i, d in enumerate(plan.disks):
        flat = raw_view(d, workdir, i)
        size = os.path.getsize(flat)
        with open(flat, "rb") as f:
            tag = f.read(512)
            text, _, pad = tag.partition(b"\n")
            m = re.fullmatch(rb"MPQ-SELFTEST nonce=(\w+) dev=(\w+) idx=(\d+) bytes=(\d+)", text)
            if not m:
                raise LaunchError(EXIT_HOSTCHECK, f"{d.label} ({d.path}): no self-test tag in sector 0 "
                                  f"(found {text[:60]!r})")
            nonce, dev, idx, nbytes = m.group(1).decode(), m.group(2).decode(), int(m.group(3)), int(m.group(4))
            if nonce != plan.nonce:
                raise LaunchError(EXIT_HOSTCHECK, f"{d.label}: tag from another run (nonce {nonce})")
            if pad.strip(b"\0"):
                raise LaunchError(EXIT_HOSTCHECK, f"{d.label}: garbage after the tag in sector 0")
            if nbytes != size:
                raise LaunchError(EXIT_HOSTCHECK, f"{d.label}: guest saw {nbytes} bytes, image has {size}")
            if idx in seen_idx:
                raise LaunchError(EXIT_HOSTCHECK, f"{d.label} and {seen_idx[idx]} carry the same guest disk tag")
            seen_idx[idx] = d.label
            if reported.get(dev, {}).get("ok") != "1":
                raise LaunchError(EXIT_HOSTCHECK, f"{d.label}: guest did not report /dev/{dev} as verified")
            spans = [(0, 512)]
            for off, ln, poff in selftest_regions(nbytes, idx):
                f.seek(off)
                if f.read(ln) != pattern_slice(pattern, poff, ln):
                    raise LaunchError(EXIT_HOSTCHECK, f"{d.label} ({d.path}): bytes at {off}+{ln} differ "
                                      "from what the guest wrote")
                spans.append((off, off + ln))
            if d.created:
                stray = zero_outside(f, size, spans)
                if stray is not None:
                    raise LaunchError(EXIT_HOSTCHECK, f"{d.label}: unexpected data at byte {stray} "
                                      "(outside what the guest wrote)")
        say(f"host check: {d.label} = guest /dev/{dev}: tag, 3 regions{' and zeros elsewhere' if d.created else ''} ok")
        if flat != d.path:
            os.unlink(flat)


def check_perf_disks(plan, console, pattern, workdir):
    length = plan.args.perf_mb * MiB
    want = hashlib.sha256(pattern_slice(pattern, 0, length)).hexdigest()
    for i, d in enumerate(plan.disks):
        flat = raw_view(d, workdir, i)
        h = hashlib.sha256()
        with open(flat, "rb") as f:
            f.seek(MiB)
            left = length
            while left:
                chunk = f.read(min(left, 8 * MiB))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
        if h.hexdigest() != want:
            raise LaunchError(EXIT_HOSTCHECK, f"{d.label} ({d.path}): image does not hold the data the guest wrote")
        if flat != d.path:
            os.unlink(flat)
    say(f"host check: {len(plan.disks)} image(s) hold the {plan.args.perf_mb} MiB written by the guest")


# ---- qtest (our VMM has no guest OS) ------------------------------------------------

class Qtest:
    def __init__(self, conn):
        self.conn = conn
        self.buf = b""

    def cmd(self, line, deadline):
        self.conn.sendall(line.encode() + b"\n")
        while True:
            while b"\n" in self.buf:
                reply, self.buf = self.buf.split(b"\n", 1)
                text = reply.decode(errors="replace")
                if text.startswith("IRQ "):
                    continue
                if not text.startswith("OK"):
                    raise LaunchError(EXIT_GUEST, f"qtest {line!r}: {text}")
                return text
            self.conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = self.conn.recv(4096)
            except socket.timeout:
                raise LaunchError(EXIT_TIMEOUT, f"qtest {line!r}: no reply")
            if not data:
                raise LaunchError(EXIT_VMM_DIED, "the VMM closed the qtest connection")
            self.buf += data

    def cfg_read32(self, dev, reg, deadline):
        self.cmd(f"outl 0xcf8 0x{0x80000000 | (dev << 11) | reg:x}", deadline)
        return int(self.cmd("inl 0xcfc", deadline).split()[1], 16)


def qtest_scan(q, deadline):
    found = []
    for dev in range(32):
        ids = q.cfg_read32(dev, 0, deadline)
        if ids != 0xFFFFFFFF:
            found.append((dev, ids & 0xFFFF, ids >> 16))
    return found


# ---- the run ----------------------------------------------------------------------

class Launcher:
    def __init__(self, args):
        self.args = args
        self.children = []
        self.remotes = []
        self.vmm = None
        self.console = None
        self.signal_seen = None
        self.term_saved = None
        self.rundir = None
        self.made_sockets = []
        self.accel = None

    # -- signals and terminal
    def _on_signal(self, signum, _frame):
        if self.signal_seen is None:
            self.signal_seen = signum

    def _raw_terminal(self):
        fd = sys.stdin.fileno()
        self.term_saved = termios.tcgetattr(fd)
        t = termios.tcgetattr(fd)
        t[0] &= ~(termios.ICRNL | termios.IXON)          # Enter arrives as CR, as on a serial line
        t[3] &= ~(termios.ICANON | termios.ECHO)         # the guest echoes; ISIG stays: Ctrl-C stops all
        t[6][termios.VMIN], t[6][termios.VTIME] = 1, 0
        termios.tcsetattr(fd, termios.TCSANOW, t)

    def _restore_terminal(self):
        if self.term_saved is not None:
            try:
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, self.term_saved)
            except termios.error:
                pass
            self.term_saved = None

    # -- main
    def run(self):
        a = self.args
        old = {s: signal.signal(s, self._on_signal) for s in SIGNAL_EXIT}
        try:
            return self._run()
        except LaunchError as e:
            say(f"FAILED: {e}")
            return e.code
        finally:
            self._teardown()
            for s, h in old.items():
                signal.signal(s, h)
            if a.log_dir:
                say(f"logs: {a.log_dir}")

    def _run(self):
        a = self.args
        if a.log_dir:
            os.makedirs(a.log_dir, exist_ok=True)
        accel = "qtest"
        if a.vmm == "stock":
            # decided before anything is created or started: a KVM that cannot run the
            # guest fails here at once instead of hanging
            try:
                accel, why = mpqemu_accel.resolve(a.accel)
            except ValueError as e:
                raise LaunchError(EXIT_SETUP, str(e))
            say(f"accelerator: {why}")
        self.accel = accel
        self.rundir = tempfile.mkdtemp(prefix="mpqemu-")
        logdir = a.log_dir or self.rundir
        plan = Plan(a, self.rundir)
        guest = None
        if a.vmm == "stock" and a.boot == "kernel":
            try:
                guest = guest_files(prepare=not a.dry_run)
            except LaunchError:
                if not a.dry_run:
                    raise
                out = os.path.join(guest_cache(), "guest")
                guest = {"vmlinuz": os.path.join(out, "vmlinuz"), "initrd": os.path.join(out, "initrd.img")}

        # one socketpair per controller: the stock proxy speaks to one device per socket
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in plan.controllers]
        vmm_fds = [p[0].fileno() for p in pairs]
        remote_fds = [p[1].fileno() for p in pairs]
        try:
            remote_argvs = [plan.remote_argv(r, remote_fds) for r in range(len(plan.remotes))]
            vmm_argv = plan.vmm_argv(vmm_fds, guest, accel)
            disk_cmds = plan.create_disks(a.dry_run)
            if a.dry_run:
                for c in disk_cmds:
                    print(shlex.join(c))
                for r, argv in enumerate(remote_argvs):
                    print(f"# remote {r} (controllers {', '.join(f'lsi{k}' for k in plan.remotes[r])})")
                    print(shlex.join(argv))
                print("# VMM")
                print(shlex.join(vmm_argv))
                return EXIT_OK
            self._describe(plan, accel)
            if a.boot == "disk" and accel == "tcg":
                say(BOOT_DISK_TCG_NOTE)
            qlisten = None
            if a.vmm == "mpqemu":
                qlisten = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                qlisten.bind(plan.qtest_path)
                qlisten.listen(1)
            for r, argv in enumerate(remote_argvs):
                fds = tuple(remote_fds[k] for k in plan.remotes[r])
                if a.verbose:
                    say(f"remote {r}: {shlex.join(argv)}")
                child = Child(f"remote{r}", argv, os.path.join(logdir, f"remote{r}.log"), pass_fds=fds)
                self.children.append(child)
                self.remotes.append(child)
                say(f"remote {r} pid {child.pid}: {', '.join(f'lsi{k}' for k in plan.remotes[r])}"
                    f" ({', '.join(os.path.basename(d.path) for k in plan.remotes[r] for d in plan.controllers[k])})")
            if a.verbose:
                say(f"VMM: {shlex.join(vmm_argv)}")
            interactive = a.mode == "shell" and a.vmm == "stock"
            self.console = Console(os.path.join(logdir, "console.log"),
                                   echo=interactive or a.verbose, nonce=plan.nonce)
            self.vmm = Child("vmm", vmm_argv, os.path.join(logdir, "vmm.log"), pass_fds=tuple(vmm_fds),
                             console=a.vmm == "stock", stdin_pipe=interactive)
            self.children.append(self.vmm)
            say(f"VMM pid {self.vmm.pid}: {os.path.basename(a.vmm_bin)}, {a.memory} RAM, "
                f"{accel if a.vmm == 'stock' else 'qtest (no guest OS)'}"
                + (f" (guest polls for interrupts: {TCG_IRQ_WORKAROUND})"
                   if accel == "tcg" and a.vmm == "stock" and a.boot == "kernel" else "")
                + (f", booting from {plan.disks[0].label} ({os.path.basename(plan.disks[0].path)})"
                   if a.boot == "disk" else ""))
        finally:
            for p in pairs:   # the children hold their ends now
                p[0].close()
                p[1].close()
        self._print_monitors(plan)
        if a.vmm == "mpqemu":
            return self._run_qtest(plan, qlisten)
        return self._supervise(plan, interactive, guest)

    def _describe(self, plan, accel):
        a = self.args
        say(f"{len(plan.disks)} disk(s) on {len(plan.controllers)} controller(s) in {len(plan.remotes)} "
            f"remote process(es); remote: {a.remote_bin}")
        for d in plan.disks:
            say(f"  {d.label}: {d.path} ({d.fmt}{', new ' + str(a.disk_size // MiB) + ' MiB' if d.created else ''})")

    def _print_monitors(self, plan):
        mons = [(f"remote {r}", m) for r, m in enumerate(plan.remote_monitors) if m]
        if self.args.vmm_monitor:
            mons.append(("VMM", self.args.vmm_monitor))
        for name, path in mons:
            self.made_sockets.append(path)
            say(f"{name} monitor: socat - UNIX-CONNECT:{path}")

    # -- stock VMM + guest
    def _supervise(self, plan, interactive, guest):
        a = self.args
        sel = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        sel.register(self.vmm.p.stdout, selectors.EVENT_READ, "console")
        stdin_open = False
        if interactive:
            try:
                sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
                stdin_open = True
            except (OSError, ValueError):
                pass   # /dev/null or a file: nothing to type into the guest
            if stdin_open and sys.stdin.isatty():
                self._raw_terminal()
        if interactive:
            if a.boot == "disk":
                say("booting from the disk (firmware, then the image's boot loader); Ctrl-C stops everything")
            else:
                say("booting the guest (kernel, storage driver, disks: ~10 s with KVM, 20-60 s under TCG); "
                    "Ctrl-C stops everything")
        t0 = time.monotonic()
        deadline = t0 + a.timeout if a.timeout else None
        shown = 0
        last_note = t0
        try:
            while True:
                for key, _ in sel.select(timeout=0.2):
                    if key.data == "signal":
                        os.read(wake_r, 512)
                    elif key.data == "console":
                        data = os.read(self.vmm.p.stdout.fileno(), 65536)
                        if data:
                            self.console.feed(data)
                        else:
                            sel.unregister(self.vmm.p.stdout)
                    elif key.data == "stdin":
                        data = os.read(sys.stdin.fileno(), 4096)
                        try:
                            if not data:
                                raise BrokenPipeError
                            self.vmm.p.stdin.write(data)
                            self.vmm.p.stdin.flush()
                        except (BrokenPipeError, OSError):
                            sel.unregister(sys.stdin.fileno())
                            stdin_open = False
                if self.signal_seen is not None:
                    name = signal.Signals(self.signal_seen).name
                    self._restore_terminal()
                    say(f"{name} received: stopping the VMM and the remote(s)")
                    return SIGNAL_EXIT[self.signal_seen]
                self.on_tick()
                # progress
                now = time.monotonic()
                while shown < len(self.console.events):
                    kind, text = self.console.events[shown]
                    shown += 1
                    last_note = now
                    if not interactive and (kind == "guest" or a.verbose):
                        say(f"{now - t0:6.1f}s guest: {text}")
                if not interactive and now - last_note >= 10:
                    last_note = now
                    stage = "booting the kernel" if self.console.first_output is None else "waiting"
                    say(f"{now - t0:6.1f}s ... {stage}")
                # children
                dead = [c for c in self.remotes if c.poll() is not None]
                if dead or self.vmm.poll() is not None:
                    # Whether the guest had started is decided by what it printed before
                    # the death was seen, not during the wait below: a remote that fails on
                    # its options still "failed to start" when the kernel's first line
                    # comes out a moment later.
                    seen_at = time.monotonic()
                    time.sleep(0.3)   # let a crash's companion exit show up, to blame the first cause
                    dead = [c for c in self.remotes if c.poll() is not None]
                    vmm_rc = self.vmm.poll()
                    started = self.console.first_output is not None and self.console.first_output < seen_at
                    # A remote that failed, or quit under a running VMM, is the cause; one
                    # that exited 0 after the VMM went away only saw its socket close.
                    culprits = [c for c in dead if c.rc != 0] or (dead if vmm_rc is None else [])
                    if culprits:
                        self._restore_terminal()
                        c = culprits[0]
                        what = "failed to start" if not started else "died while the VM was running"
                        raise LaunchError(EXIT_REMOTE_DIED if started else EXIT_REMOTE_START,
                                          f"{c.name} (pid {c.pid}) {what}: {c.describe_exit()}\n{c.tail()}")
                    if vmm_rc is not None:
                        self._drain_console(sel)
                        self._restore_terminal()
                        if vmm_rc != 0:
                            what = "failed to start" if not started else "exited with an error"
                            raise LaunchError(EXIT_VMM_DIED if started else EXIT_VMM_START,
                                              f"VMM (pid {self.vmm.pid}) {what}: {self.vmm.describe_exit()}\n"
                                              f"{self.vmm.tail()}")
                        return self._finish(plan, guest, now - t0)
                silent = now - self.vmm.started
                if a.silent_limit and self.console.first_output is None and silent > a.silent_limit:
                    self._restore_terminal()
                    raise LaunchError(EXIT_SILENT_GUEST,
                                      f"the guest printed nothing in {a.silent_limit:g} s under {self.accel} "
                                      f"(VMM pid {self.vmm.pid}); VMM log tail:\n{self.vmm.tail() or '    (empty)'}")
                if deadline and now > deadline:
                    self._restore_terminal()
                    stage = self.console.events[-1][1] if self.console.events else "before the guest's first marker"
                    raise LaunchError(EXIT_TIMEOUT, f"timeout after {a.timeout:g}s (last guest progress: {stage})")
        finally:
            signal.set_wakeup_fd(old_wakeup)
            sel.close()
            os.close(wake_r)
            os.close(wake_w)
            del stdin_open

    def on_tick(self):
        """Called about five times a second while the VM runs (for subclasses)."""

    def _drain_console(self, sel):
        try:
            while True:
                data = os.read(self.vmm.p.stdout.fileno(), 65536)
                if not data:
                    break
                self.console.feed(data)
        except (OSError, ValueError):
            pass

    def _finish(self, plan, guest, elapsed):
        """The VMM exited 0: the guest powered off (or reset). Judge the run."""
        a = self.args
        for c in self.remotes:
            if c.wait(REMOTE_EXIT_GRACE) is None:
                say(f"warning: {c.name} (pid {c.pid}) did not exit after the VMM; stopping it")
                c.stop()
            elif c.rc != 0:
                raise LaunchError(EXIT_REMOTE_DIED, f"{c.name} (pid {c.pid}) exited with an error after the VM "
                                  f"ended: {c.describe_exit()}\n{c.tail()}")
        con = self.console
        say(f"VM ended after {elapsed:.1f}s")
        if a.mode == "shell":
            return EXIT_OK
        if con.result is None:
            tail = "\n".join("    " + ln for ln in con.lines[-12:])
            raise LaunchError(EXIT_GUEST, f"the guest ended without a result line; console tail:\n{tail}")
        if f"nonce={plan.nonce}" not in con.result:
            raise LaunchError(EXIT_GUEST, f"the guest's result belongs to another run: {con.result}")
        if not con.result.startswith("PASS"):
            tail = "\n".join("    " + ln for ln in con.lines[-30:] if not ln.startswith("MPQ-RESULT"))
            raise LaunchError(EXIT_GUEST, f"guest: {con.result}\n{tail}")
        if a.mode == "run":
            for ln in con.run_output or []:
                print(ln)
            sys.stdout.flush()
            if con.run_status is None:
                raise LaunchError(EXIT_GUEST, "the guest command's output was cut off")
            if con.run_status != 0:
                say(f"guest command exited with status {con.run_status}")
                return EXIT_GUEST
            return EXIT_OK
        with open(guest["pattern"], "rb") as f:
            pattern = f.read()
        if a.mode == "selftest":
            n = len(con.data_lines("MPQ-SELFTEST: "))
            if n != len(plan.disks):
                raise LaunchError(EXIT_GUEST, f"guest verified {n} disk(s), expected {len(plan.disks)}")
            check_selftest_disks(plan, con, pattern, self.rundir)
            say(f"SELF-TEST PASSED: {len(plan.disks)} disk(s), guest and host checks")
            return EXIT_OK
        if a.mode == "perf":
            check_perf_disks(plan, con, pattern, self.rundir)
            return EXIT_OK
        return EXIT_OK

    # -- our VMM: no guest OS, a qtest socket instead
    def _run_qtest(self, plan, qlisten):
        a = self.args
        deadline = time.monotonic() + (a.timeout or 60)
        qlisten.settimeout(0.2)
        conn = None
        while conn is None:
            try:
                conn, _ = qlisten.accept()
            except socket.timeout:
                pass
            self._check_qtest_children(started=False)
            if time.monotonic() > deadline:
                raise LaunchError(EXIT_VMM_START, "the VMM never connected its qtest socket")
        qlisten.close()
        q = Qtest(conn)
        found = qtest_scan(q, deadline)
        lsis = [f for f in found if (f[1], f[2]) == (0x1000, 0x0012)]
        for dev, ven, did in found:
            say(f"PCI 00:{dev:02x}.0 {ven:04x}:{did:04x}")
        if len(lsis) != len(plan.controllers):
            raise LaunchError(EXIT_GUEST, f"found {len(lsis)} lsi53c895a function(s) over qtest, "
                              f"expected {len(plan.controllers)}")
        say(f"our VMM sees {len(lsis)} lsi53c895a controller(s) in the remote process(es)")
        if a.mode != "shell":
            return EXIT_OK
        say("running; Ctrl-C stops (no guest OS with our VMM: drive it through the monitors)")
        while True:
            time.sleep(0.2)
            if self.signal_seen is not None:
                say(f"{signal.Signals(self.signal_seen).name} received: stopping")
                return SIGNAL_EXIT[self.signal_seen]
            self._check_qtest_children()

    def _check_qtest_children(self, started=True):
        if self.signal_seen is not None:
            raise LaunchError(SIGNAL_EXIT[self.signal_seen], f"{signal.Signals(self.signal_seen).name} received")
        if self.remotes and any(c.poll() is not None for c in self.remotes + [self.vmm]):
            time.sleep(0.3)   # as in _supervise: blame the first cause
        for c in self.remotes:
            if c.poll() is not None and (c.rc != 0 or self.vmm.poll() is None):
                raise LaunchError(EXIT_REMOTE_DIED if started else EXIT_REMOTE_START,
                                  f"{c.name} (pid {c.pid}) {'exited' if started else 'failed to start'}: "
                                  f"{c.describe_exit()}\n{c.tail()}")
        if self.vmm.poll() is not None:
            raise LaunchError(EXIT_VMM_DIED if started else EXIT_VMM_START,
                              f"VMM (pid {self.vmm.pid}) {'exited' if started else 'failed to start'}: "
                              f"{self.vmm.describe_exit()}\n{self.vmm.tail()}")

    def _teardown(self):
        self._restore_terminal()
        if self.vmm is not None:
            self.vmm.stop()
        for c in self.remotes:
            if c.poll() is None:
                c.wait(3.0 if self.vmm is not None else 0)
            c.stop()
        if self.console is not None:
            self.console.close()
        for path in self.made_sockets:
            try:
                if os.path.exists(path) and not os.path.isfile(path):
                    os.unlink(path)
            except OSError:
                pass
        if self.rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)


def make_parser():
    ap = argparse.ArgumentParser(
        prog="mpqemu-launcher.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmm", choices=("stock", "mpqemu"), default="stock",
                    help="stock: qemu-system-x86_64 with x-pci-proxy-dev boots the guest (default); "
                         "mpqemu: our mpqemu-system-x86_64 with a qtest socket, no guest OS")
    ap.add_argument("--remote", choices=("mpqemu", "stock"), default="mpqemu",
                    help="mpqemu: our qemu-scsi-dev (default); stock: qemu-system-x86_64 -machine x-remote")
    ap.add_argument("--remote-bin", help="remote program (default: build/qemu-scsi-dev, then PATH)")
    ap.add_argument("--vmm-bin", help="VMM program (default: qemu-system-x86_64, or build/mpqemu-system-x86_64)")
    ap.add_argument("--disk", action="append", default=[], metavar="PATH[,format=raw|qcow2]",
                    help="disk image (repeatable; spread over the controllers, SCSI ids 0..6)")
    ap.add_argument("--disk-size", type=parse_size, default=parse_size("64M"),
                    help="size of the disks created when none are given (default 64M)")
    ap.add_argument("--disk-format", choices=("qcow2", "raw"), default="qcow2",
                    help="format of created disks (default qcow2)")
    ap.add_argument("--controllers", type=int, default=1, help="lsi53c895a controllers (default 1)")
    ap.add_argument("--remotes", type=int, default=1,
                    help="remote processes; controller k goes to remote k %% N (default 1)")
    ap.add_argument("-m", "--memory", default="512M", help="guest RAM (default 512M)")
    ap.add_argument("--remote-arg", action="append", default=[], help="extra remote arguments (shell-split)")
    ap.add_argument("--vmm-arg", action="append", default=[], help="extra VMM arguments (shell-split)")
    ap.add_argument("--remote-monitor", metavar="PATH",
                    help="HMP monitor socket of the remote ({i} or .N suffix when there are several)")
    ap.add_argument("--vmm-monitor", metavar="PATH", help="HMP monitor socket of the VMM")
    ap.add_argument("--log-dir", help="keep console.log, vmm.log, remoteN.log here")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--self-test", action="store_true",
                      help="non-interactive: the guest writes, re-reads and verifies every disk; the host "
                           "then checks each image")
    mode.add_argument("--run", metavar="CMD", help="run CMD in the guest (busybox sh), print its output")
    mode.add_argument("--perf", action="store_true", help="dd write+read on all disks at once (MB/s)")
    ap.add_argument("--perf-mb", type=int, default=32, help="--perf: MiB per disk (even, default 32)")
    ap.add_argument("--dry-run", action="store_true", help="print the command lines and exit")
    ap.add_argument("--timeout", type=float, help="limit for the whole run in seconds "
                    "(default: none interactively, 600 otherwise)")
    ap.add_argument("--disk-wait", type=int, default=120, help="guest limit for finding the disks (s)")
    ap.add_argument("--boot", choices=("kernel", "disk"), default="kernel",
                    help="kernel: the bundled guest kernel + initramfs (default); disk: the firmware boots "
                         "the first disk (lsi0, SCSI id 0) with its own boot loader, nothing is loaded")
    ap.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="stock VMM's accelerator. auto (default): kvm when /dev/kvm opens read-write and "
                         "the CPU shows vmx/svm (hardware KVM), else tcg with the guest polling for "
                         "interrupts; kvm on a host without hardware KVM fails at once (status 3)")
    ap.add_argument("--silent-limit", type=float, default=None, metavar="S",
                    help="stock VMM: stop (status 15) when the guest has printed nothing on its console "
                         f"S seconds after the VMM started; its first output disarms this "
                         f"(default {SILENT_LIMIT:g}, {SILENT_LIMIT_BOOT_DISK:g} with --boot disk; 0 = never)")
    ap.add_argument("--firmware", choices=("seabios", "qboot"), default="seabios")
    ap.add_argument("--append", default="", help="extra guest kernel command line")
    ap.add_argument("-v", "--verbose", action="store_true", help="show command lines and the guest console")
    return ap


def resolve_args(ap, argv=None):
    a = ap.parse_args(argv)
    a.mode = "selftest" if a.self_test else "run" if a.run is not None else "perf" if a.perf else "shell"
    if a.controllers < 1 or a.controllers > 8:
        ap.error("--controllers must be 1..8")
    if a.remotes < 1:
        ap.error("--remotes must be >= 1")
    if a.perf_mb <= 0 or a.perf_mb % 2:
        ap.error("--perf-mb must be a positive even number")
    if a.disk_size < 16 * MiB or a.disk_size % 512:
        ap.error("--disk-size must be at least 16M and a multiple of 512")
    if a.boot == "disk":
        # The bundled guest's /init is what runs the workloads and prints the markers
        # the launcher checks; an image's own system knows nothing of them.
        if a.mode != "shell":
            ap.error(f"--{ {'selftest': 'self-test'}.get(a.mode, a.mode)} needs the bundled guest "
                     "(its /init runs the workload): not with --boot disk")
        if a.vmm != "stock":
            ap.error("--boot disk needs a guest OS: not with --vmm mpqemu (qtest, no firmware)")
        if not a.disk:
            ap.error("--boot disk needs --disk IMAGE (a bootable raw or qcow2 image)")
        if a.firmware != "seabios":
            ap.error("--boot disk needs --firmware seabios (qboot boots only a -kernel)")
        if a.append:
            ap.error("--append needs the bundled kernel: with --boot disk put kernel arguments in the "
                     "image's boot loader configuration")
    if a.silent_limit is None:
        a.silent_limit = SILENT_LIMIT_BOOT_DISK if a.boot == "disk" else SILENT_LIMIT
    if a.silent_limit < 0:
        ap.error("--silent-limit must be >= 0")
    if a.timeout is None and a.mode != "shell":
        a.timeout = 600
    try:
        if a.remote == "stock":
            a.remote_bin = find_program("qemu-system-x86_64", a.remote_bin, search_build=False)
        else:
            a.remote_bin = find_program("qemu-scsi-dev", a.remote_bin)
        if a.vmm == "stock":
            a.vmm_bin = find_program("qemu-system-x86_64", a.vmm_bin, search_build=False)
        else:
            a.vmm_bin = find_program("mpqemu-system-x86_64", a.vmm_bin)
    except LaunchError as e:
        if not a.dry_run:
            raise
        a.remote_bin = a.remote_bin or ("qemu-system-x86_64" if a.remote == "stock" else "qemu-scsi-dev")
        a.vmm_bin = a.vmm_bin or ("qemu-system-x86_64" if a.vmm == "stock" else "mpqemu-system-x86_64")
        say(f"note: {e}")
    return a


def main(argv=None):
    global _libc
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        _libc = None
    ap = make_parser()
    try:
        a = resolve_args(ap, argv)
    except LaunchError as e:
        say(f"FAILED: {e}")
        return e.code
    return Launcher(a).run()


if __name__ == "__main__":
    sys.exit(main())
