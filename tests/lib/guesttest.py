"""Helpers for the real-guest tests (tests/guest/test_*.py), Python 3 stdlib only.

Each test starts scripts/mpqemu-launcher*.py (or the shared guest-e2e harness)
as a child, with a private TMPDIR and a unique `-name` tag on every QEMU-like
child, so that it can check afterwards that no process and no temp file was
left behind.  Exit codes: 0 pass, 77 skip (a prerequisite is missing), else fail.
"""
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("MPQ_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("MPQ_BUILD_DIR") or os.path.join(SOURCE, "build")
SHARED = os.environ.get("MPQ_SHARED_DIR") or os.path.abspath(os.path.join(SOURCE, "..", "shared"))
LAUNCHER = os.path.join(SOURCE, "scripts", "mpqemu-launcher.py")
PERF_LAUNCHER = os.path.join(SOURCE, "scripts", "mpqemu-launcher-perf-mode.py")
REMOTE = os.path.join(BUILD, "qemu-scsi-dev")

sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import mpqemu_accel  # noqa: E402  (the project's one accelerator decision)


def log(msg):
    print(f"[test] {msg}", flush=True)


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(SKIP)


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def require_host():
    """Stock QEMU + qemu-img and the bundled guest; skip when they cannot exist here."""
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    r = subprocess.run(["sh", os.path.join(SOURCE, "scripts", "guest", "prepare.sh"), "-q"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        skip("the guest kernel/initramfs cannot be prepared (needs Debian's archive): " + r.stderr.strip()[-300:])


def require_our_remote():
    if not os.access(REMOTE, os.X_OK):
        fail(f"{REMOTE} is missing: build first (make)")
    return REMOTE


def accel_args():
    """The launcher's --accel for this host, passed explicitly (and the reason logged)."""
    d = mpqemu_accel.decide()
    log(f"accelerator: {d.why}")
    return ["--accel", d.accel]


def e2e_accel_args():
    """The shared guest-e2e harness's --accel/--irq-poll for this host: the project's decision,
    never the harness's own."""
    args = mpqemu_accel.e2e_args()
    log(f"accelerator: {mpqemu_accel.decide().why}")
    return args


class Sandbox:
    """A private TMPDIR plus a tag that marks every process the test starts."""

    def __init__(self, name):
        self.tag = f"mpqt-{name}-{secrets.token_hex(4)}"
        self.tmp = tempfile.mkdtemp(prefix=self.tag + "-")
        self.env = dict(os.environ, TMPDIR=self.tmp, MPQ_BUILD_DIR=BUILD, PYTHONDONTWRITEBYTECODE="1")

    def tag_args(self, remote="mpqemu"):
        """--remote-arg/--vmm-arg that put our tag into every child's command line."""
        return [f"--remote-arg=-name {self.tag}", f"--vmm-arg=-name {self.tag}"]

    def path(self, name):
        return os.path.join(self.tmp, name)

    def processes(self):
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.tag in cmd:
                found.append((int(pid), cmd[:200]))
        return found

    def assert_clean(self, keep=()):
        """No tagged process survives; TMPDIR holds nothing but `keep`."""
        deadline = time.monotonic() + 3
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.processes()
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if left:
            fail(f"processes left behind: {left}")
        extra = sorted(set(os.listdir(self.tmp)) - set(keep))
        if extra:
            fail(f"temporary files left behind in TMPDIR: {extra}")

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(argv, sandbox, timeout, check_rc=None):
    """Run argv to completion; returns (rc, stdout, stderr), echoing both."""
    log("$ " + " ".join(argv))
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, env=sandbox.env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        fail(f"did not finish within {timeout}s; output so far:\n{e.stdout}\n{e.stderr}")
    log(f"rc={r.returncode} after {time.monotonic() - t0:.1f}s")
    sys.stdout.write(r.stdout)
    sys.stdout.write(r.stderr)
    sys.stdout.flush()
    if check_rc is not None and r.returncode != check_rc:
        fail(f"exit status {r.returncode}, expected {check_rc}")
    return r.returncode, r.stdout, r.stderr


def launcher(args, sandbox, timeout=600, check_rc=None, perf=False):
    script = PERF_LAUNCHER if perf else LAUNCHER
    return run([sys.executable, script] + args, sandbox, timeout, check_rc)


def start_launcher(args, sandbox):
    """Start the launcher in the background (for lifecycle tests)."""
    argv = [sys.executable, LAUNCHER] + args
    log("$ " + " ".join(argv) + " &")
    return subprocess.Popen(argv, env=sandbox.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_line(proc, pattern, timeout, seen):
    """Read proc's output until a line matches; returns the match (output kept in seen)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                continue
            line = proc.stdout.readline()
            if not line:
                return None
            seen.append(line)
            sys.stdout.write(line)
            m = rx.search(line)
            if m:
                return m
        return None
    finally:
        sel.close()


def image(sandbox, name, fmt, size="64M"):
    path = sandbox.path(name)
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, size], check=True)
    return path
