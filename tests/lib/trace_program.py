"""The qtest program the trace comparison runs against every LSI53C895A
(stock QEMU in-process, our remote under stock's x-pci-proxy-dev, our VMM
in-process): register writes and reads, a SCRIPTS run (register moves,
LOAD/STORE, CALL/RETURN, a memory move, INT) and a SCSI READ(10).

It never polls a register while the device works: completion is a flag the
SCRIPTS copy into guest RAM right before their INT, so every register access in the trace is one the
program made on purpose and the sequences can be compared line by line.
Python 3 stdlib only."""
import struct
import time

IO_BASE, MMIO_BASE, RAM_BAR = 0xC000, 0xE0000000, 0xE0002000
ISTAT0, DSTAT, DSA, DSP, DSPS, SCRATCHA, DIEN, SIST0, SIST1 = 0x14, 0x0C, 0x10, 0x2C, 0x30, 0x34, 0x39, 0x42, 0x43
SCRATCHB, MBOX0, DMODE = 0x5C, 0x16, 0x38
DSTAT_SIR = 0x04
IRQ = 11
SCRIPT = 0x100000
DATA = 0x101000
SCSI_SCRIPT = 0x110000
SCSI_BUF = 0x120000
FLAG, FLAG_SRC, FLAG_VALUE = 0x102000, 0x102004, 0x600DF1A6
PH_DATA_IN, PH_CMD, PH_STATUS, PH_MSG_OUT, PH_MSG_IN = 1, 2, 3, 6, 7


def _ca(slot, off):
    return 0x80000000 | (slot << 11) | (off & 0xFC)


def cfg_writel(q, slot, off, v):
    q.outl(0xCF8, _ca(slot, off))
    q.outl(0xCFC, v)


def cfg_writew(q, slot, off, v):
    q.outl(0xCF8, _ca(slot, off))
    q.outw(0xCFC + (off & 2), v)


def cfg_writeb(q, slot, off, v):
    q.outl(0xCF8, _ca(slot, off))
    q.outb(0xCFC + (off & 3), v)


def find_lsi(q):
    for slot in range(32):
        q.outl(0xCF8, _ca(slot, 0))
        if q.inl(0xCFC) == 0x00121000:
            return slot
    raise RuntimeError("no LSI53C895A on bus 0")


def ack_int(q):
    """The driver's interrupt handler: ISTAT, then DSTAT (lowers INTx), DSPS."""
    ist = q.readb(MMIO_BASE + ISTAT0)
    dstat = q.readb(MMIO_BASE + DSTAT)
    dsps = q.readl(MMIO_BASE + DSPS)
    return ist, dstat, dsps


class Script:
    """A tiny SCRIPTS assembler: 8-byte instructions (memory moves 12),
    labels resolved at the end. int_() first copies FLAG_VALUE to FLAG
    (a memory move), so the program can wait for the interrupt by watching
    guest RAM: no register polling, and no INTx needed (stock's proxy has no
    INTx without KVM)."""

    def __init__(self, base):
        self.base, self.items, self.labels, self.size = base, [], {}, 0

    def label(self, name):
        self.labels[name] = self.base + self.size

    def emit(self, *dws):
        self.items.append(dws)
        self.size += 4 * len(dws)

    def int_(self, vector):
        self.emit(0xC0000004, FLAG_SRC, FLAG)
        self.emit(0x98080000, vector)

    def code(self):
        res = lambda v: self.labels[v] if isinstance(v, str) else v
        return b"".join(struct.pack("<%dI" % len(d), *[res(x) for x in d]) for d in self.items)


def misc_script():
    s = Script(SCRIPT)
    s.emit(0x785C5A00, 0)                     # RMW: MOVE 0x5A TO SCRATCHB0
    s.emit(0x725C0100, 0)                     # To SFBR: MOVE SCRATCHB0 | 0x01 TO SFBR
    s.emit(0x6A5D0000, 0)                     # From SFBR: MOVE SFBR | 0 TO SCRATCHB1
    s.emit(0x7F5C0100, 0)                     # RMW: SCRATCHB0 ADC 0x01
    s.emit(0xE1340004, DATA)                  # LOAD SCRATCHA, 4 bytes
    s.emit(0xE0340004, DATA + 8)              # STORE SCRATCHA, 4 bytes
    s.emit(0x88080000, "sub")                 # CALL sub
    s.emit(0xC0000010, DATA, DATA + 0x20)     # memory move 16 bytes
    s.emit(0x800C00FF, "never")               # JUMP if SFBR == 0xFF (not taken)
    s.int_(0x1234)
    s.label("never")
    s.int_(0xDEAD)
    s.label("sub")
    s.emit(0x90080000, 0)                     # RETURN
    return s.code()


def scsi_read_script(base, target, buf, blocks):
    """SELECT ATN, IDENTIFY, READ(10), then phase-driven: disconnect,
    WAIT RESELECT, data in, status, command complete, INT 0x600D."""
    d = base + 0x200
    msgout, cdb, status, msgin = d, d + 0x10, d + 0x20, d + 0x30
    s = Script(base)
    move = lambda ph, n, a: s.emit((1 << 27) | (ph << 24) | n, a)
    jump_when = lambda ph, lab: s.emit(0x80000000 | (ph << 24) | 0x000B0000, lab)
    jump_if_data = lambda v, lab: s.emit(0x800C0000 | v, lab)
    s.emit(0x40000000 | (1 << 24) | (target << 16), "alt")   # SELECT ATN
    move(PH_MSG_OUT, 1, msgout)
    move(PH_CMD, 10, cdb)
    s.label("dispatch")
    jump_when(PH_DATA_IN, "data_in")
    jump_when(PH_STATUS, "status")
    jump_when(PH_MSG_IN, "msg_in")
    s.int_(0xBAD1)
    s.label("data_in")
    move(PH_DATA_IN, 512 * blocks, buf)
    s.emit(0x80080000, "dispatch")
    s.label("status")
    move(PH_STATUS, 1, status)
    s.emit(0x80080000, "dispatch")
    s.label("msg_in")
    move(PH_MSG_IN, 1, msgin)
    jump_if_data(0x00, "complete")
    jump_if_data(0x04, "disconnected")
    s.emit(0x60000040, 0)                     # CLEAR ACK
    s.emit(0x80080000, "dispatch")
    s.label("disconnected")
    s.emit(0x60000040, 0)
    s.emit(0x48000000, 0)                     # WAIT DISCONNECT
    s.emit(0x50000000, "alt")                 # WAIT RESELECT
    s.emit(0x80080000, "dispatch")
    s.label("complete")
    s.emit(0x60000040, 0)
    s.emit(0x48000000, 0)
    s.int_(0x600D)
    s.label("alt")
    s.int_(0xBAD2)
    code = s.code()
    assert len(code) <= 0x200
    area = bytearray(0x40)
    area[0] = 0x80                            # IDENTIFY, LUN 0
    area[0x10:0x1A] = struct.pack(">BBIBHB", 0x28, 0, 0, 0, blocks, 0)
    area[0x20] = 0xFF
    return code + bytes(0x200 - len(code)) + bytes(area)


def start_and_wait(q, addr, timeout=20.0):
    """DSP write starts SCRIPTS; the flag in RAM says the INT is done."""
    q.writel(FLAG, 0)
    q.writel(MMIO_BASE + DSP, addr)
    end = time.monotonic() + timeout
    while q.readl(FLAG) != FLAG_VALUE:
        if time.monotonic() > end:
            raise RuntimeError("SCRIPTS at 0x%x did not finish within %.0f s" % (addr, timeout))
        time.sleep(0.002)


def run(q):
    """Runs the program; returns a dict of what the guest saw (checked by
    the caller, so a device that traces nicely but works wrongly fails)."""
    seen = {}
    slot = find_lsi(q)
    cfg_writel(q, slot, 0x10, IO_BASE)
    cfg_writel(q, slot, 0x14, MMIO_BASE)
    cfg_writel(q, slot, 0x18, RAM_BAR)
    cfg_writew(q, slot, 0x04, 0x7)
    # 1. register writes and reads (MMIO and I/O, byte and dword)
    q.writel(MMIO_BASE + SCRATCHA, 0x33221100)
    seen["scratcha"] = q.readl(MMIO_BASE + SCRATCHA)
    q.writeb(MMIO_BASE + MBOX0, 0x5A)
    seen["mbox0"] = q.readb(MMIO_BASE + MBOX0)
    q.outl(IO_BASE + DSA, 0x00102030)
    seen["dsa"] = q.inl(IO_BASE + DSA)
    seen["istat"] = q.readb(MMIO_BASE + ISTAT0)
    # 2. a SCRIPTS run
    q.write(DATA, struct.pack("<IIII", 0xCAFEF00D, 0, 0, 0) + bytes(16))
    q.write(FLAG_SRC, struct.pack("<I", FLAG_VALUE))
    q.write(SCRIPT, misc_script())
    q.writeb(MMIO_BASE + DIEN, DSTAT_SIR)
    start_and_wait(q, SCRIPT)
    seen["misc_int"] = ack_int(q)
    seen["scratchb"] = q.readl(MMIO_BASE + SCRATCHB)
    seen["store"] = q.readl(DATA + 8)
    seen["memmove"] = q.readl(DATA + 0x20)
    # 3. a SCSI READ(10) of 2 blocks from LBA 0, twice: the first answers
    # the power-on unit attention (CHECK CONDITION), the second moves data.
    for i in range(2):
        q.write(SCSI_SCRIPT, scsi_read_script(SCSI_SCRIPT, 0, SCSI_BUF, 2))
        q.cmd("memset 0x%x 0x400 0xee" % SCSI_BUF)
        start_and_wait(q, SCSI_SCRIPT)
        seen["scsi_int%d" % i] = ack_int(q)
        seen["status%d" % i] = q.readb(SCSI_SCRIPT + 0x220)
    seen["data"] = q.read(SCSI_BUF, 1024)
    q.writeb(MMIO_BASE + DIEN, 0)
    return seen
