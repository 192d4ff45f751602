#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (valid inputs each target
starts from; libFuzzer mutates them). Re-run after changing a format."""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(cmd, payload=b""):
    return struct.pack("<iIQ", cmd, 0, len(payload)) + payload


def cfg(cmd, addr, val=0, ln=4):
    return frame(cmd, struct.pack("<IIi", addr, val, ln))


def bar(cmd, addr, val=0, size=4, memory=1):
    return frame(cmd, struct.pack("<QQIB3x", addr, val, size, memory))


def sysmem(n):
    gpa = [i * 0x100000 for i in range(8)]
    size = [0x100000 if i < n else 0 for i in range(8)]
    off = [0] * 8
    return frame(0, struct.pack("<8Q8Q8q", *gpa, *size, *off))


def chunks(data, nfds=0, memfd=False, split=255):
    """wire_channel_fuzz input: [len][flags][bytes] per chunk."""
    out = b""
    first = True
    for i in range(0, len(data), split):
        part = data[i:i + split]
        flags = (nfds | (16 if memfd else 0)) if first else 0
        out += bytes([len(part), flags]) + part
        first = False
    return out


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    t = "wire_channel_fuzz"
    write(t, "cfgread", chunks(cfg(3, 0x0, 0, 4)))
    write(t, "cfgwrite-split", chunks(cfg(2, 0x4, 0x7, 2), split=5))
    write(t, "barwrite-read", chunks(bar(4, 0xfebf0000, 0x12345678, 4) + bar(5, 0xc000, 0, 1, 0)))
    write(t, "sysmem-2fds", chunks(sysmem(2), nfds=2, memfd=True))
    write(t, "irqfd", chunks(frame(6), nfds=2))
    write(t, "reset", chunks(frame(7)))
    write(t, "probe", chunks(bar(5, 0x4d50514558540001, 1, 0, 0)))
    write(t, "select", chunks(frame(64, b"lsi0".ljust(64, b"\0"))))
    write(t, "oversize", chunks(struct.pack("<iIQ", 3, 0, 1 << 40)))
    t = "options_fuzz"
    argvs = [
        ["3", "-device", "lsi53c895a,id=lsi0", "-drive",
         "id=d0,file=disk.img,format=raw,if=none,cache=none,aio=io_uring",
         "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0"],
        ["-machine", "x-remote", "-nodefaults", "-display", "none",
         "-object", "x-remote-object,id=r0,devid=lsi0,fd=4"],
        ["-sandbox", "on,spawn=deny,action=log", "-run-with", "user=nobody", "-D", "log.txt"],
        ["-qmp", "unix:/tmp/q.sock,server=on,wait=off", "-chardev",
         "socket,id=c0,path=/tmp/m.sock,server=on,wait=off", "-mon", "chardev=c0,mode=readline"],
        ["-drive", "file=a,,b.img,format=qcow2,l2-cache-size=1M,readonly=on,cache.direct=on"],
        ["-m", "256M", "-smp", "1", "--nodefaults"],
    ]
    for i, argv in enumerate(argvs):
        for sel in (0, 1):
            write(t, "argv%d-%d" % (i, sel), bytes([sel]) + b"\0".join(a.encode() for a in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
