#!/usr/bin/env python3
"""Monitors of our remote (qemu-scsi-dev) while stock QEMU's proxy drives it.

The remote is started as the seed does: `-monitor unix:PATH,server,nowait`
and `-qmp unix:PATH,server,nowait`. Stock QEMU 7.2 is the VMM
(x-pci-proxy-dev + qtest) and programs the controller's BARs through it.
(test_monitor_io.py runs SCSI I/O and checks the block statistics.)

Checked: HMP prompt and `info block` (also through socat when installed),
QMP negotiation and every command, QEMU's error replies to bad input (malformed
JSON, unknown command, wrong argument types, a huge message), output shapes
against stock QEMU's own QMP, programmed BARs in query-pci / info pci, RESET
and SHUTDOWN events to every client, and a clean exit on `quit`.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import mpqtest as T  # noqa: E402
from monitor_client import HmpClient, QmpClient, RemoteRig, connect_unix, bench_setup  # noqa: E402

SHARED = os.environ.get("MPQ_SHARED_DIR") or os.path.join(HERE, "..", "..", "..", "shared")
BENCH = os.path.join(SHARED, "tools", "qtest-bench")

DISK_MB = 8
COMMANDS = ["query-version", "query-commands", "query-name", "query-status", "query-pci",
            "query-block", "query-blockstats", "query-chardev", "human-monitor-command",
            "system_reset", "quit", "qmp_capabilities", "query-remote-devices"]


def keys(d):
    return set(d.keys()) if isinstance(d, dict) else set()


def stock_shapes(qemu, tmp, disk):
    """query-* results of stock QEMU with the same controller and disk."""
    path = os.path.join(tmp, "stock-qmp.sock")
    p = subprocess.Popen(
        [qemu, "-machine", "pc", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
         "-device", "lsi53c895a,id=lsi0",
         "-drive", "if=none,id=d0,file=%s,format=raw,readonly=on" % disk,
         "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0",
         "-qmp", "unix:%s,server,nowait" % path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = QmpClient(path, p)
        c.negotiate()
        out = {"greeting": c.greeting}
        for cmd in ("query-version", "query-status", "query-block", "query-blockstats",
                    "query-pci", "query-chardev", "query-name"):
            out[cmd] = c.ret(cmd)
        c.cmd("quit")
        c.close()
        p.wait(timeout=30)
        return out
    finally:
        T.stop(p)


def check_shapes(chk, ours, stock):
    """Every member we emit exists in stock's output (no invented names),
    and the members clients rely on are all there."""
    def sub(a, b, what):
        extra = keys(a) - keys(b)
        chk.check(not extra, "%s: no members unknown to QEMU (extra: %s)" % (what, sorted(extra)))

    sub(ours["greeting"]["QMP"], stock["greeting"]["QMP"], "greeting")
    sub(ours["query-version"], stock["query-version"], "query-version")
    sub(ours["query-version"]["qemu"], stock["query-version"]["qemu"], "query-version.qemu")
    chk.eq(keys(ours["query-status"]), keys(stock["query-status"]), "query-status members")
    sb = [b for b in stock["query-block"] if b["device"] == "d0"][0]
    ob = ours["query-block"][0]
    sub(ob, sb, "query-block[]")
    sub(ob["inserted"], sb["inserted"], "query-block[].inserted")
    sub(ob["inserted"]["image"], sb["inserted"]["image"], "query-block[].inserted.image")
    chk.eq(keys(ob["inserted"]["cache"]), keys(sb["inserted"]["cache"]), "cache members")
    for k in ("device", "inserted", "locked", "removable", "type", "io-status", "qdev"):
        chk.check(k in ob, "query-block[] has %s" % k)
    ss = [b for b in stock["query-blockstats"] if b["device"] == "d0"][0]
    osd = ours["query-blockstats"][0]
    sub(osd, ss, "query-blockstats[]")
    ost = dict(osd["stats"])
    ost.pop("idle_time_ns", None)  # stock omits it before any I/O
    chk.eq(keys(ost), keys(ss["stats"]), "BlockDeviceStats members equal stock's")
    sdev = [d for d in stock["query-pci"][0]["devices"] if d["qdev_id"] == "lsi0"][0]
    odev = ours["query-pci"][0]["devices"][0]
    chk.eq(keys(odev), keys(sdev), "query-pci device members equal stock's")
    chk.eq(odev["id"], sdev["id"], "query-pci ids equal stock's lsi53c895a")
    chk.eq(odev["class_info"], sdev["class_info"], "query-pci class_info equal")
    chk.eq([(r["bar"], r["type"], r["size"]) for r in odev["regions"]],
           [(r["bar"], r["type"], r["size"]) for r in sdev["regions"]], "query-pci regions")
    for o, s in zip(odev["regions"], sdev["regions"]):
        sub(o, s, "query-pci region")
    sub(ours["query-chardev"][0], stock["query-chardev"][0], "query-chardev[]")
    chk.eq(ours["query-name"], stock["query-name"], "query-name without -name")


def check_stdio(chk, remote, disk):
    """-monitor stdio and -qmp stdio: commands on stdin, quit ends the process."""
    cases = (("-monitor", b"info block\ninfo status\nquit\n", "VM status: running\r\n"),
             ("-qmp", b'{"execute":"qmp_capabilities"}{"execute":"query-status"}\n'
                      b'{"execute":"quit"}\n', '"reason": "host-qmp-quit"'))
    for opt, stdin, want in cases:
        a, b = socket.socketpair()
        try:
            r = subprocess.run(
                [remote, str(b.fileno()), "-device", "lsi53c895a,id=lsi0",
                 "-drive", "id=d0,file=%s,format=raw,if=none" % disk,
                 "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0", opt, "stdio"],
                pass_fds=[b.fileno()], input=stdin, capture_output=True, timeout=60)
            out = r.stdout.decode(errors="replace")
            chk.check(r.returncode == 0 and want in out,
                      "%s stdio answers and quits (rc %d): %r" % (opt, r.returncode, out[-120:]))
        finally:
            a.close()
            b.close()


def main():
    env = bench_setup(T, BENCH, "mpq-monitor-", DISK_MB, 1234)
    qemu, remote, B, QTest = env.qemu, env.remote, env.B, env.QTest
    chk, tmp, disk, rng = env.chk, env.tmp, env.disk, env.rng
    stock = stock_shapes(qemu, tmp, disk)
    check_stdio(chk, remote, disk)
    rig = RemoteRig(T, qemu, remote, tmp, disk, QTest)
    hmp_path, qmp_path, log, q, rproc = rig.hmp_path, rig.qmp_path, rig.log, rig.q, rig.remote
    try:
        # ---------------------------------------------------------- HMP
        hmp = HmpClient(hmp_path, rproc)
        chk.check("monitor - type 'help' for more information" in hmp.banner, "HMP banner")
        blk = hmp.cmd("info block")
        chk.check(re.match(r"d0 \(#block\d+\): %s \(raw\)\r\n" % re.escape(disk), blk) is not None,
                  "HMP info block lists the drive: %r" % blk[:120])
        chk.check("Cache mode:       writeback" in blk, "HMP info block cache mode")
        chk.eq(hmp.cmd("info status"), "VM status: running\r\n", "HMP info status")
        chk.check(hmp.cmd("info version").startswith("7.2.0 "), "HMP info version")
        pci = hmp.cmd("info pci")
        chk.check("SCSI controller: PCI device 1000:0012" in pci and 'id "lsi0"' in pci,
                  "HMP info pci shows lsi0")
        chr_ = hmp.cmd("info chardev")
        chk.check("compat_monitor0: filename=unix:%s,server=on" % hmp_path in chr_ and
                  "compat_monitor1:" in chr_, "HMP info chardev: %r" % chr_)
        chk.check("info blockstats" in hmp.cmd("help info"), "HMP help info")
        chk.check("system_reset" in hmp.cmd("help"), "HMP help")
        chk.eq(hmp.cmd("bogus"), "unknown command: 'bogus'\r\n", "HMP unknown command")
        chk.eq(hmp.cmd("info nothing"), "unknown command: 'info nothing'\r\n", "HMP unknown info")
        chk.check("lsi0: lsi53c895a, channel connected" in hmp.cmd("info remote-devices"),
                  "HMP info remote-devices")
        if shutil.which("socat"):
            r = subprocess.run(["socat", "-t", "5", "-", "UNIX-CONNECT:" + hmp_path],
                               input=b"info block\n", capture_output=True, timeout=60)
            out = r.stdout.decode(errors="replace")
            chk.check("(qemu) " in out and ("d0 (#block") in out and "%s (raw)" % disk in out,
                      "socat - UNIX-CONNECT: gets the prompt and info block")
        else:
            print("note: socat not installed, socat check skipped")

        # ---------------------------------------------------------- QMP
        qmp = QmpClient(qmp_path, rproc)
        g = qmp.greeting["QMP"]
        chk.eq(g["capabilities"], [], "greeting capabilities")
        chk.check(g["version"]["package"].startswith("mpqemu-"), "greeting package")
        chk.eq((g["version"]["qemu"]["major"], g["version"]["qemu"]["minor"]), (7, 2),
               "greeting version")
        r = qmp.cmd("query-status", id=1)
        chk.eq(r.get("error", {}).get("class"), "CommandNotFound", "command before negotiation")
        chk.eq(r.get("id"), 1, "id echoed on error")
        r = qmp.cmd("qmp_capabilities", id="neg")
        chk.eq(r, {"return": {}, "id": "neg"}, "qmp_capabilities")
        ours = {"greeting": qmp.greeting}
        for c in ("query-version", "query-status", "query-block", "query-blockstats",
                  "query-pci", "query-chardev", "query-name"):
            ours[c] = qmp.ret(c)
        b = ours["query-block"]
        chk.eq([x["device"] for x in b], ["d0"], "query-block devices")
        chk.eq(b[0]["inserted"]["file"], disk, "query-block file")
        chk.eq(b[0]["inserted"]["drv"], "raw", "query-block drv")
        chk.eq(b[0]["inserted"]["image"]["virtual-size"], DISK_MB << 20, "query-block size")
        chk.eq(b[0]["inserted"]["ro"], False, "query-block ro")
        chk.eq(ours["query-status"], {"status": "running", "singlestep": False, "running": True},
               "query-status")
        chk.eq(ours["query-name"], {}, "query-name")
        check_shapes(chk, ours, stock)
        names = [c["name"] for c in qmp.ret("query-commands")]
        for n in COMMANDS:
            chk.check(n in names, "query-commands lists %s" % n)
        chk.eq([c["label"] for c in ours["query-chardev"]], ["compat_monitor0", "compat_monitor1"],
               "query-chardev labels")
        rd = qmp.ret("query-remote-devices")
        chk.eq([(d["id"], d["driver"], d["channel"]) for d in rd],
               [("lsi0", "lsi53c895a", "connected")], "query-remote-devices")
        txt = qmp.ret("human-monitor-command", **{"command-line": "info block"})
        chk.check(txt.startswith("d0 (#block") and txt.endswith("\r\n"),
                  "human-monitor-command info block")

        # bad input: QEMU's error classes and descriptions, session survives
        bad = [
            (b'{"execute": foo}\n', "GenericError", "JSON parse error"),
            (b'[1, 2]\n', "GenericError", "QMP input must be a JSON object"),
            (b'{"execute": "no-such-cmd", "id": 5}\n', "CommandNotFound",
             "The command no-such-cmd has not been found"),
            (b'{"execute": "query-status", "arguments": {"x": 1}}\n', "GenericError",
             "Parameter 'x' is unexpected"),
            (b'{"execute": "human-monitor-command", "arguments": {"command-line": 7}}\n',
             "GenericError", "Invalid parameter type for 'command-line', expected: string"),
            (b'{"execute": "human-monitor-command"}\n', "GenericError",
             "Parameter 'command-line' is missing"),
            (b'{"execute": "query-status", "arguments": []}\n', "GenericError",
             "QMP input member 'arguments' must be an object"),
            (b'{"exec": "query-status"}\n', "GenericError", "QMP input member 'exec' is unexpected"),
            (b'\xff\xfe\n', "GenericError", "JSON parse error"),
            (b'{}\n', "GenericError", "QMP input lacks member 'execute'"),
        ]
        for raw, cls, desc in bad:
            qmp.send_raw(raw)
            r = qmp.response()
            e = r.get("error", {})
            chk.check(e.get("class") == cls and e.get("desc", "").startswith(desc),
                      "bad input %r -> %s %r (got %r)" % (raw[:40], cls, desc, r))
        chk.eq(qmp.ret("query-status")["status"], "running", "session alive after bad input")
        # a multi-line object, as QEMU's streaming parser accepts
        qmp.send_raw(b'{"execute":\n  "query-name",\n "id": [1]}\n')
        chk.eq(qmp.response(), {"return": {}, "id": [1]}, "object spanning lines")

        # huge line on its own connection: error, then dropped; others unaffected
        huge = connect_unix(qmp_path)
        huge.recv(4096)
        sent_err = None
        try:
            huge.sendall(b'{"execute": "query-name", "id": "' + b"x" * (2 << 20))
        except (BrokenPipeError, ConnectionResetError) as e:
            sent_err = e
        got = b""
        try:
            while True:
                c = huge.recv(65536)
                if not c:
                    break
                got += c
        except (ConnectionResetError, socket.timeout):
            pass
        chk.check(b"GenericError" in got or sent_err is not None,
                  "huge message gets an error and the client is dropped")
        huge.close()
        chk.eq(qmp.ret("query-status")["status"], "running", "remote alive after huge line")

        # ------------------------------------------------ PCI through the stock proxy
        pci = B.PCI(q)
        bdf = pci.find(0x1000, 0x0012)
        chk.check(bdf is not None, "controller found through the stock proxy")
        bars = {x["index"]: x for x in pci.assign(bdf, pci.size_bars(bdf), B.IO_BASE, B.MMIO_BASE)}
        odev = qmp.ret("query-pci")[0]["devices"][0]
        chk.eq([r["address"] for r in odev["regions"]],
               [bars[0]["addr"], bars[1]["addr"], bars[2]["addr"]], "query-pci shows programmed BARs")
        chk.check("BAR0: I/O at %#06x [%#06x]." % (bars[0]["addr"], bars[0]["addr"] + 255)
                  in hmp.cmd("info pci"), "HMP info pci shows the programmed BAR0")

        # ------------------------------------------------ reset and quit
        qmp.ret("system_reset")
        ev = qmp.wait_event("RESET")
        chk.eq(ev["data"], {"guest": False, "reason": "host-qmp-system-reset"}, "RESET event")
        chk.check(set(ev["timestamp"]) == {"seconds", "microseconds"}, "event timestamp")
        chk.eq(qmp.ret("query-pci")[0]["devices"][0]["regions"][1]["address"], bars[1]["addr"],
               "PCI config kept across system_reset")
        other = QmpClient(qmp_path, rproc)
        other.negotiate()
        r = qmp.cmd("quit", id="bye")
        chk.eq(r, {"return": {}, "id": "bye"}, "quit answered")
        for c, who in ((qmp, "quitting client"), (other, "other client")):
            try:
                ev = c.wait_event("SHUTDOWN")
                chk.eq(ev["data"], {"guest": False, "reason": "host-qmp-quit"},
                       "SHUTDOWN event to the %s" % who)
            except (EOFError, AssertionError) as e:
                chk.check(False, "SHUTDOWN event to the %s (%r)" % (who, e))
        try:
            rc = rproc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        chk.eq(rc, 0, "remote exits 0 after quit")
    finally:
        rig.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    chk.finish()


if __name__ == "__main__":
    main()
