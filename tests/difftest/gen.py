"""Seeded random programs for the differential tester.

A program is a dict {"kind", "seed", "ops"}; every op is a plain list so a
program can be written as JSON and replayed.  Ops:

  ["w", bar, off, size, val]     register write ("mmio" or "io" BAR)
  ["r", bar, off, size]          register read (value goes into the trace)
  ["mem", addr, hex]             write bytes to guest RAM or SCRIPTS RAM
  ["insn", addr, [dwords]]       one SCRIPTS instruction (shrinks to a NOP)
  ["wait", seconds]              poll ISTAT until DIP/SIP or SCRIPTS idle
  ["ack"]                        read ISTAT, then SIST0/1 and DSTAT if flagged
  ["pmresume", addr, seconds]    ack; after a phase mismatch (SIST0.MA) also
                                 read DBC and restart SCRIPTS at addr, wait
  ["cfgw", off, size, val] / ["cfgr", off, size]   PCI configuration space
  ["note", text]                 nothing runs; tells the comparison something
"""
import random

from targets import WIN_BASE, RAM_BASE, DISK_SECTORS

# ------------------------------------------------------------ SCRIPTS words
PH_DO, PH_DI, PH_CMD, PH_ST, PH_MO, PH_MI = 0, 1, 2, 3, 6, 7
NOP = [0x80000000, 0]          # JUMP if false with no condition: never taken
INT_END = 0xFEED


def _a(x):
    return x if isinstance(x, str) else x & 0xFFFFFFFF


def move(phase, count, addr, indirect=False, table=False, chmov=False):
    w = (0 if chmov else 1 << 27) | (phase << 24) | (count & 0xFFFFFF)
    if indirect:
        w |= 1 << 29
    if table:
        w |= 1 << 28
    return [w, _a(addr)]


def io(op, target=0, alt=0, atn=False, ack=False, carry=False, tmode=False,
       rel=False, table=False, sel_atn=False):
    w = 0x40000000 | (op << 27) | ((target & 0xF) << 16)
    if rel:
        w |= 1 << 26
    if table:
        w |= 1 << 25
    if sel_atn:
        # QEMU looks at bit 3, the manual at bit 24: "both", "24" or "3".
        w |= {"24": 1 << 24, "3": 1 << 3}.get(sel_atn, 1 << 24 | 1 << 3)
    if atn:
        w |= 1 << 3
    if ack:
        w |= 1 << 6
    if carry:
        w |= 1 << 10
    if tmode:
        w |= 1 << 9
    return [w, _a(alt)]


def rmw(opcode, operator, reg, imm, use_sfbr=False):
    w = 0x40000000 | (opcode << 27) | (operator << 24) | ((reg & 0x7F) << 16) | \
        ((imm & 0xFF) << 8) | (reg & 0x80)
    if use_sfbr:
        w |= 1 << 23
    return [w, 0]


def xfer(op, target, phase=0, rel=False, carry=False, intfly=False, iftrue=True,
         cmp_data=False, cmp_phase=False, wait=False, mask=0, data=0):
    w = 0x80000000 | (op << 27) | (phase << 24) | (mask << 8) | data
    for bit, on in ((23, rel), (21, carry), (20, intfly), (19, iftrue), (18, cmp_data),
                    (17, cmp_phase), (16, wait)):
        if on:
            w |= 1 << bit
    return [w, _a(target)]


def jump(target):
    return xfer(0, target)


def int_(vec):
    return xfer(3, vec)


def memmove(count, src, dst):
    return [0xC0000000 | (count & 0xFFFFFF), src & 0xFFFFFFFF, dst & 0xFFFFFFFF]


def load_store(load, reg, count, addr, dsa_rel=False, noflush=False):
    w = 0xE0000000 | ((1 << 24) if load else 0) | ((reg & 0xFF) << 16) | (count & 7)
    if dsa_rel:
        w |= 1 << 28
    if noflush:
        w |= 1 << 25
    return [w, _a(addr)]


class Asm:
    """Lays instructions out from `base`; labels resolve on assembly."""

    def __init__(self, base):
        self.base = base
        self.items = []
        self.labels = {}
        self.size = 0

    def here(self):
        return self.base + self.size

    def label(self, name):
        self.labels[name] = self.here()

    def emit(self, words):
        self.items.append(list(words))
        self.size += 4 * len(words)

    def ops(self):
        out, addr = [], self.base
        for words in self.items:
            res = [self.labels[w] if isinstance(w, str) else w for w in words]
            out.append(["insn", addr, res])
            addr += 4 * len(words)
        return out


def wr(off, size, val, bar="mmio"):
    return ["w", bar, off, size, val & ((1 << (8 * size)) - 1)]


# ------------------------------------------------------- register sequences
KNOWN = list(range(0x00, 0x60)) + [0x60, 0x64, 0x9C, 0xA0, 0xA4, 0xA8, 0xAC, 0xB0, 0xB4,
                                   0xB8, 0xC0, 0xC4, 0xC8, 0xCC, 0xD0, 0xD4, 0xD8, 0xDC, 0xE0, 0xFC]


def rand_val(rng, size):
    c = rng.random()
    top = (1 << (8 * size)) - 1
    if c < 0.15:
        return 0
    if c < 0.3:
        return top
    if c < 0.5:
        return (1 << rng.randrange(8 * size))
    return rng.randrange(top + 1)


def gen_regs(rng):
    ops = []
    for _ in range(rng.randint(4, 40)):
        size = rng.choice((1, 1, 1, 2, 4))
        off = rng.choice(KNOWN) & ~(size - 1)
        bar = rng.choice(("mmio", "io"))
        if rng.random() < 0.05:
            off |= rng.choice((0x100, 0x200, 0x300)) if bar == "mmio" else 0
        if rng.random() < 0.55:
            val = rand_val(rng, size)
            # Never start SCRIPTS from here: no DSP top byte, no DCNTL.STD.
            span = range(off & 0xFF, (off & 0xFF) + size)
            if 0x2F in span:
                continue
            if 0x3B in span:
                val &= ~(0x04 << (8 * (0x3B - (off & 0xFF))))
            if 0x14 in span and rng.random() < 0.7:
                val &= ~(0x40 << (8 * (0x14 - (off & 0xFF))))   # SRST mostly off
            ops.append(["w", bar, off, size, val])
        else:
            ops.append(["r", bar, off, size])
    if rng.random() < 0.2:
        ops.append(["cfgr", rng.randrange(0, 64, 4), 4])
    return ops


# --------------------------------------------------------- SCRIPTS programs
# Registers RMW and LOAD may write: not TEMP, DSP (they move the program
# counter out of the program) and not ISTAT's SRST.
SAFE_REGS = [r for r in list(range(0x00, 0x60)) + [0x60, 0x61, 0x9C, 0xC8, 0xCC, 0xD4]
             if r not in range(0x1C, 0x20) and r not in range(0x2C, 0x30)
             and r not in (0x14, 0x3B, 0x49)]


def gen_scripts(rng):
    in_ram = rng.random() < 0.4
    base = RAM_BASE + 0x100 if in_ram else WIN_BASE + 0x1000
    data = WIN_BASE + 0x8000          # data area the program reads and writes
    dsa = data + 0x100
    n = rng.randint(3, 30)
    ops = [wr(0x10, 4, dsa)]          # DSA
    # Data area: a pattern the moves and loads can pick up.
    pat = bytes(rng.randrange(256) for _ in range(0x400))
    ops.append(["mem", data, pat.hex()])
    if rng.random() < 0.3:
        ops.append(wr(0x56, 1, rng.choice((0x00, 0x80, 0xC0))))    # CCNTL0
    if rng.random() < 0.3:
        ops.append(wr(0x57, 1, rng.choice((0x00, 0x01, 0x02, 0x06, 0x08))))  # CCNTL1
    if rng.random() < 0.2:
        ops.append(wr(0x14, 1, 0x20))     # SIGP
    if rng.random() < 0.3:
        ops.append(wr(0x39, 1, rng.randrange(256)))    # DIEN
        ops.append(wr(0x40, 2, rng.randrange(0x10000)))  # SIEN
    a = Asm(base)
    # Main part: straight-line with forward jumps; CALLs go to subroutines
    # placed after the final INT, which contain no transfer control.
    nsubs = rng.randint(0, 2)
    subs = ["sub%d" % i for i in range(nsubs)]
    for i in range(n):
        a.label("i%d" % i)
        fwd = lambda: "i%d" % rng.randint(i + 1, n) if i + 1 <= n else "end"
        c = rng.random()
        if c < 0.14:      # block move
            ph = rng.choice((PH_DO, PH_DI, PH_CMD, PH_ST, PH_MO, PH_MI))
            cnt = rng.choice((1, 1, 2, 4, 6, 16, 0, 0x100))
            mode = rng.random()
            if mode < 0.6:
                a.emit(move(ph, cnt, data + rng.randrange(0, 0x200), chmov=rng.random() < 0.2))
            elif mode < 0.8:
                a.emit(move(ph, cnt, data + 0x300, indirect=True))
            else:
                a.emit(move(ph, 0, rng.choice((0, 8, 0x10, -8)) & 0xFFFFFF, table=True))
        elif c < 0.26:    # I/O
            op = rng.choice((0, 0, 1, 2, 3, 3, 4, 4))
            if op == 0:
                t = rng.choice((0, 3, 5, 7))
                a.emit(io(0, t, fwd(), sel_atn=rng.choice((False, "both", "24", "3")),
                          table=rng.random() < 0.1))
            elif op == 2 and rng.random() < 0.5:
                a.emit(io(2, 0, fwd()))
            elif op in (3, 4):
                a.emit(io(op, atn=rng.random() < 0.5, ack=rng.random() < 0.5,
                          carry=rng.random() < 0.5, tmode=rng.random() < 0.2))
            else:
                a.emit(io(1 if op == 2 else op))
        elif c < 0.52:    # register move
            opcode = rng.choice((5, 6, 7))
            reg = rng.choice(SAFE_REGS)
            if reg == 0x08 and opcode != 5:
                reg = 0x34   # SFBR reads are a documented divergence
            a.emit(rmw(opcode, rng.randrange(8), reg, rand_val(rng, 1),
                       use_sfbr=rng.random() < 0.2))
        elif c < 0.70:    # transfer control
            op = rng.choice((0, 0, 0, 1, 3, 3))
            kw = dict(iftrue=rng.random() < 0.6, cmp_data=rng.random() < 0.3,
                      cmp_phase=rng.random() < 0.3, carry=rng.random() < 0.2,
                      phase=rng.randrange(8), mask=rng.choice((0, 0xF0, 0xFF)),
                      data=rand_val(rng, 1), wait=rng.random() < 0.1)
            if op == 0:
                tgt = fwd()
                if rng.random() < 0.3:
                    a.emit(xfer(0, 0, rel=True, **kw))   # relative 0: next insn
                else:
                    a.emit(xfer(0, tgt, **kw))
            elif op == 1 and subs:
                a.emit(xfer(1, rng.choice(subs), **kw))
            elif op == 3:
                if rng.random() < 0.5:
                    kw["intfly"] = True
                a.emit(xfer(3, rng.randrange(0x10000), **kw))
            else:
                a.emit(xfer(rng.choice((4, 5, 6, 7)), 0) if rng.random() < 0.3 else NOP)
        elif c < 0.78:    # memory move
            cnt = rng.choice((1, 3, 4, 8, 64, 0x100))
            src = data + rng.randrange(0, 0x200)
            dst = rng.choice((data + rng.randrange(0x200, 0x380),
                              RAM_BASE + 0x1800 + rng.randrange(0, 0x100),
                              data + rng.randrange(0, 0x200)))
            a.emit(memmove(cnt, src, dst))
        elif c < 0.92:    # LOAD / STORE
            load = rng.random() < 0.5
            reg = rng.choice(SAFE_REGS) if load else rng.randrange(0, 0x60)
            cnt = rng.choice((1, 2, 3, 4, 4, 0, 5, 7))
            if not load and reg <= 0x08 < reg + cnt:
                reg = 0x09   # a STORE of SFBR: see DIVERGENCES.md
            if rng.random() < 0.5:
                a.emit(load_store(load, reg, cnt, rng.randrange(-0x40, 0x40) & 0xFFFFFF,
                                  dsa_rel=True))
            else:
                a.emit(load_store(load, reg, cnt, data + rng.randrange(0, 0x200),
                                  noflush=rng.random() < 0.3))
        else:             # odd encodings
            a.emit(rng.choice(([0, 0], [0x00000000, 0x12345678],
                               [0xC8000000 | rng.randrange(256), data],   # memory move, reserved bits
                               [0x78000000 | rng.randrange(0x800000), 0],
                               [0x98000000, 0x1111])))
    a.label("i%d" % n)
    a.label("end")
    a.emit(int_(INT_END))
    # Continuing (DCNTL.STD) after the final INT comes back to it instead of
    # running on into zeroed memory: stock QEMU pauses SCRIPTS for good
    # after 100 instructions under -accel tcg -S, ours goes on.
    a.emit(jump("end"))
    for s in subs:
        a.label(s)
        for _ in range(rng.randint(0, 3)):
            # Not SFBR (0x08): stock reads it as 0, so a read-modify-write of
            # it, and every later move that takes SFBR as operand, differs
            # for the documented reason (DIVERGENCES.md, SFBR).
            a.emit(rmw(7, rng.randrange(8), rng.choice((0x34, 0x35, 0x5C, 0x36)), rand_val(rng, 1)))
        a.emit(xfer(2, 0))     # RETURN
    ops += a.ops()
    ops.append(wr(0x2C, 4, base))     # start
    ops.append(["wait", 0.05])
    for _ in range(rng.choice((0, 0, 1, 2))):
        ops.append(["ack"])
        ops.append(wr(0x3B, 1, 0x04))  # DCNTL.STD: continue after the stop
        ops.append(["wait", 0.05])
    return ops


# ------------------------------------------------------------- SCSI commands
def be(n, v):
    return v.to_bytes(n, "big")


def cdb_catalogue(rng):
    """(cdb, data_in_len, data_out_bytes) for a random scsi-hd command."""
    lba = rng.choice((0, 1, rng.randrange(DISK_SECTORS), DISK_SECTORS - 1, DISK_SECTORS,
                      0xFFFFFFFF))
    nblk = rng.choice((0, 1, 2, 8, 16))
    alloc = rng.choice((0, 1, 4, 8, 18, 32, 36, 64, 96, 255, 0x1000))
    ctl = 0
    c = rng.randrange(32)
    if c == 0:
        return bytes([0x00, 0, 0, 0, 0, ctl]), 0, b""
    if c == 1:
        desc = rng.choice((0, 0, 1))
        return bytes([0x03, desc, 0, 0, alloc & 0xFF, ctl]), alloc & 0xFF, b""
    if c == 2:
        evpd = rng.random() < 0.6
        page = rng.choice((0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0x81, 0xC0)) if evpd else \
            rng.choice((0, 0, 0, 0x83))
        a = rng.choice((alloc, 36, 255, 0x1000, 0x10001))
        return bytes([0x12, int(evpd), page]) + be(2, a & 0xFFFF) + bytes([ctl]), a & 0xFFFF, b""
    if c == 3:
        page = rng.choice((0x01, 0x04, 0x05, 0x08, 0x0A, 0x3F, 0x1C, 0x00))
        pc = rng.choice((0, 0, 1, 2, 3))
        dbd = rng.choice((0, 8))
        return bytes([0x1A, dbd, (pc << 6) | page, 0, alloc & 0xFF, ctl]), alloc & 0xFF, b""
    if c == 4:
        page = rng.choice((0x01, 0x04, 0x05, 0x08, 0x0A, 0x3F))
        pc = rng.choice((0, 1, 2, 3))
        return bytes([0x5A, rng.choice((0, 8, 0x10)), (pc << 6) | page, 0, 0, 0, 0]) + \
            be(2, alloc & 0xFFFF) + bytes([ctl]), alloc & 0xFFFF, b""
    if c == 5:
        pmi = rng.choice((0, 0, 1))
        return bytes([0x25, 0]) + be(4, rng.choice((0, 0, 5))) + bytes([0, 0, pmi, ctl]), 8, b""
    if c == 6:
        return bytes([0x9E, 0x10]) + be(8, 0) + be(4, alloc) + bytes([0, ctl]), alloc, b""
    if c in (7, 8, 9, 10):   # READ 6/10/12/16
        kind = c - 7
        if kind == 0:
            n6 = rng.choice((1, 2, 8, 0))
            l6 = lba & 0x1FFFFF
            return bytes([0x08, (l6 >> 16) & 0x1F, (l6 >> 8) & 0xFF, l6 & 0xFF, n6, ctl]), \
                512 * (n6 or 256), b""
        if kind == 1:
            return bytes([0x28, rng.choice((0, 0, 0x08, 0x20))]) + be(4, lba) + bytes([0]) + \
                be(2, nblk) + bytes([ctl]), 512 * nblk, b""
        if kind == 2:
            return bytes([0xA8, 0]) + be(4, lba) + be(4, nblk) + bytes([0, ctl]), 512 * nblk, b""
        return bytes([0x88, 0]) + be(8, lba) + be(4, nblk) + bytes([0, ctl]), 512 * nblk, b""
    if c in (11, 12, 13, 14):  # WRITE 6/10/12/16, WRITE AND VERIFY(10)
        kind = c - 11
        data = bytes(rng.randrange(256) for _ in range(16)) * (32 * max(nblk, 1))
        if kind == 0:
            l6 = lba & 0x1FFFFF
            n6 = max(nblk, 1)
            return bytes([0x0A, (l6 >> 16) & 0x1F, (l6 >> 8) & 0xFF, l6 & 0xFF, n6, ctl]), 0, \
                data[:512 * n6]
        if kind == 1:
            op = rng.choice((0x2A, 0x2A, 0x2E))
            return bytes([op, rng.choice((0, 0, 0x08, 0x20))]) + be(4, lba) + bytes([0]) + \
                be(2, nblk) + bytes([ctl]), 0, data[:512 * nblk]
        if kind == 2:
            return bytes([0xAA, 0]) + be(4, lba) + be(4, nblk) + bytes([0, ctl]), 0, data[:512 * nblk]
        return bytes([0x8A, 0]) + be(8, lba) + be(4, nblk) + bytes([0, ctl]), 0, data[:512 * nblk]
    if c == 15:
        return bytes([0x2F, rng.choice((0, 2))]) + be(4, lba) + bytes([0]) + be(2, nblk) + \
            bytes([ctl]), 0, b""
    if c == 16:
        return bytes([0x35, 0]) + be(4, 0) + bytes([0, 0, 0, ctl]), 0, b""
    if c == 17:
        return bytes([0x91, 0]) + be(8, 0) + be(4, 0) + bytes([0, ctl]), 0, b""
    if c == 18:
        return bytes([0x1B, 0, 0, 0, rng.choice((0, 1, 2, 3)), ctl]), 0, b""
    if c == 19:
        sel = rng.choice((0, 0, 1, 2, 3))
        a = rng.choice((16, 4096, 8, 24))
        return bytes([0xA0, 0, sel, 0, 0, 0]) + be(4, a) + bytes([0, ctl]), a, b""
    if c == 20:
        data = bytes(512)
        return bytes([0x41, rng.choice((0, 8))]) + be(4, lba) + bytes([0]) + be(2, nblk) + \
            bytes([ctl]), 0, data
    if c == 21:
        data = bytes([0xAB]) * 512
        return bytes([0x93, rng.choice((0, 8))]) + be(8, lba) + be(4, nblk) + bytes([0, ctl]), \
            0, data
    if c == 22:
        desc = be(8, lba & 0xFFF) + be(4, nblk) + bytes(4)
        plist = be(2, 6 + len(desc)) + be(2, len(desc)) + bytes(4) + desc
        return bytes([0x42, rng.choice((0, 0, 1)), 0, 0, 0, 0, 0]) + be(2, len(plist)) + \
            bytes([ctl]), 0, plist
    if c == 23:
        page = bytes([0x08, 0x12, rng.choice((0x04, 0x00))]) + bytes(0x11)
        hdr = bytes([0, 0, 0, rng.choice((0, 8))])
        bd = be(4, 0) + be(4, rng.choice((512, 1024, 256))) if hdr[3] else b""
        plist = hdr + bd + page
        return bytes([0x15, rng.choice((0x10, 0x11, 0x00)), 0, 0, len(plist), ctl]), 0, plist
    if c == 24:
        return bytes([0x16, 0, 0, 0, 0, ctl]), 0, b""
    if c == 25:
        return bytes([0x17, 0, 0, 0, 0, ctl]), 0, b""
    if c == 26:
        return bytes([0x2B, 0]) + be(4, lba) + bytes([0, 0, 0, ctl]), 0, b""
    if c == 27:
        return bytes([0x1E, 0, 0, 0, rng.choice((0, 1)), ctl]), 0, b""
    if c == 28:
        return bytes([0xA3, 0x0C, 0, 0, 0, 0]) + be(4, alloc) + bytes([0, ctl]), alloc, b""
    if c == 29:
        return bytes([0x4D, 0, 0x40, 0, 0, 0, 0]) + be(2, alloc & 0xFFFF) + bytes([ctl]), \
            alloc & 0xFFFF, b""
    if c == 30:
        return bytes([0x04, 0, 0, 0, 0, ctl]), 0, b""
    op = rng.choice((0x01, 0x07, 0x0B, 0x3B, 0x3C, 0x55, 0x5E, 0x7F, 0xC0, 0xFF))
    return bytes([op]) + bytes(rng.randrange(256) for _ in range(5)), rng.choice((0, 8)), b""


CDB_LEN = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}


def scsi_command(rng, slot, idx, pm_jump, ua_pending):
    """Ops for one command: its driver script at `slot` plus host steps.
    `ua_pending`: the targets whose power-on unit attention no command has
    taken yet (updated here)."""
    cdb, din, dout = cdb_catalogue(rng)
    target = rng.choice((0, 0, 0, 3, 3, 5))
    lun = 0 if rng.random() < 0.9 else 1
    disc = rng.random() < 0.7
    tag = None
    if rng.random() < 0.4:
        tag = (rng.choice((0x20, 0x20, 0x21, 0x22)),
               rng.choice([t for t in range(1, 256) if t != 4]))
    exp = din or len(dout)
    r = rng.random()
    mlen = exp if r < 0.6 else (max(1, exp // 2) if r < 0.8 else exp + rng.choice((1, 16, 512)))
    mlen = max(1, min(mlen, 0x10000))
    if rng.random() < 0.1:       # a CDB cut short or padded
        cdb = (cdb + bytes(16))[:rng.choice((6, 10, 12, 16))]
    d = slot + 0x400
    msgout, cdbaddr, status, msgin, buf = d, d + 0x10, d + 0x30, d + 0x38, d + 0x100
    ops = []
    # Blocks that UNMAP or WRITE SAME with UNMAP may release read back as
    # any data (SBC-3, LBPRZ = 0): the comparison needs to know.
    if cdb[0] == 0x42 or (cdb[0] in (0x41, 0x93) and cdb[1] & 0x08):
        ops.append(["note", "unmap"])
    # Commands where stock QEMU departs from the SCSI standards (see
    # DIVERGENCES.md): REQUEST SENSE while the reset's unit attention is
    # pending, and SYNCHRONIZE CACHE(16).
    if target in ua_pending:
        if cdb[0] == 0x03:
            ops.append(["note", "ua-request-sense"])
        if cdb[0] not in (0x12, 0xA0):     # INQUIRY, REPORT LUNS leave it pending
            ua_pending.discard(target)
    if cdb[0] == 0x91:
        ops.append(["note", "sync-cache-16"])
    group_len = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(cdb[0] >> 5)
    if group_len is None or len(cdb) < group_len:
        ops.append(["note", "cdb-length"])
    if cdb[0] == 0x12 and cdb[1] & 1 and cdb[2] == 0xB0:
        ops.append(["note", "vpd-block-limits"])
    if cdb[0] == 0x12 and cdb[1] & 1 and lun != 0:
        ops.append(["note", "vpd-no-lun"])
    if cdb[0] == 0x2F and len(cdb) >= 10 and not cdb[1] & 0x06:
        lba, n = int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big")
        if lba + n > DISK_SECTORS:
            ops.append(["note", "verify-lba-range"])
    if cdb[0] == 0x15 and len(dout) >= 12 and dout[3] == 8 and int.from_bytes(dout[9:12], "big") == 256:
        ops.append(["note", "mode-select-block-length"])
    mo = bytes([(0xC0 if disc else 0x80) | lun]) + (bytes(tag) if tag else b"")
    ops.append(["mem", d, (mo + bytes(16 - len(mo)) + cdb + bytes(32 - len(cdb)) +
                           b"\xFF" * 8 + b"\xEE" * 8).hex()])
    if dout:
        ops.append(["mem", buf, (dout + bytes(max(0, mlen - len(dout))))[:mlen].hex()])
    a = Asm(slot)
    a.emit(io(0, target, "resel", sel_atn=rng.choice(("both", "24", "3"))))
    a.emit(move(PH_MO, len(mo), msgout))
    a.emit(move(PH_CMD, len(cdb), cdbaddr))
    a.label("dispatch")
    a.emit(xfer(0, "data_in", phase=PH_DI, cmp_phase=True, wait=True))
    a.emit(xfer(0, "data_out", phase=PH_DO, cmp_phase=True, wait=True))
    a.emit(xfer(0, "status", phase=PH_ST, cmp_phase=True, wait=True))
    a.emit(xfer(0, "msg_in", phase=PH_MI, cmp_phase=True, wait=True))
    a.emit(int_(0xBAD1))
    a.label("data_in")
    a.emit(move(PH_DI, mlen, buf, chmov=rng.random() < 0.5))
    a.emit(jump("dispatch"))
    a.label("data_out")
    a.emit(move(PH_DO, mlen, buf))
    a.emit(jump("dispatch"))
    a.label("status")
    a.emit(move(PH_ST, 1, status))
    a.emit(jump("dispatch"))
    a.label("msg_in")
    a.emit(move(PH_MI, 1, msgin))
    a.emit(xfer(0, "complete", cmp_data=True, data=0x00))
    a.emit(xfer(0, "disconnected", cmp_data=True, data=0x04))
    a.emit(io(4, ack=True))
    a.emit(jump("dispatch"))
    a.label("disconnected")
    a.emit(io(4, ack=True))
    a.emit(io(1))
    a.emit(io(2, 0, "waitresel"))
    a.emit(jump("dispatch"))
    a.label("complete")
    a.emit(io(4, ack=True))
    a.emit(io(1))
    a.emit(int_(0x600D))
    a.label("resel")
    a.emit(int_(0xBAD2))
    a.label("waitresel")
    a.emit(int_(0xBAD3))
    ops += a.ops()
    if pm_jump:
        ops.append(wr(0xC0, 4, a.labels["dispatch"]))
        ops.append(wr(0xC4, 4, a.labels["dispatch"]))
    ops.append(wr(0x2C, 4, slot))
    ops.append(["wait", 2.0])
    # Phase mismatch by interrupt: the host acknowledges and continues at
    # the dispatcher (a few rounds at most).
    for _ in range(0 if pm_jump else 3):
        ops.append(["pmresume", a.labels["dispatch"], 2.0])
    ops.append(["ack"])
    return ops


def gen_scsi(rng):
    in_ram = rng.random() < 0.25
    pm_jump = rng.random() < 0.5
    ops = [wr(0x56, 1, 0x80 if pm_jump else 0x00)]    # CCNTL0.ENPMJ
    if rng.random() < 0.3:
        ops.append(wr(0x57, 1, 0x06))
    if rng.random() < 0.3:
        ops.append(wr(0x39, 1, 0x7D))       # DIEN
        ops.append(wr(0x40, 2, 0x058F))     # SIEN
    ncmd = rng.randint(1, 4)
    ua_pending = {0, 3}
    for i in range(ncmd):
        if in_ram:
            slot = RAM_BASE + 0x200 * i
            # SCRIPTS RAM holds the code; the data area stays in guest RAM.
            sub = scsi_command(rng, slot, i, pm_jump, ua_pending)
            # Relocate the data area (slot + 0x400) into the window.
            ops += relocate(sub, slot + 0x400, WIN_BASE + 0x10000 + 0x20000 * i)
        else:
            ops += scsi_command(rng, WIN_BASE + 0x20000 * i, i, pm_jump, ua_pending)
    return ops


def relocate(ops, old, new):
    """Move a command's data area (old..old+0x20000) to `new`."""
    def fix(v):
        return v - old + new if old <= v < old + 0x20000 else v
    out = []
    for op in ops:
        if op[0] == "mem":
            out.append(["mem", fix(op[1]), op[2]])
        elif op[0] == "insn":
            out.append(["insn", op[1], [op[2][0]] + [fix(w) for w in op[2][1:]]])
        else:
            out.append(op)
    return out


GENERATORS = {"regs": gen_regs, "scripts": gen_scripts, "scsi": gen_scsi}


def generate(kind, seed):
    rng = random.Random("%s-%d" % (kind, seed))
    return {"kind": kind, "seed": seed, "ops": GENERATORS[kind](rng)}


def nop_for(words):
    """A NOP of the same length (a zero dword is a 4-byte NOP)."""
    return list(NOP) + [0] * (len(words) - 2)
