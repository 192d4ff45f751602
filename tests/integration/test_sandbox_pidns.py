#!/usr/bin/env python3
"""qemu-scsi-dev -sandbox on,pidns=on (root only): the device process runs as
PID 1 of a new PID namespace under a supervisor that keeps nothing open and
is itself seccomp-filtered. Checked through the real processes (stock QEMU's
proxy, qtest SCSI I/O): I/O works and lands on the image; the device process
sees itself as PID 1 in another namespace; SIGTERM to the supervisor reaches
it (clean exit 0); a forbidden syscall kills it by SIGSYS and the supervisor
reports the same signal; SIGKILL of the supervisor takes it down too; the
VMM survives every time. With -x-worker on the worker supervisor is the one
outside: the spawner and every worker live in the new namespace under an
init that only reaps, a killed worker is replaced there, and SIGKILL of the
supervisor takes the whole namespace down."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402
import monitor_client as mc  # noqa: E402


def status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def device_process(sup):
    """The supervisor's one child (the device process)."""
    with open("/proc/%d/task/%d/children" % (sup, sup)) as f:
        kids = [int(x) for x in f.read().split()]
    assert len(kids) == 1, "supervisor %d has children %s, want one" % (sup, kids)
    return kids[0]


def dead(pid):
    """Gone or a zombie waiting for its new parent to reap it."""
    try:
        return status(pid).get("State", "").startswith(("Z", "X"))
    except FileNotFoundError:
        return True


def wait_dead(pid, limit=15.0):
    # Bounded wait for the kernel to deliver PDEATHSIG, not a timing check.
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if dead(pid):
            return True
        time.sleep(0.05)
    return False


def serves_and_terms(tmp):
    disk = os.path.join(tmp, "disk.raw")
    fr.make_raw(disk, 8)
    rig = fr.Rig(tmp, disk, remote_args=["-sandbox", "on,pidns=on"])
    try:
        rig.start()
        sup = rig.remote.pid
        dev = device_process(sup)
        st = status(dev)
        nspid = st["NSpid"].split()
        assert nspid == [str(dev), "1"], "device process NSpid %s, want [%d, 1]" % (nspid, dev)
        assert os.readlink("/proc/%d/ns/pid" % dev) != os.readlink("/proc/self/ns/pid"), \
            "device process shares our PID namespace"
        assert st["Seccomp"].strip() == "2", "device process not filtered: %s" % st["Seccomp"]
        assert status(sup)["Seccomp"].strip() == "2", "supervisor not filtered"
        fds = sorted(int(x) for x in os.listdir("/proc/%d/fd" % sup))
        assert len(fds) <= 4 and all(
            not os.readlink("/proc/%d/fd/%d" % (sup, fd)).startswith("socket:")
            for fd in fds if fd > 2), "supervisor holds fds %s" % fds
        data = fr.pattern(100, 5, 16)
        ok, s = rig.write_blocks(100, data)
        assert ok, "WRITE through the PID-namespaced remote failed: 0x%02x\n%s" % (
            s, rig.log("remote"))
        ok, s, got = rig.read_blocks(100, 16)
        assert ok and got == data, "read-back through the PID-namespaced remote differs"
        rig.remote.send_signal(signal.SIGTERM)
        rc = rig.wait_remote_exit(15)
        assert rc == 0, "SIGTERM to the supervisor: exit %r, want 0\n%s" % (rc, rig.log("remote"))
        assert "terminating on signal 15" in rig.log("remote"), rig.log("remote")
        assert wait_dead(dev), "device process still running after the supervisor exited"
        assert rig.vmm_alive(), "VMM died"
    finally:
        rig.stop()
    assert fr.file_blocks(disk, 100, 16) == data, "acknowledged write not on the image"
    print("pidns=on: served I/O as PID 1 of its own namespace (outer pid %d), supervisor "
          "filtered with fds %s; SIGTERM forwarded, exit 0, data on the image" % (dev, fds))


def forbidden_syscall(tmp):
    disk = os.path.join(tmp, "disk.raw")
    fr.make_raw(disk, 8)
    trig_r, trig_w = os.pipe()
    os.set_inheritable(trig_r, True)
    rig = fr.Rig(tmp, disk, remote_args=["-sandbox", "on,pidns=on", "-x-test-forbidden-syscall",
                                         "execve,fd=%d" % trig_r])
    try:
        rig.start(extra_pass_fds=[trig_r])
        ok, s, _ = rig.read_blocks(0, 8)
        assert ok, "READ failed before the trigger"
        os.write(trig_w, b"x")
        rc = rig.wait_remote_exit(15)
        assert rc == -signal.SIGSYS, "execve in the PID namespace: supervisor exit %r, want " \
            "SIGSYS\n%s" % (rc, rig.log("remote"))
        assert rig.vmm_alive(), "VMM died with the remote"
    finally:
        os.close(trig_r)
        os.close(trig_w)
        rig.stop()
    print("pidns=on: forbidden execve -> device process killed by SIGSYS, supervisor reports "
          "SIGSYS, VMM alive")


def supervisor_killed(tmp):
    disk = os.path.join(tmp, "disk.raw")
    fr.make_raw(disk, 8)
    rig = fr.Rig(tmp, disk, remote_args=["-sandbox", "on,pidns=on,namespaces=on"])
    try:
        rig.start()
        dev = device_process(rig.remote.pid)
        ok, s, _ = rig.read_blocks(0, 8)
        assert ok, "READ failed (pidns + namespaces)"
        rig.remote.kill()
        assert rig.wait_remote_exit(15) == -signal.SIGKILL
        assert wait_dead(dev), "device process survived its supervisor's SIGKILL"
        assert rig.vmm_alive(), "VMM died"
    finally:
        rig.stop()
    print("pidns=on,namespaces=on: SIGKILL of the supervisor took the device process down")


def wait_new_worker(sup, old, limit=15.0):
    # Bounded wait for the supervisor to start the successor.
    end = time.monotonic() + limit
    while time.monotonic() < end:
        p = fr.worker_pid(sup)
        if p and p != old:
            return p
        time.sleep(0.01)
    raise AssertionError("no successor worker after %s s" % limit)


def worker_in_namespace(tmp):
    disk = os.path.join(tmp, "disk.raw")
    fr.make_raw(disk, 8)
    qmp = os.path.join(tmp, "remote.qmp")
    rig = fr.Rig(tmp, disk, remote_args=["-sandbox", "on,pidns=on", "-x-worker", "on",
                                         "-qmp", "unix:%s,server=on,wait=off" % qmp])
    try:
        rig.start()
        sup = rig.remote.pid
        data = fr.pattern(100, 5, 16)
        ok, s = rig.write_blocks(100, data)
        assert ok, "WRITE through the worker in its namespace failed: 0x%02x\n%s" % (s, rig.log("remote"))
        kids = dict((name, k) for k, name in fr.children(sup) if name != "mpq-spare")
        assert set(kids) == {"mpq-pidns-init", "mpq-spawner", "qemu-scsi-dev"}, kids
        ns = os.readlink("/proc/%d/ns/pid" % kids["mpq-pidns-init"])
        assert ns != os.readlink("/proc/%d/ns/pid" % sup), "the init shares the supervisor's namespace"
        want_ns = {"mpq-pidns-init": "1", "mpq-spawner": "2"}
        for name, k in kids.items():
            assert os.readlink("/proc/%d/ns/pid" % k) == ns, "%s is not in the namespace" % name
            st = status(k)
            nspid = st["NSpid"].split()
            assert len(nspid) == 2 and nspid[0] == str(k), "%s NSpid %s" % (name, nspid)
            if name in want_ns:
                assert nspid[1] == want_ns[name], "%s is pid %s in the namespace" % (name, nspid[1])
            if name != "mpq-spawner":  # it loads nothing: it only clones workers
                assert st["Seccomp"].strip() == "2", "%s not filtered" % name
        assert status(sup)["Seccomp"].strip() == "2", "supervisor not filtered"
        # x-query-worker names the worker as ps does, not by its number inside.
        c = mc.QmpClient(qmp, rig.remote)
        c.negotiate()
        w = c.cmd("x-query-worker")["return"]
        assert w["pid"] == kids["qemu-scsi-dev"], (w, kids)
        # A killed worker is replaced inside the namespace and the data is there.
        old = kids["qemu-scsi-dev"]
        os.kill(old, signal.SIGKILL)
        new = wait_new_worker(sup, old)
        ok, s, got = rig.read_blocks(100, 16)
        assert ok and got == data, "read after the restart: ok=%r\n%s" % (ok, rig.log("remote"))
        assert os.readlink("/proc/%d/ns/pid" % new) == ns, "the successor is not in the namespace"
        w = c.cmd("x-query-worker")["return"]
        assert w["pid"] == new and w["restarts"] == 1, (w, new)
        # A live update to a binary: exec'd by the spawner, in the namespace.
        r = c.cmd("x-worker-restart", {"binary": fr.remote_binary()})
        assert r == {"return": {}}, r
        upd = wait_new_worker(sup, new)
        ok, s, got = rig.read_blocks(100, 16)
        assert ok and got == data, "read after the live update: ok=%r\n%s" % (ok, rig.log("remote"))
        assert os.readlink("/proc/%d/ns/pid" % upd) == ns, "the updated worker is not in the namespace"
        w = c.cmd("x-query-worker")["return"]
        c.close()
        assert w["pid"] == upd and w["restarts"] == 2, (w, upd)
        members = [k for k, _ in fr.children(sup)]
        rig.remote.kill()
        assert rig.wait_remote_exit(15) == -signal.SIGKILL
        for k in members:
            assert wait_dead(k), "pid %d of the namespace survived its supervisor's SIGKILL" % k
        assert rig.vmm_alive(), "VMM died"
    finally:
        rig.stop()
    assert fr.file_blocks(disk, 100, 16) == data, "acknowledged write not on the image"
    print("pidns=on,-x-worker on: init (1), spawner (2) and workers in the namespace, filtered; "
          "a killed worker replaced there and a live update too, data intact; SIGKILL of the "
          "supervisor ends them all")


def run():
    fr.need_peers()
    if os.geteuid() != 0:
        fr.skip("pidns=on needs root")
    if not os.path.exists("/proc/self/ns/pid"):
        fr.skip("no PID namespaces on this kernel")
    for case in (serves_and_terms, forbidden_syscall, supervisor_killed, worker_in_namespace):
        with fr.TmpDir() as tmp:
            case(tmp)


if __name__ == "__main__":
    fr.main(run)
