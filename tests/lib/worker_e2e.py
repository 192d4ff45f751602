"""A real guest (stock QEMU as the VMM, the shared guest-e2e harness) on our
remote with -x-worker on, while the device worker is disrupted about every
0.5 s: killed (SIGKILL; every fourth death a SIGSEGV, and every fourth a
forbidden syscall the worker makes itself, which its seccomp filter answers
with SIGSYS; at least 10 deaths) or
replaced by a live update (QMP x-worker-restart; at least 20). The guest
verifies its data, the harness checks the image (qemu-img check for qcow2),
and the console shows no I/O error: stock QEMU's proxy never learns that
anything happened. The tests/guest/test_e2e_worker_*.py cases choose the disk
format and the disruption; `python3 tests/lib/worker_e2e.py --suite` runs the
longer suite: the basic, fs (ext2) and perf workloads on raw and qcow2, each
with kills and with live updates (12 guest runs, about 3 minutes on 2 cores)."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import guesttest as gt
from monitor_client import QmpClient

MIN_KILLS = 10
MIN_UPDATES = 20


class Disruption:
    KILL = "kill"
    LIVE_UPDATE = "live-update"


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def tagged(tag):
    """(pid, command line) of the processes whose command line has `tag`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if tag.encode() in cmd:
            out.append((pid, cmd))
    return out


def workers(tag):
    """Live workers of the remote named `tag`: a qemu-scsi-dev whose parent
    (the supervisor) is a qemu-scsi-dev as well."""
    return [pid for pid, _ in tagged(tag)
            if comm(pid) == "qemu-scsi-dev" and comm(ppid(pid)) == "qemu-scsi-dev"]


def live_update(qmp_path):
    """One x-worker-restart. The monitor socket is the worker's: a
    successor opens it again, so every update is a new connection."""
    c = QmpClient(qmp_path)
    try:
        c.negotiate()
        r = c.cmd("x-worker-restart")
    finally:
        c.close()
    if "return" not in r:
        raise RuntimeError("x-worker-restart: %r" % r)


def prerequisites():
    """The shared harness and our remote, or a skip/failure saying what is missing."""
    gt.require_host()
    harness = os.path.join(gt.SHARED, "tools", "guest-e2e", "run-e2e.py")
    if not os.path.isfile(harness):
        gt.skip("shared harness not found at %s (MPQ_SHARED_DIR)" % harness)
    return harness, gt.require_our_remote()


def run(disk_format, disruption, workload="basic"):
    harness, remote = prerequisites()
    sb = gt.Sandbox("e2ekill")
    qmp_path = os.path.join(sb.tmp, "qmp.sock")
    # A byte written here makes the running worker fault ('x': a forbidden
    # syscall); the harness starts the remote, so a FIFO, not an fd.
    fault_path = os.path.join(sb.tmp, "fault.fifo")
    os.mkfifo(fault_path)
    template = ("%s {fd} -name %s -x-worker on -device lsi53c895a,id=lsi0 "
                "-drive id=d0,file={disk},format={format},if=none "
                "-device scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0 "
                "-qmp unix:%s,server=on,wait=off -x-test-worker-fault path=%s"
                % (remote, sb.tag, qmp_path, fault_path))
    argv = [sys.executable, harness, "--remote-cmd", template, "--workload", workload,
            "--disk-format", disk_format, "--timeout", "400", "--workdir-base", sb.tmp,
            "--main-extra", "-name %s" % sb.tag,
            "--keep-logs", os.path.join(sb.tmp, "logs")] + gt.e2e_accel_args()
    kills = []
    update_errors = []
    stop = threading.Event()

    def killer():
        while not stop.wait(0.5):
            for pid in workers(sb.tag):
                if disruption == Disruption.KILL:
                    # Not only kills: a crash (SIGSEGV) and a worker that
                    # breaks its sandbox (SIGSYS from its seccomp filter).
                    n = len(kills) % 4
                    try:
                        if n == 3:
                            fd = os.open(fault_path, os.O_WRONLY | os.O_NONBLOCK)
                            try:
                                os.write(fd, b"x")
                            finally:
                                os.close(fd)
                        else:
                            os.kill(pid, signal.SIGSEGV if n == 1 else signal.SIGKILL)
                        kills.append(pid)
                    except (ProcessLookupError, OSError):
                        pass
                    continue
                try:
                    live_update(qmp_path)
                    kills.append(pid)
                except (OSError, EOFError, ValueError, RuntimeError) as e:
                    # A monitor that is being opened again by a successor
                    # refuses or drops the connection: the next round retries.
                    update_errors.append(str(e))

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        rc, out, err = gt.run(argv, sb, timeout=500)
    finally:
        stop.set()
        th.join()
    text = out + err

    def kept(name):
        try:
            with open(os.path.join(sb.tmp, "logs", name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""
    console = kept("console.log") + kept("dmesg.txt")
    remote_log = kept("remote-stderr.log") + kept("remote.log")
    want = MIN_KILLS if disruption == Disruption.KILL else MIN_UPDATES
    what = "worker kills" if disruption == Disruption.KILL else "live updates"
    if rc != 0 or not re.search(r"^E2E PASS", out, re.M):
        gt.fail("guest-e2e %s/%s with %s: rc=%s after %d" % (workload, disk_format, what, rc, len(kills)))
    if len(kills) < want:
        gt.fail("only %d %s during the run (want %d; %d refused: %s)"
                % (len(kills), what, want, len(update_errors), update_errors[-3:]))
    if not console:
        gt.fail("no guest console kept")
    bad = [l for l in console.splitlines()
           if re.search(r"I/O error|abort|ABORT|timing out|timed out|rejecting I/O|error handler|"
                        r"host reset|offline", l)]
    # sym53c8xx resets the bus once when it starts; another reset is its
    # error handler at work.
    resets = kept("console.log").count("SCSI BUS has been reset")
    if resets > 1:
        bad.append("%d SCSI bus resets" % resets)
    # The disk's power-on unit attention is seen once, at probe; another
    # one would be a worker that came up from power-on instead of the state.
    power_on = kept("console.log").count("Power-on or device reset occurred")
    if power_on > 1:
        bad.append("%d power-on unit attentions" % power_on)
    if bad:
        gt.fail("the guest saw the deaths:\n" + "\n".join(bad[:20]))
    restarts = len(re.findall(r"starting (?:a|its) successor", remote_log))
    if restarts < want:
        gt.fail("the remote restarted its worker %d times (want >= %d)" % (restarts, want))
    if disruption == Disruption.KILL:
        for cause in ("SIGKILL", "SIGSEGV", "SIGSYS"):
            if not re.search(r"died \(signal \d+ \(%s\)\)" % cause, remote_log):
                gt.fail("no worker death by %s in the remote's log" % cause)
    sb.assert_clean(keep=("logs", "qmp.sock", "fault.fifo"))
    sb.cleanup()
    print("PASS (%s, %s, %d %s, %d restarts)" % (workload, disk_format, len(kills), what, restarts))


def io_bytes(pid):
    """read + write bytes the process moved through files so far."""
    try:
        with open("/proc/%d/io" % pid) as f:
            v = dict(l.split(": ") for l in f.read().splitlines())
        return int(v["rchar"]) + int(v["wchar"])
    except (OSError, KeyError, ValueError):
        return 0


def what_guest_sees(kind):
    """One guest run (basic workload, raw) in which the device process dies
    once, by SIGKILL, after the guest has started using the disk: `stock`
    kills stock QEMU's remote, `single` our remote without a worker (the
    whole process), `worker` our worker under its supervisor. Returns the
    harness's verdict and the first lines of the guest console that show
    the death, for the table in bench/README.md."""
    harness, remote = prerequisites()
    sb = gt.Sandbox("e2edeath")
    common = ("-device lsi53c895a,id=lsi0 -drive id=d0,file={disk},format={format},if=none "
              "-device scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0")
    if kind == "stock":
        template = ("qemu-system-x86_64 -name %s -machine x-remote -nodefaults -display none %s "
                    "-object x-remote-object,id=robj0,devid=lsi0,fd={fd}" % (sb.tag, common))
    else:
        template = "%s {fd} -name %s %s%s" % (remote, sb.tag, common,
                                              " -x-worker on" if kind == "worker" else "")
    if kind != "worker":
        # The harness stops the guest as soon as its remote dies; run the
        # remote under a shell that outlives it (and closes its own copy of
        # the socket, so the proxy does see the death), to see what the
        # guest sees.
        template = "sh -c '%s & exec {fd}>&-; wait; sleep 300'" % template
    argv = [sys.executable, harness, "--remote-cmd", template, "--workload", "basic",
            "--disk-format", "raw", "--timeout", "150", "--workdir-base", sb.tmp,
            "--main-extra", "-name %s" % sb.tag,
            "--keep-logs", os.path.join(sb.tmp, "logs")] + gt.e2e_accel_args()
    killed = []
    stop = threading.Event()

    def victims():
        if kind == "worker":
            return workers(sb.tag)
        # The remote itself: not the VMM (the proxy's process), not the
        # harness or the shell around the remote.
        return [pid for pid, cmd in tagged(sb.tag)
                if b"x-pci-proxy-dev" not in cmd and comm(pid) in ("qemu-scsi-dev", "qemu-system-x86")]

    def killer():
        # Once the device process has moved a few MiB (the guest booted and
        # its workload runs), one SIGKILL.
        base = None
        while not stop.wait(0.05):
            v = victims()
            if not v:
                continue
            moved = io_bytes(v[0])
            base = moved if base is None else base
            if moved - base > (4 << 20):
                os.kill(v[0], signal.SIGKILL)
                killed.append(time.monotonic())
                return

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        r = subprocess.run(argv, env=sb.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=300)
        rc, out = r.returncode, r.stdout + r.stderr
    finally:
        stop.set()
        th.join()
    console = ""
    for name in ("console.log", "dmesg.txt"):
        try:
            with open(os.path.join(sb.tmp, "logs", name), errors="replace") as f:
                console += f.read()
        except OSError:
            pass
    seen = [l.strip() for l in console.splitlines()
            if re.search(r"I/O error|abort|ABORT|timing out|timed out|rejecting I/O|error handler|"
                         r"host reset|offline|Buffer I/O|hung|blocked for more", l)]
    if not seen and kind != "worker":
        # Nothing the driver said: the last thing the guest printed.
        seen = ["(last console line) " + l.strip() for l in console.splitlines()[-1:]]
    fails = re.findall(r"FAIL: (.*)", out)
    verdict = "PASS" if re.search(r"^E2E PASS", out, re.M) else "FAIL: %s" % (fails[-1][:80] if fails else "rc %s" % rc)
    sb.cleanup()
    return bool(killed), verdict, seen


def death_table():
    print("| device process | killed | guest run | what the guest console shows (first lines) |")
    print("|---|---|---|---|")
    for kind, name in (("stock", "stock QEMU's remote"), ("single", "ours, one process"),
                       ("worker", "ours, `-x-worker on` (the worker killed)")):
        killed, verdict, seen = what_guest_sees(kind)
        shown = "; ".join("`%s`" % l[:110] for l in seen[:3]) or "nothing"
        print("| %s | %s | %s | %s (%d lines) |" % (name, "yes" if killed else "no", verdict, shown, len(seen)),
              flush=True)


def suite():
    """Every workload on both formats with both disruptions, one after the
    other; stops at the first failure (gt.fail exits)."""
    for workload in ("basic", "fs", "perf"):
        for fmt in ("raw", "qcow2"):
            for d in (Disruption.KILL, Disruption.LIVE_UPDATE):
                print("== %s %s %s" % (workload, fmt, d), flush=True)
                run(fmt, d, workload)


if __name__ == "__main__":
    if sys.argv[1:] == ["--suite"]:
        suite()
    elif sys.argv[1:] == ["--death-table"]:
        death_table()
    elif len(sys.argv) == 4:
        run(sys.argv[2], sys.argv[3], sys.argv[1])
    else:
        sys.exit("usage: worker_e2e.py --suite | --death-table | WORKLOAD FORMAT kill|live-update")
