#!/usr/bin/env python3
"""-trace 'lsi_*' on three LSI53C895A controllers running the same qtest
program (tests/lib/trace_program.py): stock QEMU's in-process device, our
remote (qemu-scsi-dev) under stock QEMU's x-pci-proxy-dev, and our VMM's
in-process device. The events a driver can observe must come out the same,
line for line; the program's results must be right everywhere. Then our VMM
with our remote: register reads the proxy answers from the register mirror
never reach the device and are traced by the proxy (mpq_proxy_mirror_hit)."""
import os
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import trace_program as T  # noqa: E402
import vmm_rig as R  # noqa: E402

# Events that must match line for line (README, "Tracing", lists the others).
EXACT = ("lsi_reg_read", "lsi_reg_write", "lsi_do_command", "lsi_do_status", "lsi_do_msgin",
         "lsi_command_complete", "lsi_reset", "lsi_update_irq")
PREFIXES = ("lsi_execute_script", "lsi_do_msgout")
# QEMU re-enters its SCRIPTS loop from a synchronous command completion and
# prints one "stopped" line per nesting level; ours never nests.
NOT_COMPARED = ("lsi_execute_script_stop",)


def observable(lines):
    out = []
    for ln in lines:
        name = ln.split(" ", 1)[0]
        if name in NOT_COMPARED:
            continue
        if name in EXACT or name.startswith(PREFIXES):
            out.append(ln)
    return out


def trace_lines(path):
    with open(path, errors="replace") as f:
        return [ln.rstrip("\n") for ln in f if ln.startswith("lsi_")]


def device_args(disk):
    return ["-device", "lsi53c895a,id=lsi0", "-drive", "if=none,id=d0,file=%s,format=raw" % disk,
            "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0"]


def main_args(qpath, accel, memfd):
    a = ["-machine", "pc", "-accel", accel, "-m", "64M", "-nodefaults", "-display", "none",
         "-qtest", "unix:" + qpath, "-qtest-log", "none"]
    if accel == "tcg":
        a.append("-S")
    if memfd:
        a += ["-object", "memory-backend-memfd,id=mem0,size=64M,share=on", "-machine", "memory-backend=mem0"]
    return a


def run_config(tmp, name, disk, build):
    """build(qpath, trace_log) -> [Popen...] (the last one talks qtest)."""
    qpath = os.path.join(tmp, "q-%s.sock" % name)
    log = os.path.join(tmp, "%s.trace" % name)
    q = R.QTest(qpath)
    procs = build(qpath, log)
    try:
        q.accept(procs[-1])
        q.cmd("endianness")
        seen = T.run(q)
    finally:
        q.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return seen, trace_lines(log)


def check_results(c, label, seen):
    c.eq(seen["scratcha"], 0x33221100, "%s: SCRATCHA read back" % label)
    c.eq(seen["dsa"], 0x00102030, "%s: DSA via I/O" % label)
    c.eq(seen["misc_int"][2], 0x1234, "%s: SCRIPTS reached INT 0x1234" % label)
    c.eq(seen["store"], 0xCAFEF00D, "%s: LOAD/STORE moved the dword" % label)
    c.eq(seen["memmove"], 0xCAFEF00D, "%s: memory move" % label)
    c.eq(seen["scratchb"] & 0xFFFF, 0x5B5B, "%s: register moves" % label)
    c.eq(seen["status0"], 2, "%s: first READ answers the unit attention" % label)
    c.eq(seen["scsi_int1"][2], 0x600D, "%s: second READ completed" % label)
    c.eq(seen["status1"], 0, "%s: second READ GOOD" % label)
    want = struct.pack("<I", 0) * 128 + struct.pack("<I", 1) * 128
    c.check(seen["data"] == want, "%s: READ(10) data is LBA 0-1 of the image" % label)


def main():
    stock = R.stock_qemu()
    vmm, remote = R.program("mpqemu-system-x86_64"), R.program("qemu-scsi-dev")
    tmp = R.tmpdir("trace-cmp-")
    disk = R.make_disk(os.path.join(tmp, "disk.img"))
    c = R.Checker()
    tr = ["-trace", "lsi_*"]

    def stock_inproc(qpath, log):
        return [subprocess.Popen([stock] + main_args(qpath, "tcg", False) + device_args(disk) + tr + ["-D", log])]

    def ours_inproc(qpath, log):
        return [subprocess.Popen([vmm] + main_args(qpath, "qtest", False) + device_args(disk) + tr + ["-D", log])]

    def ours_under_stock(qpath, log):
        a, b = socket.socketpair()
        r = subprocess.Popen([remote, str(b.fileno())] + device_args(disk) + tr + ["-D", log],
                             pass_fds=[b.fileno()])
        m = subprocess.Popen([stock] + main_args(qpath, "tcg", True) +
                             ["-device", "x-pci-proxy-dev,id=lsi0,fd=%d" % a.fileno()], pass_fds=[a.fileno()])
        a.close()
        b.close()
        return [r, m]

    runs = {}
    for name, build in (("stock", stock_inproc), ("remote-under-stock", ours_under_stock),
                        ("ours-in-process", ours_inproc)):
        seen, lines = run_config(tmp, name, disk, build)
        check_results(c, name, seen)
        runs[name] = lines
        print("%s: %d lsi_* lines, %d compared" % (name, len(lines), len(observable(lines))))

    ref = observable(runs["stock"])
    c.check(len(ref) > 200, "stock trace has the program's events (%d lines)" % len(ref))
    for probe in ("lsi_reset Reset", "lsi_reg_write Write reg SCRATCHA1 0x35 = 0x11",
                  "lsi_execute_script_tc_call Call 0x", "lsi_do_command Send command len=10",
                  "lsi_execute_script_mm_load Load reg 0x34 size 4 addr 0x101000 = 0xcafef00d",
                  "lsi_command_complete Command complete status=0"):
        c.check(any(ln.startswith(probe) for ln in ref), "stock trace contains %r" % probe)
    for name in ("remote-under-stock", "ours-in-process"):
        got = observable(runs[name])
        if got != ref:
            for i, (a, b) in enumerate(zip(ref, got)):
                if a != b:
                    print("first difference at line %d:\n  stock: %s\n  %s: %s" % (i + 1, a, name, b))
                    break
        c.check(got == ref, "%s: observable lsi_* events equal stock's line for line (%d vs %d lines)"
                % (name, len(got), len(ref)))
        # The other events keep QEMU's names: every name we print exists in stock's table.
        c.check(all(ln.split(" ", 1)[0] in STOCK_NAMES for ln in runs[name]), "%s: only QEMU event names" % name)

    mirror_case(c, tmp, disk)
    return c.done()


def stock_names():
    out = subprocess.run([R.stock_qemu(), "-trace", "help"], capture_output=True, text=True).stdout
    return set(out.split())


def mirror_case(c, tmp, disk):
    """Our VMM + our remote: SCRATCHA reads answered from the mirror show as
    mpq_proxy_mirror_hit in the VMM's trace and not as lsi_reg_read."""
    vlog, rlog = os.path.join(tmp, "vmm-mirror.trace"), os.path.join(tmp, "remote-mirror.trace")
    remote_argv = [R.program("qemu-scsi-dev"), "{fd}"] + device_args(disk) + ["-trace", "lsi_reg_*", "-D", rlog]
    rig = R.Rig(tmp, remotes=[(remote_argv, ["lsi0"])], proxy="pci-proxy-dev",
                vmm_args=["-trace", "mpq_proxy_*", "-D", vlog])
    try:
        q = rig.q
        R.program_bars(q, 2)
        q.writel(R.MMIO_BASE + R.SCRATCHA, 0x5EC0DE42)
        q.cmd("clock_step 1000000")
        vals = [q.readl(R.MMIO_BASE + R.SCRATCHA) for _ in range(3)]
        c.eq(vals, [0x5EC0DE42] * 3, "mirror: SCRATCHA reads")
    finally:
        rig.stop()
    vm = open(vlog, errors="replace").read()
    rm = open(rlog, errors="replace").read()
    hits = vm.count("mpq_proxy_mirror_hit lsi0 BAR1 0x34 size 4 = 0x5ec0de42 (mirror)")
    remote_reads = rm.count("lsi_reg_read Read reg SCRATCHA0")
    fwd = vm.count("mpq_proxy_bar_read lsi0 BAR1 0x34 size 4 = 0x5ec0de42 (remote)")
    print("mirror: %d mirror hits, %d forwarded, %d remote SCRATCHA0 read lines" % (hits, fwd, remote_reads))
    c.check(hits >= 1, "mirror: the proxy traced reads it answered itself")
    c.eq(hits + fwd, 3, "mirror: every read traced once by the proxy")
    c.eq(remote_reads, fwd, "mirror: the device saw exactly the forwarded reads")
    c.check("lsi_reg_write Write reg SCRATCHA3 0x37 = 0x5e" in rm, "mirror: the write reached the device")


STOCK_NAMES = set()

if __name__ == "__main__":
    STOCK_NAMES = stock_names()
    sys.exit(main())
