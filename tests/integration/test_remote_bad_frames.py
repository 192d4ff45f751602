#!/usr/bin/env python3
"""Malformed input to qemu-scsi-dev (we play the proxy).

Unlike stock QEMU's remote, ours stays up: each malformed frame that was
read whole gets one log line and, where a reply is due, an all-ones RET; the
stream stays in sync (a valid request right after is answered correctly) and
no fd leaks (/proc/PID/fd does not grow). Only a stream that is out of sync
(truncated frame, size > 192) loses its connection; the process keeps
serving its other socket, and exits (status 1) once the last one is gone.

Also covers MPQEXT negotiation and SELECT_DEVICE on the first-arg socket,
which carries both controllers.
"""
import fcntl
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import mpqtest as T  # noqa: E402

ALL = T.ALL_ONES


class Log:
    def __init__(self, path):
        self.path = path
        self.pos = 0

    def new(self):
        """Log text written since the last call."""
        data = T.read_file(self.path)
        out = data[self.pos:]
        self.pos = len(data)
        return out


def eventfd():
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def main():
    remote = T.program("qemu-scsi-dev")
    chk = T.Checker()
    tmp = T.tmpdir("mpq-badframes-")
    logpath = os.path.join(tmp, "remote.log")
    a_proxy, a_remote = socket.socketpair()
    b_proxy, b_remote = socket.socketpair()
    fa, fb = a_remote.fileno(), b_remote.fileno()
    proc = subprocess.Popen(
        [remote, str(fa), "-device", "lsi53c895a,id=lsi0", "-device", "lsi53c895a,id=lsi1",
         "-D", logpath, "-object", "x-remote-object,id=r1,devid=lsi1,fd=%d" % fb],
        pass_fds=[fa, fb])
    a_remote.close()
    b_remote.close()
    a = T.Wire(a_proxy)
    b = T.Wire(b_proxy)
    log = Log(logpath)
    mem = os.memfd_create("guest-ram", os.MFD_CLOEXEC)
    os.ftruncate(mem, 1 << 20)
    keep = []
    try:
        # --- a normal start: RAM, irqfds, BARs
        a.sync_sysmem([(mem, 0, 1 << 20, 0)])
        irq, rs = eventfd(), eventfd()
        keep += [irq, rs]
        a.set_irqfd(irq, rs)
        chk.eq(a.cfg_read(0, 2), 0x1000, "vendor id")
        a.cfg_write(0x10, 0xC000, 4)
        a.cfg_write(0x14, 0xFEBF0000, 4)
        a.cfg_write(0x18, 0xFEBE0000, 4)
        a.cfg_write(0x04, 0x7, 2)
        chk.eq(a.bar_write(0xFEBE0010, 0xCAFEF00D, 4, True), 0, "SCRIPTS RAM write")
        chk.eq(a.bar_read(0xFEBE0010, 4, True), 0xCAFEF00D, "SCRIPTS RAM read")
        T.wait_for(lambda: "serving" in T.read_file(logpath), 10, "remote start-up")
        log.new()
        base_fds = T.fd_count(proc.pid)

        def alive(label):
            chk.eq(a.cfg_read(2, 2), 0x0012, "still serving after %s" % label)

        def logged(label, text):
            got = log.new()
            chk.check(text in got, "%s logged %r" % (label, text))
            chk.check(got.count("\n") == 1, "%s: exactly one log line (%r)" % (label, got.strip()))

        # --- frames with no reply due
        a.send(9)
        alive("cmd 9")
        logged("cmd 9", "unknown command 9")
        a.send(T.RET, b"\0" * 8)
        alive("RET to remote")
        logged("RET to remote", "RET sent to the remote")
        a.send(-5, b"\1" * 12)
        alive("cmd -5 with payload")
        logged("cmd -5", "unknown command -5")
        a.send(T.SET_IRQFD, b"", [irq])
        alive("SET_IRQFD 1 fd")
        logged("SET_IRQFD 1 fd", "SET_IRQFD: 1 fds, expected 2")
        a.send(T.SET_IRQFD, b"", [irq, rs, irq])
        alive("SET_IRQFD 3 fds")
        logged("SET_IRQFD 3 fds", "SET_IRQFD: 3 fds, expected 2")
        pr, pw = os.pipe()
        keep += [pr, pw]
        a.send(T.SET_IRQFD, b"", [pr, pw])
        alive("SET_IRQFD pipes")
        logged("SET_IRQFD pipes", "is not an eventfd")
        a.send(T.SET_IRQFD, b"\0" * 8, [irq, rs])
        alive("SET_IRQFD size 8")
        logged("SET_IRQFD size 8", "SET_IRQFD: payload size 8, expected 0")
        sysmem = T.pack_sysmem([0], [1 << 20], [0])
        a.send(T.SYNC_SYSMEM, sysmem)
        alive("SYNC_SYSMEM 0 fds")
        logged("SYNC_SYSMEM 0 fds", "SYNC_SYSMEM: 0 fds, expected 1..7")
        a.send(T.SYNC_SYSMEM, sysmem, [mem] * 8)
        alive("SYNC_SYSMEM 8 fds")
        logged("SYNC_SYSMEM 8 fds", "8 fds, at most 7")
        a.send(T.SYNC_SYSMEM, sysmem, [mem] * 12)
        alive("SYNC_SYSMEM 12 fds")
        logged("SYNC_SYSMEM 12 fds", "too many fds")
        a.send(T.SYNC_SYSMEM, sysmem, [mem] * 20)
        alive("SYNC_SYSMEM 20 fds")
        logged("SYNC_SYSMEM 20 fds", "too many fds")
        a.send(T.SYNC_SYSMEM, sysmem[:100], [mem])
        alive("SYNC_SYSMEM short payload")
        logged("SYNC_SYSMEM short", "payload size 100, expected 192")
        a.send(T.SYNC_SYSMEM, T.pack_sysmem([0], [1 << 20], [0]), [pr])
        alive("SYNC_SYSMEM pipe")
        logged("SYNC_SYSMEM pipe", "not a memory file")
        a.send(T.SYNC_SYSMEM, T.pack_sysmem([0], [4 << 20], [0]), [mem])
        alive("SYNC_SYSMEM beyond file")
        logged("SYNC_SYSMEM beyond file", "beyond the file size")
        a.sync_sysmem([(mem, 0, 1 << 20, 0)])  # good again
        alive("SYNC_SYSMEM good")
        chk.eq(log.new(), "", "a good SYNC_SYSMEM logs nothing")

        # --- frames with a reply due: all-ones
        a.send(T.PCI_CFGREAD, b"\0" * 8)
        chk.eq(a.ret(), ALL, "CFGREAD size 8 -> all-ones")
        logged("CFGREAD size 8", "PCI_CFGREAD: payload size 8, expected 12")
        a.send(T.BAR_READ, T.pack_bar(0xFEBE0010, 0, 4, 1), [irq])
        chk.eq(a.ret(), ALL, "BAR_READ with an fd -> all-ones")
        logged("BAR_READ fd", "BAR_READ: 1 fds, expected 0")
        chk.eq(a.cfg_read(0xFE, 4), ALL, "CFGREAD 0xfe/4 -> all-ones")
        logged("CFGREAD 0xfe/4", "outside the 256-byte config space")
        chk.eq(a.cfg_read(0xFE, 2), 0, "CFGREAD 0xfe/2 fits -> 0")
        chk.eq(a.cfg_read(0x100, 1), ALL, "CFGREAD 0x100/1 -> all-ones")
        logged("CFGREAD 0x100", "outside")
        chk.eq(a.cfg_read(0, 0), ALL, "CFGREAD len 0 -> all-ones")
        logged("CFGREAD len 0", "outside")
        chk.eq(a.cfg_read(0, 8), ALL, "CFGREAD len 8 -> all-ones")
        logged("CFGREAD len 8", "outside")
        chk.eq(a.cfg_write(0xFFFFFFFF, 1, 4), ALL, "CFGWRITE 0xffffffff -> all-ones")
        logged("CFGWRITE far", "PCI_CFGWRITE")
        chk.eq(a.bar_read(0x12340000, 4, True), ALL, "memory BAR_READ nobody decodes -> all-ones")
        logged("BAR_READ undecoded", "no BAR decodes this memory address")
        chk.eq(a.bar_write(0x12340000, 1, 4, True), ALL, "memory BAR_WRITE nobody decodes -> all-ones")
        logged("BAR_WRITE undecoded", "no BAR decodes")
        chk.eq(a.bar_read(0x1234, 1, False), ALL, "unclaimed I/O port reads all-ones")
        chk.eq(a.bar_read(0xFEBE0010, 3, True), ALL, "BAR_READ size 3 -> all-ones")
        logged("BAR size 3", "bad access size 3")
        chk.eq(a.bar_read(0xFEBE0010, 16, True), ALL, "BAR_READ size 16 -> all-ones")
        logged("BAR size 16", "bad access size 16")
        a.send(T.BAR_READ, T.pack_bar(0xFEBE0010, 0, 4, 7))
        chk.eq(a.ret(), ALL, "BAR_READ memory=7 -> all-ones")
        logged("BAR memory=7", "space 7")
        a.send(T.DEVICE_RESET, b"\0" * 8)
        chk.eq(a.ret(), ALL, "DEVICE_RESET with a payload -> all-ones")
        logged("DEVICE_RESET size 8", "DEVICE_RESET: payload size 8, expected 0")
        chk.eq(a.select("lsi1"), ALL, "SELECT_DEVICE before negotiation -> all-ones")
        logged("SELECT early", "without a negotiated MULTIDEV")
        # A posted write before POSTED_WRITES is granted: ignored, and no RET
        # (the next reply read is the BAR_READ's own).
        a.bar_write_posted(0xFEBE0010, 0x12345678, 4, True)
        chk.eq(a.bar_read(0xFEBE0010, 4, True), 0xCAFEF00D, "early posted write ignored, no RET for it")
        logged("posted early", "without a negotiated POSTED_WRITES")
        chk.eq(a.bar_read(0xFEBE0010, 4, True), 0xCAFEF00D, "SCRIPTS RAM intact after all that")
        log.new()

        # --- MPQEXT / MULTIDEV on the first-arg socket (carries lsi0 and lsi1)
        page = os.memfd_create("mirror", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        keep.append(page)
        os.ftruncate(page, 4096)
        fcntl.fcntl(page, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        chk.eq(a.mirror_setup([page]), ALL, "MIRROR_SETUP before negotiation -> all-ones")
        logged("mirror early", "without a negotiated REG_MIRROR")
        chk.eq(a.negotiate(0xFF), T.EXT_REPLY_MAGIC | T.FEAT_MULTIDEV | T.FEAT_POSTED_WRITES | T.FEAT_REG_MIRROR,
               "MPQEXT grants MULTIDEV, POSTED_WRITES and REG_MIRROR only")
        chk.check("MPQEXT v1 negotiated, features 0x7" in log.new(), "negotiation logged")
        chk.eq(a.mirror_setup([]), ALL, "MIRROR_SETUP without its fd -> all-ones")
        logged("mirror no fd", "MIRROR_SETUP: 0 fds, expected 1")
        chk.eq(a.mirror_setup([page], 1 << 20), ALL, "MIRROR_SETUP with a wrong page size -> all-ones")
        logged("mirror page size", "page size 1048576, expected 4096")
        chk.eq(a.mirror_setup([irq]), ALL, "MIRROR_SETUP with an eventfd -> all-ones")
        logged("mirror eventfd", "not a memfd")
        chk.eq(a.mirror_setup([page]), 0, "MIRROR_SETUP with a sealed memfd -> 0")
        log.new()
        # Posted writes once granted: no RET, carried out before the next request;
        # a bad one is logged, answered with nothing, and the stream stays in sync.
        a.bar_write_posted(0xFEBE0014, 0x0BADBEEF, 4, True)
        a.bar_write_posted(0xFEBE0010, 0x5EED0001, 4, True)
        a.bar_write_posted(0xFEBE0010, 1, 3, True)
        chk.eq(a.bar_read(0xFEBE0010, 4, True), 0x5EED0001, "posted writes carried out in order")
        chk.eq(a.bar_read(0xFEBE0014, 4, True), 0x0BADBEEF, "posted write to the next word")
        logged("posted bad size", "bad access size 3")
        chk.eq(a.bar_write(0xFEBE0010, 0xCAFEF00D, 4, True), 0, "plain BAR_WRITE still answered")
        chk.eq(a.select("lsi1"), 0, "SELECT_DEVICE lsi1")
        chk.eq(a.cfg_read(0x18, 4), 0, "lsi1 has its own (unprogrammed) config")
        chk.eq(a.select("nope\x01"), ALL, "SELECT_DEVICE unknown -> all-ones")
        logged("SELECT unknown", "no device 'nope\\x01'")
        chk.eq(a.cfg_read(0x18, 4), 0, "selection unchanged after a failed SELECT")
        chk.eq(a.select("lsi0"), 0, "SELECT_DEVICE lsi0")
        chk.eq(a.cfg_read(0x18, 4), 0xFEBE0000, "back on lsi0")
        # socket B serves lsi1 by default; a plain stock-style probe gets all-ones
        chk.eq(b.bar_read(T.EXT_PROBE_ADDR, 0, False), T.EXT_REPLY_MAGIC, "MPQEXT with no features")
        chk.eq(b.cfg_read(0, 4), 0x00121000, "socket B serves lsi1")
        log.new()

        chk.eq(T.fd_count(proc.pid), base_fds, "no fd leaked by bad frames")
        # A new SET_IRQFD replaces the pair: the old one is closed, not kept.
        irq2, rs2 = eventfd(), eventfd()
        keep += [irq2, rs2]
        for _ in range(3):
            a.set_irqfd(irq2, rs2)
        alive("SET_IRQFD replacement")
        chk.eq(T.fd_count(proc.pid), base_fds, "replaced irqfd pairs are closed")
        chk.eq(log.new(), "", "valid SET_IRQFD logs nothing")

        # --- out of sync: truncated frame on B drops B only
        b.send_raw(T.Wire.header(T.PCI_CFGREAD, 12) + b"\0" * 4)
        b_proxy.shutdown(socket.SHUT_WR)
        T.wait_for(lambda: "EOF inside a frame" in T.read_file(logpath), 20, "truncated frame logged")
        b_proxy.close()
        chk.check("dropping the connection" in log.new(), "truncated frame drops that connection")
        alive("dropping socket B")
        chk.check(proc.poll() is None, "process alive with socket A left")
        chk.eq(T.fd_count(proc.pid), base_fds - 1, "socket B closed, nothing else leaked")

        # --- size > 192 on the last socket: dropped, process exits 1
        a.send_raw(T.Wire.header(T.PCI_CFGREAD, 500))
        rc = proc.wait(20)
        chk.check("payload size 500 exceeds 192" in log.new(), "oversized frame logged")
        chk.eq(rc, 1, "exit status 1 once the last connection was dropped for an error")
    finally:
        T.stop(proc)
        for fd in keep + [mem]:
            os.close(fd)
        print("remote log:\n" + T.read_file(logpath))
    chk.finish()


if __name__ == "__main__":
    main()
