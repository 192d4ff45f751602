#!/usr/bin/env python3
"""A real guest (stock QEMU as the VMM, the shared guest-e2e harness, basic
workload, raw disk) on our remote with -x-worker on, while this test kills
the device worker about every 0.5 s (SIGKILL; at least 10 kills). The guest
verifies its data, the harness checks the image, and the console shows no
I/O error: stock QEMU's proxy never learns that anything happened."""
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guesttest as gt  # noqa: E402

MIN_KILLS = 10


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


def workers(tag):
    """Live workers of the remote named `tag`: a qemu-scsi-dev whose parent
    (the supervisor) is a qemu-scsi-dev as well."""
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
        if tag.encode() not in cmd or comm(pid) != "qemu-scsi-dev":
            continue
        if comm(ppid(pid)) == "qemu-scsi-dev":
            out.append(pid)
    return out


def main():
    gt.require_host()
    harness = os.path.join(gt.SHARED, "tools", "guest-e2e", "run-e2e.py")
    if not os.path.isfile(harness):
        gt.skip("shared harness not found at %s (MPQ_SHARED_DIR)" % harness)
    remote = gt.require_our_remote()
    sb = gt.Sandbox("e2ekill")
    template = ("%s {fd} -name %s -x-worker on -device lsi53c895a,id=lsi0 "
                "-drive id=d0,file={disk},format={format},if=none "
                "-device scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0" % (remote, sb.tag))
    argv = [sys.executable, harness, "--remote-cmd", template, "--workload", "basic",
            "--disk-format", "raw", "--timeout", "400", "--workdir-base", sb.tmp,
            "--main-extra", "-name %s" % sb.tag,
            "--keep-logs", os.path.join(sb.tmp, "logs")] + gt.e2e_accel_args()
    kills = []
    stop = threading.Event()

    def killer():
        # The first kill once the guest's driver talks to the device.
        while not stop.wait(0.5):
            for pid in workers(sb.tag):
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass

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
    if rc != 0 or not re.search(r"^E2E PASS", out, re.M):
        gt.fail("guest-e2e basic/raw with worker kills: rc=%s after %d kills" % (rc, len(kills)))
    if len(kills) < MIN_KILLS:
        gt.fail("only %d kills during the run (want %d)" % (len(kills), MIN_KILLS))
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
    restarts = remote_log.count("starting a successor")
    if restarts < MIN_KILLS:
        gt.fail("the remote restarted its worker %d times (want >= %d)" % (restarts, MIN_KILLS))
    sb.assert_clean(keep=("logs",))
    sb.cleanup()
    print("PASS (%d worker kills, %d restarts)" % (len(kills), restarts))


if __name__ == "__main__":
    main()
