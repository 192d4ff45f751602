#!/usr/bin/env python3
"""-x-worker on: the device worker of qemu-scsi-dev is killed at random
moments (SIGKILL, SIGSEGV, a forbidden syscall) under a register/SCRIPTS/SCSI
workload driven by our VMM (qtest); the supervisor starts successors that
carry on from the published state. The workload must end with the same
registers, guest memory and disk content as without kills, for several
seeds. Then: a request that kills two workers in a row is answered as a dead
device (logged, never retried) while the device keeps serving; and a worker
that keeps dying makes the remote give up with a non-zero exit."""
import os
import random
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402
import monitor_client as mc  # noqa: E402

SCRATCHA = 0x34
SCRATCHB = 0x5c
POISON = 0x0badf00d


def worker_pid(sup):
    return fr.worker_pid(sup)


def wait_worker(sup, not_pid=None, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        p = worker_pid(sup)
        if p and p != not_pid:
            return p
        time.sleep(0.002)
    raise AssertionError("no worker after %s s" % timeout)


class Killer(threading.Thread):
    """Kills the worker at random moments: mostly SIGKILL, sometimes a
    SIGSEGV or a forbidden syscall through the test-only fault fd."""

    def __init__(self, sup, fault_w, seed):
        super().__init__(daemon=True)
        self.sup, self.fault_w = sup, fault_w
        self.rnd = random.Random(seed)
        self.stop_ev = threading.Event()
        self.kills = {"kill": 0, "segv": 0, "syscall": 0, "publish": 0, "consume": 0}

    def run(self):
        # At most 8 per run (well below the give-up limit, 30 within 10 s).
        while sum(self.kills.values()) < 8 and not self.stop_ev.wait(self.rnd.uniform(0.03, 0.25)):
            pid = worker_pid(self.sup)
            if not pid:
                continue
            r = self.rnd.random()
            nth = sum(self.kills.values())
            if nth == 1:
                r = 0.0  # every run has each kind at least once
            elif nth == 3:
                r = 0.2
            elif nth in (4, 6):
                r = 0.3  # inside a publish: after it, before the consume
            elif nth in (5, 7):
                r = 0.4  # after the consume, before the replies are marked sent
            if r < 0.15:
                os.write(self.fault_w, b"s")
                self.kills["segv"] += 1
            elif r < 0.25:
                os.write(self.fault_w, b"x")
                self.kills["syscall"] += 1
            elif r == 0.3:
                os.write(self.fault_w, b"p")
                self.kills["publish"] += 1
            elif r == 0.4:
                os.write(self.fault_w, b"c")
                self.kills["consume"] += 1
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.kills["kill"] += 1
            try:
                wait_worker(self.sup, not_pid=pid)
            except AssertionError:
                return


def workload(rig, seed, disk_mib, ops=400, more=None):
    """A deterministic program; returns what must be true at the end."""
    rnd = random.Random(seed)
    expect = {}
    regs = {}
    nblocks = disk_mib * 2048
    i = -1
    while True:
        i += 1
        # At least `ops` operations; more while `more()` says so (the
        # killer has not done all its kills yet), bounded.
        if i >= ops and (more is None or not more() or i >= 20 * ops):
            break
        op = rnd.random()
        if op < 0.45:
            n = rnd.choice([1, 2, 8])
            lba = rnd.randrange(0, nblocks - n)
            data = b"".join(fr.pattern(lba + k, seed * 1000 + i, 1) for k in range(n))
            ok, st = rig.write_blocks(lba, data)
            assert ok, "seed %d op %d: write LBA %d failed (status %r)" % (seed, i, lba, st)
            for k in range(n):
                expect[lba + k] = data[512 * k:512 * (k + 1)]
        elif op < 0.75 and expect:
            lba = rnd.choice(sorted(expect))
            ok, st, got = rig.read_blocks(lba, 1)
            assert ok and got == expect[lba], "seed %d op %d: read LBA %d: ok=%r status=%r" % (
                seed, i, lba, ok, st)
        else:
            reg = rnd.choice([SCRATCHA, SCRATCHB])
            v = rnd.randrange(0, 1 << 32)
            if v == POISON:
                v ^= 1
            rig.q.writel(rig.lsi.mmio + reg, v)
            regs[reg] = v
            got = rig.q.readl(rig.lsi.mmio + reg)
            assert got == v, "seed %d op %d: register 0x%x reads 0x%x, wrote 0x%x" % (seed, i, reg, got, v)
    return expect, regs


def restarts_in(log):
    return log.count("starting a successor")


def kill_run(seed, with_kills, vmm="ours"):
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        fr.make_raw(disk, 4)
        fault_r, fault_w = os.pipe()
        qmp = os.path.join(tmp, "remote.qmp")
        hmp = os.path.join(tmp, "remote.hmp")
        rig = fr.Rig(tmp, disk, vmm=vmm,
                     remote_args=["-x-worker", "on", "-x-test-worker-fault", "fd=%d" % fault_r,
                                  "-qmp", "unix:%s,server=on,wait=off" % qmp,
                                  "-monitor", "unix:%s,server=on,wait=off" % hmp])
        rig.start(extra_pass_fds=[fault_r])
        killer = None
        try:
            wait_worker(rig.remote.pid)
            # The supervisor runs under its own seccomp filter (mode 2).
            with open("/proc/%d/status" % rig.remote.pid) as f:
                assert "Seccomp:\t2" in f.read(), "the supervisor is not sandboxed"
            # Monitor clients connected before the kills stay connected
            # through all of them (the supervisor keeps their sockets).
            watch = mc.QmpClient(qmp, rig.remote)
            watch.negotiate()
            hwatch = mc.HmpClient(hmp, rig.remote)
            if with_kills:
                killer = Killer(rig.remote.pid, fault_w, seed)
                killer.start()
            try:
                expect, regs = workload(rig, seed, 4,
                                        more=(lambda: killer.is_alive()) if killer else None)
            except AssertionError as e:
                raise AssertionError("%s\nremote log:\n%s" % (e, rig.log("remote")[-6000:]))
            if killer:
                killer.stop_ev.set()
                killer.join()
            # The end state: registers, guest memory (every written block
            # read back into guest RAM) and the image.
            for reg, v in regs.items():
                got = rig.q.readl(rig.lsi.mmio + reg)
                assert got == v, "seed %d: final register 0x%x = 0x%x, want 0x%x" % (seed, reg, got, v)
            for lba, data in sorted(expect.items()):
                ok, st, got = rig.read_blocks(lba, 1)
                assert ok and got == data, "seed %d: final read LBA %d: ok=%r" % (seed, lba, ok)
            log = rig.log("remote")
            assert rig.remote.poll() is None, "the remote exited:\n" + log
            n = restarts_in(log)
            # The clients from before the kills: still served, by the last
            # worker, which told them of its start. A worker killed before it
            # got to serving says nothing; its successor counts it.
            w = watch.cmd("x-query-worker")["return"]
            seen = [e["data"]["restarts"] for e in watch.events if e["event"] == "WORKER_RESTARTED"]
            watch.close()
            assert w["restarts"] == n, (w, n)
            if n:
                assert seen and seen[-1] == n and seen == sorted(set(seen)), (seen, n, log)
            else:
                assert not seen, seen
            hout = hwatch.cmd("info worker")
            hwatch.close()
            assert ("worker pid %d, restarts %d," % (w["pid"], n)) in hout, hout
            # New clients are served too (the same listener).
            c = mc.QmpClient(qmp, rig.remote)
            c.negotiate()
            r = c.cmd("x-query-worker")["return"]
            hp = c.cmd("device_add", {"driver": "scsi-hd", "id": "sd9", "drive": "d0", "bus": "lsi0.0",
                                      "scsi-id": 3})
            c.close()
            assert "error" in hp and "-x-worker on" in hp["error"]["desc"], hp
            assert r["pid"] == worker_pid(rig.remote.pid), r
            assert r["restarts"] == n and r["state-version"] == 2, (r, n)
            assert r["published-rounds"] > 0, r
            if n:
                assert set(r["last-exit"]) <= {"signal", "status"} and r["last-exit"], r
            else:
                assert "last-exit" not in r, r
            h = mc.HmpClient(hmp, rig.remote)
            out = h.cmd("info worker")
            h.close()
            assert ("worker pid %d, restarts %d," % (r["pid"], n)) in out, out
            if killer:
                total = sum(killer.kills.values())
                assert total >= 5, "only %d kills:\n%s" % (total, log)
                assert n >= total - 1, "%d kills but %d restarts in the log:\n%s" % (total, n, log)
                assert "dead device" not in log, "a kill was taken for a poison request:\n" + log
            else:
                assert n == 0, log
        finally:
            if killer:
                killer.stop_ev.set()
            rig.stop()
            os.close(fault_r)
            os.close(fault_w)
        for lba, data in expect.items():
            assert fr.file_blocks(disk, lba, 1) == data, "seed %d: image at LBA %d" % (seed, lba)
        return (killer.kills if killer else None), n


def live_update_run(seed, updates=20):
    """x-worker-restart while the workload runs: each time a new worker
    carries the state on; nothing counts as a crash."""
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        fr.make_raw(disk, 4)
        qmp = os.path.join(tmp, "remote.qmp")
        rig = fr.Rig(tmp, disk, vmm="ours",
                     remote_args=["-x-worker", "on", "-qmp", "unix:%s,server=on,wait=off" % qmp])
        rig.start()
        done = []
        errors = []
        # Connected through every update: sees each successor's event.
        watch = mc.QmpClient(qmp, rig.remote)
        watch.negotiate()

        def updater():
            try:
                for _ in range(updates):
                    time.sleep(0.03)
                    old = wait_worker(rig.remote.pid)
                    c = mc.QmpClient(qmp, rig.remote)
                    c.negotiate()
                    # In turn: the running binary, a new binary by path, one
                    # handed over as an fd (getfd), as a sandboxed worker
                    # cannot open it itself.
                    how = len(done) % 3
                    if how == 0:
                        r = c.cmd("x-worker-restart")
                    elif how == 1:
                        r = c.cmd("x-worker-restart", {"binary": fr.remote_binary()})
                    else:
                        fd = os.open(fr.remote_binary(), os.O_RDONLY)
                        try:
                            g = mc.send_fd(c, "getfd", {"fdname": "newbin"}, fd)
                        finally:
                            os.close(fd)
                        assert g == {"return": {}}, g
                        r = c.cmd("x-worker-restart", {"binary": "newbin"})
                    c.close()
                    if r != {"return": {}}:
                        errors.append(r)
                        return
                    new = wait_worker(rig.remote.pid, not_pid=old)
                    # The listener is the one from before (kept by the
                    # supervisor): a connection made while no worker serves
                    # waits for the successor instead of being refused.
                    c = mc.QmpClient(qmp, rig.remote)
                    c.negotiate()
                    w = c.cmd("x-query-worker")["return"]
                    c.close()
                    assert w["pid"] == new, (w, new)
                    # Until a binary is chosen the successor is a fork of the
                    # remote's image; from then on it is exec'd from that binary.
                    with open("/proc/%d/cmdline" % new, "rb") as f:
                        execd = b"-x-worker-successor" in f.read()
                    assert execd == (len(done) > 0), (len(done), execd)
                    done.append(1)
            except Exception as e:  # reported by the main thread
                errors.append(repr(e))

        th = threading.Thread(target=updater, daemon=True)
        th.start()
        try:
            try:
                expect, regs = workload(rig, seed, 4, more=th.is_alive)
            except AssertionError as e:
                raise AssertionError("%s\nremote log:\n%s" % (e, rig.log("remote")[-6000:]))
            th.join(60)
            assert not errors, errors
            assert len(done) == updates, (len(done), rig.log("remote")[-3000:])
            for reg, v in regs.items():
                assert rig.q.readl(rig.lsi.mmio + reg) == v
            for lba, data in sorted(expect.items()):
                ok, st, got = rig.read_blocks(lba, 1)
                assert ok and got == data, "live update: final read LBA %d" % lba
            c = mc.QmpClient(qmp, rig.remote)
            c.negotiate()
            r = c.cmd("x-query-worker")["return"]
            assert r["restarts"] == updates, r
            w = watch.cmd("x-query-worker")["return"]
            assert w["pid"] == r["pid"], (w, r)
            ev = [e["data"] for e in watch.events if e["event"] == "WORKER_RESTARTED"]
            watch.close()
            assert [e["restarts"] for e in ev] == list(range(1, updates + 1)), ev
            assert all(e["cause"] == "live update" for e in ev), ev
            # Binaries that cannot take the state over are refused before
            # the worker stops: one that writes another state format, one
            # that says nothing, one that is not there.
            pid, sv = r["pid"], r["state-version"]
            other = os.path.join(tmp, "other-format")
            with open(other, "w") as f:
                f.write("#!/bin/sh\necho 'mpq-state-version %d'\n" % (sv + 1))
            os.chmod(other, 0o755)
            r = c.cmd("x-worker-restart", {"binary": other})
            assert "error" in r and "incompatible" in r["error"]["desc"], r
            assert "format %d" % (sv + 1) in r["error"]["desc"], r
            fd = os.open(other, os.O_RDONLY)
            try:
                assert mc.send_fd(c, "getfd", {"fdname": "other"}, fd) == {"return": {}}
            finally:
                os.close(fd)
            r = c.cmd("x-worker-restart", {"binary": "other"})
            assert "error" in r and "incompatible" in r["error"]["desc"], r
            r = c.cmd("x-worker-restart", {"binary": "/bin/true"})
            assert "error" in r and "does not report a device state format" in r["error"]["desc"], r
            r = c.cmd("x-worker-restart", {"binary": os.path.join(tmp, "absent")})
            assert "error" in r and "cannot open" in r["error"]["desc"], r
            time.sleep(0.05)
            r = c.cmd("x-query-worker")["return"]
            assert r["pid"] == pid and r["restarts"] == updates, r
            ok, st, got = rig.read_blocks(3, 1)
            assert ok, "the device after the refusals"
            c.close()
            log = rig.log("remote")
            assert restarts_in(log) == 0, "a live update was taken for a crash:\n" + log
            assert log.count("left for a live update") == updates, log
            # A crash after the update: the successor comes from the new
            # binary too, and carries on.
            os.kill(pid, signal.SIGKILL)
            ok, st, got = rig.read_blocks(3, 1)
            assert ok and got == expect.get(3, got), "read after a kill following the updates"
            new = wait_worker(rig.remote.pid, not_pid=pid)
            with open("/proc/%d/cmdline" % new, "rb") as f:
                assert b"-x-worker-successor" in f.read()
            lba, data = sorted(expect.items())[-1]
            ok, st, got = rig.read_blocks(lba, 1)
            assert ok and got == data, "read after a kill following the updates"
            assert restarts_in(rig.log("remote")) == 1
        finally:
            rig.stop()
        for lba, data in expect.items():
            assert fr.file_blocks(disk, lba, 1) == data, "live update: image at LBA %d" % lba


def poison_and_give_up():
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        fr.make_raw(disk, 4)
        rig = fr.Rig(tmp, disk, vmm="ours",
                     remote_args=["-x-worker", "on", "-x-test-worker-poison", str(POISON)])
        rig.start()
        try:
            data = fr.pattern(10, 7, 1)
            ok, st = rig.write_blocks(10, data)
            assert ok
            rig.q.writel(rig.lsi.mmio + SCRATCHA, 0x12345678)
            # Kills the worker, then its successor: the third answers it as a
            # dead device; the write is dropped and the device carries on.
            rig.q.writel(rig.lsi.mmio + SCRATCHB, POISON)
            got = rig.q.readl(rig.lsi.mmio + SCRATCHB)  # after the (posted) write
            log = rig.log("remote")
            assert restarts_in(log) == 2, "want 2 restarts:\n" + log
            assert "answered as a dead device" in log and "Bytes: " in log, log
            assert got != POISON, "the poison write took effect"
            assert rig.q.readl(rig.lsi.mmio + SCRATCHA) == 0x12345678
            ok, st, got = rig.read_blocks(10, 1)
            assert ok and got == data, "read after the poison request"
            # Never retried: the same value again is a new request (it kills
            # again, twice, then is dropped again): still no crash loop.
            # Give-up: a worker that keeps dying.
            sup = rig.remote.pid
            for _ in range(200):
                pid = worker_pid(sup)
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if rig.remote.poll() is not None:
                    break
                time.sleep(0.01)
            rc = rig.wait_remote_exit(10)
            log = rig.log("remote")
            assert rc not in (None, 0), "remote exit %r after repeated deaths:\n%s" % (rc, log)
            assert "giving up" in log, log
        finally:
            rig.stop()


def refusals():
    """What -x-worker on cannot carry is refused at start, exit status 1."""
    import subprocess
    for args, needle in ((["-device", "edu,id=edu0", "-x-worker", "on"], "no saved-state support"),
                         (["-device", "lsi53c895a,id=lsi0", "-x-worker", "maybe"], "expected on or off")):
        a, b = socket.socketpair()
        p = subprocess.run([fr.remote_binary(), str(b.fileno())] + args, pass_fds=[b.fileno()],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        a.close()
        b.close()
        out = (p.stdout + p.stderr).decode(errors="replace")
        assert p.returncode == 1 and needle in out, (args, p.returncode, out)


def children_named(sup, name):
    return [k for k, n in fr.children(sup) if n == name]


def spare_takes_over():
    """On raw, a spare worker (mpq-spare) waits with its devices built; a
    death makes that very process the successor, the data carries on, and
    a new spare follows. On qcow2 there is none (its tables may change under
    the running worker) and a restart starts a new worker."""
    for fmt in ("raw", "qcow2"):
        with fr.TmpDir() as tmp:
            disk = os.path.join(tmp, "disk." + fmt)
            fr.make_disk(disk, fmt, 4)
            qmp = os.path.join(tmp, "remote.qmp")
            rig = fr.Rig(tmp, disk, fmt=fmt, vmm="ours",
                         remote_args=["-x-worker", "on", "-qmp", "unix:%s,server=on,wait=off" % qmp])
            rig.start()
            try:
                sup = rig.remote.pid
                data = fr.pattern(7, 1, 8)
                assert rig.write_blocks(7, data)[0]
                for round_no in range(3):
                    w = wait_worker(sup)
                    spare = None
                    end = time.time() + 10
                    while time.time() < end and fmt == "raw":
                        found = children_named(sup, "mpq-spare")
                        if found:
                            spare = found[0]
                            break
                        time.sleep(0.01)
                    if fmt == "raw":
                        assert spare, "no spare worker after %d restarts:\n%s" % (round_no, rig.log("remote"))
                    else:
                        # Asked for a spare, qcow2 declines (once: none is
                        # asked for again).
                        while time.time() < end and "no spare worker" not in rig.log("remote"):
                            time.sleep(0.01)
                    # The worker names its spare (0: none; on qcow2 once the
                    # one that declined is reaped).
                    while True:
                        c = mc.QmpClient(qmp, rig.remote)
                        c.negotiate()
                        r = c.cmd("x-query-worker")["return"]
                        c.close()
                        if r["spare"] == (spare or 0) or fmt == "raw" or time.time() > end:
                            break
                        time.sleep(0.01)
                    assert r["spare"] == (spare or 0), (fmt, r, spare)
                    os.kill(w, signal.SIGKILL)
                    ok, st, got = rig.read_blocks(7, 8)
                    assert ok and got == data, "%s: read after restart %d: ok=%r st=%r" % (fmt, round_no, ok, st)
                    nw = wait_worker(sup, not_pid=w)
                    if fmt == "raw":
                        assert nw == spare, "successor %d is not the spare %d" % (nw, spare)
                    else:
                        assert not children_named(sup, "mpq-spare"), "a spare on qcow2"
                log = rig.log("remote")
                if fmt == "qcow2":
                    assert "no spare worker (drive 'd0' is qcow2)" in log, log
                assert restarts_in(log) == 3, log
                assert log.count("first request served") == 3, log
            finally:
                rig.stop()


def run():
    fr.need_peers()
    refusals()
    spare_takes_over()
    seeds = [int(s) for s in os.environ.get("MPQ_WORKER_SEEDS", "1,2,3").split(",")]
    kill_run(seeds[0], with_kills=False)
    totals = {"kill": 0, "segv": 0, "syscall": 0, "publish": 0, "consume": 0}
    for s in seeds:
        kills, n = kill_run(s, with_kills=True)
        for k, v in kills.items():
            totals[k] += v
    # Stock QEMU as the VMM (its proxy never learns of the restarts).
    kills, n = kill_run(seeds[0] + 100, with_kills=True, vmm="stock")
    for k, v in kills.items():
        totals[k] += v
    assert all(v > 0 for v in totals.values()), totals
    live_update_run(seeds[0] + 200)
    poison_and_give_up()
    print("ok: a spare takes over on raw, none on qcow2; worker killed %r times over seeds %r, same "
          "registers/memory/disk; poison answered as a dead device; repeated deaths give up; 20 live "
          "updates" % (totals, seeds))


if __name__ == "__main__":
    fr.main(run)
