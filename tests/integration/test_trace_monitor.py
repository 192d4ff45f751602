#!/usr/bin/env python3
"""Trace events switched on and off through the monitors while a guest
workload runs: QMP trace-event-set-state / trace-event-get-state and HMP
trace-event / info trace-events, in the VMM (in-process controller) and in
the remote (qemu-scsi-dev under our VMM). The -D log is checked after each
switch: lines appear for the workload's own register values once an event
is on and stop once it is off. Also -trace events=FILE, the warnings for
unknown names and the dropped-lines report of the rate limit."""
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402
from monitor_client import HmpClient, QmpClient  # noqa: E402


class Workload(threading.Thread):
    """Writes SCRATCHA = 0xA5A50000 | i and reads it back, i = 0, 1, ..."""

    def __init__(self, q):
        super().__init__(daemon=True)
        self.q, self.i, self.stop, self.error = q, 0, False, None

    def run(self):
        try:
            while not self.stop:
                v = 0xA5A50000 | (self.i & 0xFFFF)
                self.q.writel(R.MMIO_BASE + R.SCRATCHA, v)
                if self.q.readl(R.MMIO_BASE + R.SCRATCHA) != v:
                    raise RuntimeError("SCRATCHA readback")
                self.i += 1
        except Exception as e:  # reported by the main thread
            self.error = e

    def advance(self, n, timeout=30):
        """Waits until n more iterations ran; returns the counter then."""
        target = self.i + n
        end = time.monotonic() + timeout
        while self.i < target:
            if self.error or time.monotonic() > end:
                raise RuntimeError("workload stalled: %r" % self.error)
            time.sleep(0.005)
        return self.i


# The switch cases count every line of the workload's registers; the
# in-process workload writes well over the default 50,000 lines a second,
# and a line the rate limit dropped would read as a switch that failed.
# (rate_case tests the limit itself.)
NO_RATE_LIMIT = "x-rate-limit=1000000000"


def count(path, needle):
    with open(path, errors="replace") as f:
        return f.read().count(needle)


def switch_case(c, label, q, qmp, hmp, log):
    """The workload runs on `q`; qmp/hmp are the monitors of the process
    whose -D log is `log` (the one with the controller)."""
    w = Workload(q)
    w.start()
    try:
        w.advance(50)
        c.eq(count(log, "lsi_reg_write"), 0, "%s: nothing traced before any switch" % label)
        r = qmp.cmd("trace-event-set-state", {"name": "lsi_reg_*", "enable": True})
        c.eq(r, {"return": {}}, "%s: QMP set-state lsi_reg_* on" % label)
        st = qmp.cmd("trace-event-get-state", {"name": "lsi_reg_*"}).get("return")
        c.eq(st, [{"name": "lsi_reg_write", "vcpu": False, "state": "enabled"},
                  {"name": "lsi_reg_read", "vcpu": False, "state": "enabled"}], "%s: QMP get-state" % label)
        at_on = w.advance(100)
        writes_on = count(log, "lsi_reg_write Write reg SCRATCHA2 0x36 = 0xa5")
        c.check(writes_on >= 100, "%s: the workload's SCRATCHA writes are traced (%d)" % (label, writes_on))
        c.check(count(log, "lsi_reg_read Read reg SCRATCHA3 0x37 = 0xa5") >= 100, "%s: reads traced" % label)
        # HMP: writes off, reads stay on.
        c.eq(hmp.cmd("trace-event lsi_reg_write off"), "", "%s: HMP trace-event off" % label)
        c.eq(hmp.cmd("info trace-events lsi_reg_*"), "lsi_reg_write : state 0\r\nlsi_reg_read : state 1\r\n",
             "%s: HMP info trace-events" % label)
        w.advance(20)
        w1 = count(log, "lsi_reg_write")
        r1 = count(log, "lsi_reg_read")
        w.advance(100)
        c.eq(count(log, "lsi_reg_write"), w1, "%s: no write lines once lsi_reg_write is off" % label)
        c.check(count(log, "lsi_reg_read") >= r1 + 400, "%s: read lines continue" % label)
        # Everything off through QMP; nothing more arrives.
        c.eq(qmp.cmd("trace-event-set-state", {"name": "lsi_*", "enable": False}), {"return": {}},
             "%s: QMP lsi_* off" % label)
        w.advance(20)
        total = count(log, "lsi_")
        w.advance(100)
        c.eq(count(log, "lsi_"), total, "%s: silence once all is off" % label)
        # HMP on again, for one event, by exact name.
        c.eq(hmp.cmd("trace-event lsi_reg_read on"), "", "%s: HMP trace-event on" % label)
        r2 = count(log, "lsi_reg_read")
        w.advance(100)
        c.check(count(log, "lsi_reg_read") >= r2 + 400, "%s: read lines again after HMP on" % label)
        c.eq(qmp.cmd("trace-event-set-state", {"name": "lsi_reg_read", "enable": False}), {"return": {}},
             "%s: off again" % label)
        c.check(at_on > 0, "%s: workload ran" % label)
    finally:
        w.stop = True
        w.join(30)
    c.check(w.error is None, "%s: workload error %r" % (label, w.error))
    # QEMU's answers for names that do not exist.
    c.eq(qmp.cmd("trace-event-get-state", {"name": "nosuch"}),
         {"error": {"class": "GenericError", "desc": "unknown event \"nosuch\""}}, "%s: unknown exact name" % label)
    c.eq(qmp.cmd("trace-event-get-state", {"name": "nosuch*"}), {"return": []}, "%s: empty pattern" % label)
    c.eq(qmp.cmd("trace-event-set-state", {"name": "nosuch*", "enable": True}), {"return": {}},
         "%s: set on an empty pattern" % label)
    c.eq(qmp.cmd("trace-event-set-state", {"name": "lsi_reset"}),
         {"error": {"class": "GenericError", "desc": "Parameter 'enable' is missing"}}, "%s: enable missing" % label)
    c.eq(hmp.cmd("trace-event nosuch on"), "unknown event \"nosuch\"\r\n", "%s: HMP unknown event" % label)
    c.eq(hmp.cmd("trace-event lsi_reset maybe"),
         "Expected 'on' or 'off'\r\nTry \"help trace-event\" for more information\r\n", "%s: HMP bad state" % label)
    names = re.findall(r"^(\S+) : state [01]\r$", hmp.cmd("info trace-events"), re.M)
    c.check("lsi_reg_write" in names and "scsi_disk_new_request" in names and "mpq_proxy_mirror_hit" in names,
            "%s: info trace-events lists all (%d)" % (label, len(names)))


def vmm_case(c, tmp, disk):
    log = os.path.join(tmp, "vmm.trace")
    qmp_path, hmp_path = os.path.join(tmp, "vmm-qmp.sock"), os.path.join(tmp, "vmm-hmp.sock")
    rig = R.Rig(tmp, memfd=False, vmm_args=[
        "-device", "lsi53c895a,id=lsi0", "-drive", "if=none,id=d0,file=%s,format=raw" % disk,
        "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0", "-D", log, "-trace", NO_RATE_LIMIT,
        "-qmp", "unix:%s,server,nowait" % qmp_path, "-monitor", "unix:%s,server,nowait" % hmp_path])
    try:
        R.program_bars(rig.q, 2)
        qmp = QmpClient(qmp_path, rig.vmm)
        qmp.negotiate()
        hmp = HmpClient(hmp_path, rig.vmm)
        switch_case(c, "vmm", rig.q, qmp, hmp, log)
        qmp.close()
        hmp.close()
    finally:
        rig.stop()


def remote_case(c, tmp, disk):
    log = os.path.join(tmp, "remote.trace")
    qmp_path, hmp_path = os.path.join(tmp, "r-qmp.sock"), os.path.join(tmp, "r-hmp.sock")
    argv = R.our_remote_argv([("lsi0", disk)]) + [
        "-D", log, "-trace", NO_RATE_LIMIT, "-qmp", "unix:%s,server,nowait" % qmp_path, "-monitor", "unix:%s,server,nowait" % hmp_path]
    # Without the register mirror every read reaches the device (and its trace).
    rig = R.Rig(tmp, remotes=[(argv, ["lsi0"])], proxy="pci-proxy-dev",
                proxy_props=",x-resample-wait-us=200000,x-reg-mirror=off")
    try:
        R.program_bars(rig.q, 2)
        qmp = QmpClient(qmp_path, rig.remote_procs[0])
        qmp.negotiate()
        hmp = HmpClient(hmp_path, rig.remote_procs[0])
        switch_case(c, "remote", rig.q, qmp, hmp, log)
        qmp.close()
        hmp.close()
    finally:
        rig.stop()


def options_case(c, tmp):
    vmm = R.program("mpqemu-system-x86_64")
    ev = os.path.join(tmp, "events.txt")
    with open(ev, "w") as f:
        f.write("lsi_reg_write\n# a comment\n\nlsi_bogus\n-lsi_reg_write\nlsi_res*\n")
    r = subprocess.run([vmm, "-trace", "events=%s" % ev, "-trace", "zzz*", "-trace", "nosuch_event",
                        "-trace", "help"], capture_output=True, text=True, timeout=30)
    c.eq(r.returncode, 0, "-trace help exits 0")
    c.check(r.stdout.split("\n")[0] == "lsi_reset" and "scsi_disk_new_request" in r.stdout.split("\n"),
            "-trace help lists the events in table order")
    c.check("%s:4: warning: trace event 'lsi_bogus' does not exist" % ev in r.stderr,
            "events=FILE: unknown name warned with file:line (%r)" % r.stderr)
    c.check("-trace nosuch_event: warning: trace event 'nosuch_event' does not exist" in r.stderr,
            "-trace NAME: unknown name warned")
    c.check("zzz" not in r.stderr, "-trace PATTERN matching nothing is silent")
    r = subprocess.run([vmm, "-trace", "foo=bar"], capture_output=True, text=True, timeout=30)
    c.check(r.returncode == 1 and "-trace foo=bar: Invalid parameter 'foo'" in r.stderr, "-trace bad key refused")
    r = subprocess.run([vmm, "-trace", "events=/nonexistent/x"], capture_output=True, text=True, timeout=30)
    c.check(r.returncode == 1 and "/nonexistent/x: No such file or directory" in r.stderr, "missing events file")


def rate_case(c, tmp, disk):
    """A guest that makes more trace lines than the budget: lines are
    dropped, counted, and the count is reported in the log."""
    log = os.path.join(tmp, "rate.trace")
    rig = R.Rig(tmp, memfd=False, vmm_args=[
        "-device", "lsi53c895a,id=lsi0", "-trace", "lsi_reg_*,x-rate-limit=50", "-D", log])
    try:
        R.program_bars(rig.q, 2)
        for i in range(200):
            rig.q.writel(R.MMIO_BASE + R.SCRATCHA, i)
        time.sleep(1.1)  # next second's budget: the report line goes out with the next event
        rig.q.writel(R.MMIO_BASE + R.SCRATCHA, 1)
    finally:
        rig.stop()
    text = open(log, errors="replace").read()
    m = re.findall(r"^mpq_trace_dropped (\d+) trace lines dropped by the rate limit$", text, re.M)
    lines = text.count("lsi_reg_write")
    c.check(bool(m) and int(m[0]) > 0, "rate limit: dropped lines reported (%r)" % m)
    c.check(lines <= 50 + 4 * 2 + 50, "rate limit: at most the budget per second got through (%d)" % lines)
    c.eq(lines + sum(int(x) for x in m), 800 + 4, "rate limit: every line either written or counted")


def main():
    tmp = R.tmpdir("trace-mon-")
    disk = R.make_disk(os.path.join(tmp, "disk.img"), 2)
    c = R.Checker()
    options_case(c, tmp)
    vmm_case(c, tmp, disk)
    remote_case(c, tmp, disk)
    rate_case(c, tmp, disk)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
