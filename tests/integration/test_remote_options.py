#!/usr/bin/env python3
"""Bad qemu-scsi-dev command lines: exit status 1, one message that names
the option (QEMU's wording where QEMU has one), nothing served."""
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import mpqtest as T  # noqa: E402


def main():
    remote = T.program("qemu-scsi-dev")
    chk = T.Checker()
    tmp = T.tmpdir("mpq-remote-opts-")
    proxy, peer = socket.socketpair()
    s = peer.fileno()
    pr, pw = os.pipe()
    lsi = ["-device", "lsi53c895a,id=lsi0"]
    cases = [
        ([str(s), "-foo"], "-foo: invalid option"),
        ([str(s), "--bogus"], "--bogus: invalid option"),
        ([str(s), "-m", "256M"], "-m: invalid option"),
        ([str(s), "-device"], "-device: requires an argument"),
        ([str(s), "-device", "lsi53c895a,foo=1"],
         "-device lsi53c895a,foo=1: Property 'lsi53c895a.foo' not found"),
        ([str(s), "-device", "nosuch"], "-device nosuch: 'nosuch' is not a valid device model name"),
        ([str(s), "-device", "lsi53c895a,,id=a"],
         "-device lsi53c895a,,id=a: 'lsi53c895a,id=a' is not a valid device model name"),
        ([str(s), "-device", "lsi53c895a,id=0bad"], "Parameter 'id' expects an identifier"),
        ([str(s), "-device", "lsi53c895a,id=l", "-device", "lsi53c895a,id=l"],
         "-device lsi53c895a,id=l: Duplicate ID 'l' for device"),
        ([str(s), "-device", "lsi53c895a,id=l,addr=zz"],
         "Property 'lsi53c895a.addr' doesn't take value 'zz'"),
        ([str(s), "-device", "lsi53c895a,=x"], "-device lsi53c895a,=x: Invalid parameter ''"),
        ([str(s), "-drive", "id=d0,format=raw,if=none"] + lsi,
         "-drive id=d0,format=raw,if=none: A block device must be specified for \"file\""),
        ([str(s), "-drive", "id=d0,file=/x,cache=bogus,if=none"] + lsi, "invalid cache option"),
        ([str(s), "-drive", "id=d0,file=/x,aio=bogus,if=none"] + lsi, "invalid aio option"),
        ([str(s), "-drive", "id=d0,file=/x,format=vmdkx,if=none"] + lsi, "Unknown driver 'vmdkx'"),
        ([str(s), "-drive", "id=d0,file=/x,format=raw,if=none,foo=1"] + lsi,
         "Block format 'raw' does not support the option 'foo'"),
        ([str(s), "-drive", "id=d0,file=/x,if=ide"] + lsi, "if=ide is not supported"),
        ([str(s)] + lsi + ["-device", "scsi-hd,bus=lsi0.3,drive=d0"],
         "-device scsi-hd,bus=lsi0.3,drive=d0: Bus 'lsi0.3' not found"),
        ([str(s)] + lsi + ["-device", "scsi-hd,bus=lsi0.0,scsi-id=9,drive=d0"], "bad scsi device id: 9"),
        ([str(s)] + lsi + ["-device", "scsi-hd,bus=lsi0.0,scsi-id=abc"],
         "Parameter 'scsi-id' expects integer"),
        ([str(s)] + lsi + ["-device", "scsi-hd,bus=lsi0.0,lun=1"], "bad scsi device lun: 1"),
        ([str(s)] + lsi + ["-device", "scsi-hd,bus=lsi0.0"], "drive property not set"),
        ([str(s)] + lsi + ["-device", "scsi-hd,bus=lsi0.0,drive=nod"],
         "Property 'scsi-hd.drive' can't find value 'nod'"),
        ([str(s)] + lsi + ["-device", "scsi-hd,bus=lsi0.0,bogus=1"],
         "Property 'scsi-hd.bogus' not found"),
        (["-device", "scsi-hd,drive=d0"], "No 'SCSI' bus found for device 'scsi-hd'"),
        (lsi + ["-object", "x-remote-object,id=r0,devid=nope,fd=%d" % s], "Device 'nope' not found"),
        (lsi + ["-object", "x-remote-object,id=r0,devid=lsi0,fd=%d" % pr], "fd %d is not a socket" % pr),
        (lsi + ["-object", "x-remote-object,id=r0,devid=lsi0,fd=999"], "fd 999 is not a socket"),
        (lsi + ["-object", "x-remote-object,id=r0,devid=lsi0,fd=abc"], "Parameter 'fd' expects integer"),
        (lsi + ["-object", "x-remote-object,devid=lsi0,fd=%d" % s], "Parameter 'id' is missing"),
        (lsi + ["-object", "x-remote-object,id=r0,fd=%d" % s], "devid property not set"),
        (lsi + ["-object", "x-remote-object,id=r0,devid=lsi0,fd=%d,bad=1" % s],
         "Property 'x-remote-object.bad' not found"),
        (lsi + ["-object", "foo,id=x"], "-object foo,id=x: invalid object type: foo"),
        (["-machine", "pc"] + lsi, "-machine pc: machine type 'pc' is not supported"),
        (["-machine", "x-remote,foo=bar"] + lsi, "Property 'x-remote-machine.foo' not found"),
        (["-machine", "x-remote,vfio-user=on"] + lsi, "vfio-user is not supported"),
        (["-display", "gtk", str(s)] + lsi, "'%d': only the socket fd" % s),
        ([str(s), "-display", "gtk"] + lsi, "-display gtk: only '-display none' is supported"),
        (lsi, "no socket to serve"),
        ([str(s)], "no PCI device to serve"),
        (["abc"] + lsi, "'abc' is not a socket fd number"),
        ([str(s)] + lsi + ["-D", "/nonexistent-dir/x.log"], "-D /nonexistent-dir/x.log: cannot open log file"),
    ]
    for args, want in cases:
        p = subprocess.run([remote] + args, pass_fds=[s, pr], capture_output=True, text=True, timeout=30)
        label = " ".join(args)
        chk.eq(p.returncode, 1, "exit 1: %s" % label)
        err = p.stderr.strip()
        chk.check(want in err, "message %r in %r" % (want, err))
        chk.check(err.count("\n") == 0, "one line: %r" % err)
        chk.check(err.startswith("qemu-scsi-dev: "), "prefixed with the program name")
    peer.close()
    # Nothing was served: the proxy end saw no byte, only EOF once every
    # process holding the other end is gone.
    proxy.settimeout(10)
    chk.eq(proxy.recv(16), b"", "no frame was ever sent to the proxy end")
    os.close(pr)
    os.close(pw)

    # Help and version exit 0.
    for flag in ("-h", "-version"):
        p = subprocess.run([remote, flag], capture_output=True, text=True, timeout=30)
        chk.eq(p.returncode, 0, "%s exits 0" % flag)
        chk.check("qemu-scsi-dev" in p.stdout, "%s prints something" % flag)
    _ = tmp
    chk.finish()


if __name__ == "__main__":
    main()
