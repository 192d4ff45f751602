#!/usr/bin/env python3
"""Differential tester: the same seeded random programs on stock QEMU's
in-process lsi53c895a and on ours (remote under our VMM, remote under stock
QEMU's proxy, in-process in our VMM); everything observable is compared.

  python3 tests/difftest/difftest.py --kind all --seed 1 --count 200
  python3 tests/difftest/difftest.py --replay tests/difftest/repro/X.json

See tests/difftest/README.md.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import signal
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets as T  # noqa: E402
import gen as G  # noqa: E402

REG_NAMES = {
    0x00: "SCNTL0", 0x01: "SCNTL1", 0x02: "SCNTL2", 0x03: "SCNTL3", 0x04: "SCID", 0x05: "SXFER",
    0x06: "SDID", 0x07: "GPREG", 0x08: "SFBR", 0x09: "SOCL", 0x0A: "SSID", 0x0B: "SBCL",
    0x0C: "DSTAT", 0x0D: "SSTAT0", 0x0E: "SSTAT1", 0x0F: "SSTAT2", 0x14: "ISTAT0", 0x15: "ISTAT1",
    0x16: "MBOX0", 0x17: "MBOX1", 0x18: "CTEST0", 0x19: "CTEST1", 0x1A: "CTEST2", 0x1B: "CTEST3",
    0x20: "DFIFO", 0x21: "CTEST4", 0x22: "CTEST5", 0x23: "CTEST6", 0x27: "DCMD", 0x38: "DMODE",
    0x39: "DIEN", 0x3A: "SBR", 0x3B: "DCNTL", 0x40: "SIEN0", 0x41: "SIEN1", 0x42: "SIST0",
    0x43: "SIST1", 0x44: "SLPAR", 0x45: "SWIDE", 0x46: "MACNTL", 0x47: "GPCNTL", 0x48: "STIME0",
    0x49: "STIME1", 0x4A: "RESPID0", 0x4B: "RESPID1", 0x4C: "STEST0", 0x4D: "STEST1",
    0x4E: "STEST2", 0x4F: "STEST3", 0x50: "SIDL", 0x51: "SIDL1", 0x52: "STEST4", 0x53: "0x53",
    0x54: "SODL", 0x55: "SODL1", 0x56: "CCNTL0", 0x57: "CCNTL1", 0x58: "SBDL", 0x59: "SBDL1",
}
for base, name, n in ((0x10, "DSA", 4), (0x1C, "TEMP", 4), (0x24, "DBC", 3), (0x28, "DNAD", 4),
                      (0x2C, "DSP", 4), (0x30, "DSPS", 4), (0x34, "SCRATCHA", 4),
                      (0x3C, "ADDER", 4), (0x5C, "SCRATCHB", 4)):
    for i in range(n):
        REG_NAMES[base + i] = name
for i in range(0x60, 0xA0):
    REG_NAMES[i] = "SCRATCH%s" % "CDEFGHIJKLMNOPQR"[(i - 0x60) // 4]
for base, name in ((0xA0, "MMRS"), (0xA4, "MMWS"), (0xA8, "SFS"), (0xAC, "DRS"), (0xB0, "SBMS"),
                   (0xB4, "DBMS"), (0xB8, "DNAD64"), (0xC0, "PMJAD1"), (0xC4, "PMJAD2"),
                   (0xC8, "RBC"), (0xCC, "UA"), (0xD0, "ESA"), (0xD4, "IA"), (0xD8, "SBC"),
                   (0xDC, "CSBC")):
    for i in range(4):
        REG_NAMES[base + i] = name


def reg_name(off):
    return REG_NAMES.get(off & 0xFF, "0x%02x" % (off & 0xFF))


# ------------------------------------------------------------------ running
def run_program(setup, prog):
    """Run `prog` on a freshly reset `setup`; return (trace, snapshot)."""
    q = setup.q
    setup.reset()
    trace = []
    mmio, iob = T.MMIO_BASE, T.IO_BASE
    for i, op in enumerate(prog["ops"]):
        k = op[0]
        if k == "w":
            _, bar, off, size, val = op
            if bar == "mmio":
                q.cmd("write%s 0x%x 0x%x" % ("bwl"[size >> 1], mmio + off, val))
            else:
                q.cmd("out%s 0x%x 0x%x" % ("bwl"[size >> 1], iob + (off & 0xFF), val))
        elif k == "r":
            _, bar, off, size = op
            if bar == "mmio":
                v = q.cmd("read%s 0x%x" % ("bwl"[size >> 1], mmio + off))
            else:
                v = q.cmd("in%s 0x%x" % ("bwl"[size >> 1], iob + (off & 0xFF)))
            trace.append((i, "r", bar, off, size, int(v, 16)))
        elif k in ("mem", "insn"):
            data = bytes.fromhex(op[2]) if k == "mem" else \
                b"".join(w.to_bytes(4, "little") for w in op[2])
            q.write(op[1], data)
        elif k == "wait":
            trace.append((i, "wait", wait_idle(setup, op[1]), irq(setup)))
        elif k == "ack":
            ist = q.readb(mmio + 0x14)
            sist = q.readw(mmio + 0x42) if ist & 2 else None
            dstat = q.readb(mmio + 0x0C) if ist & 1 else None
            trace.append((i, "ack", ist, sist, dstat, irq(setup)))
        elif k == "pmresume":
            ist = q.readb(mmio + 0x14)
            sist = q.readw(mmio + 0x42) if ist & 2 else 0
            dstat = q.readb(mmio + 0x0C) if ist & 1 else 0
            ent = [i, "pm", ist, sist, dstat]
            if sist & 0x80:
                ent.append(q.readl(mmio + 0x24))
                q.writel(mmio + 0x2C, op[1])
                ent.append(wait_idle(setup, op[2]))
            trace.append(tuple(ent))
        elif k == "note":
            pass
        elif k == "cfgw":
            setup.cfg_write(op[1], op[2], op[3])
        elif k == "cfgr":
            trace.append((i, "cfgr", op[1], op[2], setup.cfg_read(op[1], op[2])))
        else:
            raise ValueError("bad op %r" % (op,))
    wait_idle(setup, 0.05 if prog["kind"] != "scsi" else 0.5)
    snap = setup.snapshot(ram=touches_ram(prog))
    return trace, snap


def touches_ram(prog):
    """Whether a program can reach SCRIPTS RAM: only SCRIPTS can, and only
    through addresses it names."""
    if prog["kind"] == "regs":
        return False
    lo, hi = T.RAM_BASE, T.RAM_BASE + T.RAM_SIZE
    for op in prog["ops"]:
        if op[0] in ("mem", "insn") and lo <= op[1] < hi:
            return True
        if op[0] == "insn" and any(lo <= w < hi for w in op[2][1:]):
            return True
    return False


def run_all(setups, prog, pool):
    """Run `prog` on every setup at once (each has its own processes)."""
    futs = {n: pool.submit(run_program, s, prog) for n, s in setups.items()}
    return {n: f.result() for n, f in futs.items()}


def irq(setup):
    return setup.poll_irq()


# A wait of a second or more is a completion wait (a SCSI command): it ends
# as soon as the chip interrupts, so a longer limit costs nothing when all is
# well, and it keeps a loaded machine (a proxied setup under a parallel test
# run) from turning slowness into a difference. Short waits are the "has it
# stopped yet" kind, where the limit is usually reached, and stay as written.
COMPLETION_WAIT_SCALE = 5


def wait_idle(setup, timeout):
    """Poll ISTAT until DIP or SIP, or SCRIPTS stopped (ISTAT1.SRUN clear),
    or `timeout` seconds pass; return ISTAT's interrupt bits and SRUN."""
    if timeout >= 1:
        timeout *= COMPLETION_WAIT_SCALE
    q = setup.q
    end = time.monotonic() + timeout
    delay = 0.0002
    while True:
        ist, ist1 = [int(v, 16) for v in q.cmd_batch(
            ["readb 0x%x" % (T.MMIO_BASE + 0x14), "readb 0x%x" % (T.MMIO_BASE + 0x15)])]
        if not ist1 & 2 and not ist & 3:
            # SCRIPTS stopped between the two reads (a completion that
            # arrived in between, more likely the more loaded the machine):
            # ISTAT read before the stop is not the stop's. Once SRUN is
            # clear the interrupt bits are final, so read them again.
            ist = q.readb(T.MMIO_BASE + 0x14)
        if ist & 3 or not ist1 & 2 or time.monotonic() > end:
            return (ist & 0x0F, ist1 & 2)
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


# ---------------------------------------------------------------- comparing
def cause(ref, got, prog=None):
    """A known root cause that explains a whole program's difference (the
    fields that follow from it are not listed separately), or None."""
    rd, gd = ref[1].get("rtc:0:readl", 0) & 0xFF, got[1].get("rtc:0:readl", 0) & 0xFF
    rs, gs = ref[1].get("rtc:1:readw", 0) & 0xFF, got[1].get("rtc:1:readw", 0) & 0xFF
    seen = lambda tr, bit, pos: any(e[1] == "ack" and e[pos] is not None and e[pos] & bit for e in tr)
    # Our DMA outside guest RAM and our BARs ends in DSTAT.BF; stock QEMU's
    # goes to unassigned memory and SCRIPTS continue.
    if (gd & 0x20 or seen(got[0], 0x20, 4)) and not (rd & 0x20 or seen(ref[0], 0x20, 4)):
        return "dma-bus-fault"
    # A block move in the bus's phase with nothing connected: ours raises
    # SIST0.UDC; stock QEMU waits for a request that never comes (data
    # phases) or runs the phase without a target (MSG OUT, STATUS, ...).
    if (gs & 0x04 or seen(got[0], 0x04, 3)) and not (rs & 0x04 or seen(ref[0], 0x04, 3)):
        return "disconnected-move-udc"
    # Stock QEMU still running SCRIPTS outside everything the program wrote
    # (a RETURN without a CALL went to TEMP = 0, say): it ran into zeroed
    # memory and paused after its instruction limit on a virtual-clock
    # timer that never fires under -S, where ours carries on. Nothing to
    # compare there. "Written" means the program's instructions and data
    # (a LOAD into DSP can send SCRIPTS into the zeroed part of the window
    # between them); without the program, the whole window counts.
    dsp = ref[1].get("reg:mmio4@2c", 0)
    if prog:
        spans = [(op[1], op[1] + (len(op[2]) // 2 if op[0] == "mem" else 4 * len(op[2])))
                 for op in prog["ops"] if op[0] in ("mem", "insn")]
        inside = any(a <= dsp <= e for a, e in spans)
    else:
        inside = T.WIN_BASE <= dsp < T.WIN_BASE + T.WIN_SIZE or T.RAM_BASE <= dsp < T.RAM_BASE + T.RAM_SIZE
    if ref[1].get("reg:mmio1@15", 0) & 2 and not inside and _diff_fields(ref, got, True):
        return "runaway-scripts"
    # Both still running at the end of a SCRIPTS program: a LOAD or memory
    # move into DSP made a loop (the generator's jumps only go forward).
    # Stock QEMU sits where its instruction limit paused it, ours moves on
    # with every yield; where each one is when read is not comparable.
    # Both waiting in one place (WAIT RESELECT, say) is compared as usual.
    if prog and prog["kind"] == "scripts" and ref[1].get("reg:mmio1@15", 0) & 2 \
            and got[1].get("reg:mmio1@15", 0) & 2 \
            and ref[1].get("reg:mmio4@2c") != got[1].get("reg:mmio4@2c") and _diff_fields(ref, got, True):
        return "runaway-scripts"
    return None


def diff(ref, got, irq_both, prog=None):
    """Differing observations as a sorted list of field names (or one
    known cause, see cause())."""
    rtrace, rsnap = ref
    gtrace, gsnap = got
    fields = set()
    c = cause(ref, got, prog)
    if c:
        return [c]
    notes = {op[1] for op in prog["ops"] if op[0] == "note"} if prog else set()
    # A command where stock QEMU departs from the SCSI standards, or one
    # listed as open (the generator marks them, see DIVERGENCES.md): its
    # status or data differ, and with them what follows in the program
    # (phases, counters, unit attentions, later data).
    for note in ("ua-request-sense", "sync-cache-16", "verify-lba-range", "mode-select-block-length",
                 "cdb-length", "vpd-block-limits", "vpd-no-lun"):
        if note in notes:
            if _diff_fields(ref, got, irq_both):
                return [note]
    if "unmap" in notes:
        # Stock QEMU ignores discards by default (-drive discard=ignore),
        # ours releases the blocks: what reads back from them may differ.
        out = _diff_fields(ref, got, irq_both)
        data = {f for f in out if f.startswith("disk-") or f == "guest-memory"}
        return sorted((set(out) - data) | ({"unmapped-data"} if data else set()))
    return _diff_fields(ref, got, irq_both)


def _diff_fields(ref, got, irq_both):
    rtrace, rsnap = ref
    gtrace, gsnap = got
    fields = set()
    if len(rtrace) != len(gtrace):
        fields.add("trace-length")
    for a, b in zip(rtrace, gtrace):
        if a == b:
            continue
        if not irq_both and a[:-1] == b[:-1]:
            continue
        if a[1] == "r":
            fields.update(byte_fields(a[3], a[4], a[5], b[5], "read"))
        elif a[1] == "wait":
            fields.add("wait-istat" if a[2] != b[2] else "irq")
        elif a[1] == "ack":
            if a[2] != b[2]:
                fields.add("ack-ISTAT")
            if a[3] != b[3]:
                fields.add("ack-SIST")
            if a[4] != b[4]:
                fields.add("ack-DSTAT")
            if a[2:5] == b[2:5]:
                fields.add("irq")
        elif a[1] == "pm":
            fields.add("pm-resume")
        else:
            fields.add("cfg-read")
    for k, v in rsnap.items():
        w = gsnap.get(k)
        if v == w:
            continue
        if k.startswith("irq"):
            if irq_both:
                fields.add(k)
        elif k.startswith("reg:"):
            bar_size, off = k[4:].split("@")
            size = int(bar_size[-1])
            o = int(off.rstrip("u"), 16)
            fields.update(byte_fields(o, size, v, w, "reg"))
        elif k.startswith("rtc:"):
            fields.add("rtc-" + {"readl": "DSTAT", "inl": "DSTAT", "readw": "SIST",
                                 "inw": "SIST", "readb": "CTEST2/ISTAT",
                                 "inb": "CTEST2/ISTAT"}[k.split(":")[2]])
        elif k.startswith("cfg"):
            fields.add("pci-config")
        elif k == "scripts-ram":
            fields.add("scripts-ram")
        elif k.startswith("mem"):
            fields.add("guest-memory")
        elif k.startswith("disk"):
            fields.add(k)
    return sorted(fields)


def byte_fields(off, size, a, b, prefix):
    out = set()
    for i in range(size):
        if (a >> (8 * i)) & 0xFF != (b >> (8 * i)) & 0xFF:
            out.add(reg_name(off + i))
    return out


def detail(ref, got, limit=60):
    """Human-readable list of differing values."""
    lines = []
    for a, b in zip(ref[0], got[0]):
        if a != b:
            lines.append("op %s: stock %r, ours %r" % (a[0], a[1:], b[1:]))
    for k, v in ref[1].items():
        w = got[1].get(k)
        if v == w:
            continue
        if isinstance(v, bytes):
            n = [i for i in range(min(len(v), len(w))) if v[i] != w[i]]
            lines.append("%s: %d bytes differ, first at +0x%x (stock %02x, ours %02x)"
                         % (k, len(n), n[0], v[n[0]], w[n[0]]) if n else "%s: differs" % k)
        elif isinstance(v, int):
            lines.append("%s: stock 0x%x, ours 0x%x" % (k, v, w if w is not None else -1))
        else:
            lines.append("%s: stock %r, ours %r" % (k, v, w))
    if len(lines) > limit:
        lines = lines[:limit] + ["... %d more" % (len(lines) - limit)]
    return lines


# ---------------------------------------------------------------- shrinking
def shrink(prog, ref_setup, setup, fields, budget=120, seconds=60):
    """Smaller program that still differs in one of `fields`."""
    want = set(fields)
    runs = [0]
    # A candidate counts only if stock QEMU ends it as the original ends
    # (interrupt bits and SRUN after every wait): otherwise removing an INT
    # lets SCRIPTS run off into zeroed memory, where stock pauses for good.
    orig_end = [e for e in run_program(ref_setup, prog)[0] if e[1] == "wait"][-1:]

    end = time.monotonic() + seconds

    def still(ops):
        if runs[0] >= budget or time.monotonic() > end:
            return False
        runs[0] += 1
        p = dict(prog, ops=ops)
        try:
            r = run_program(ref_setup, p)
            if [e[2] for e in r[0] if e[1] == "wait"][-1:] != [e[2] for e in orig_end]:
                return False
            g = run_program(setup, p)
        except Exception:
            return False
        return bool(want & set(diff(r, g, ref_setup.irq_visible and setup.irq_visible, p)))

    ops = list(prog["ops"])
    chunk = max(1, len(ops) // 2)
    while chunk >= 1:
        i = 0
        while i < len(ops):
            cand = ops[:i] + ops[i + chunk:]
            if cand and still(cand):
                ops = cand
            else:
                i += chunk
        chunk //= 2
    for i, op in enumerate(ops):    # instructions that do not matter: NOPs
        if op[0] == "insn" and op[2][:2] != G.NOP:
            cand = ops[:i] + [["insn", op[1], G.nop_for(op[2])]] + ops[i + 1:]
            if still(cand):
                ops = cand
    return dict(prog, ops=ops, shrunk_runs=runs[0])


def write_repro(dirpath, prog, setup_name, fields, lines):
    os.makedirs(dirpath, exist_ok=True)
    name = "%s-%d-%s.json" % (prog["kind"], prog["seed"], setup_name)
    path = os.path.join(dirpath, name)
    with open(path, "w") as f:
        json.dump({"setup": setup_name, "fields": fields, "detail": lines,
                   "program": prog}, f, indent=1)
    return path


# ---------------------------------------------------------------- driver
def load_divergences(path):
    """Documented, intentional divergences: a set of field names that are
    expected to differ (see DIVERGENCES.md)."""
    out = {}
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if line.startswith("| `") and "|" in line[3:]:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                kind = cells[0].strip("`")
                for field in cells[1].split(","):
                    out.setdefault(kind, set()).add(field.strip().strip("`"))
    return out


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, _terminate)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="all", help="regs, scripts, scsi or all")
    ap.add_argument("--seed", type=int, default=1, help="first seed")
    ap.add_argument("--count", type=int, default=100, help="programs per kind")
    ap.add_argument("--setups", default=None,
                    help="comma list of %s (default: all available)" % ",".join(T.SETUPS[1:]))
    ap.add_argument("--shrink", type=int, default=3,
                    help="shrink and write reproducers for up to N new classes (0: off)")
    ap.add_argument("--repro-dir", default=None, help="where reproducers go (default: a temp dir)")
    ap.add_argument("--replay", default=None,
                    help="run one reproducer JSON (or KIND:SEED) and show the differences")
    ap.add_argument("--divergences", default=os.path.join(T.HERE, "DIVERGENCES.md"))
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 on any difference outside the documented list")
    ap.add_argument("--json", default=None, help="write the numbers here")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    if T.QTest is None:
        print("SKIP: qtest client not found in %s (set MPQ_SHARED_DIR)" % T.BENCH_DIR)
        return 77
    avail = T.available_setups()
    if T.REFERENCE not in avail or len(avail) < 2:
        print("SKIP: needs stock qemu-system-x86_64 and our build (%s)" % T.build_dir())
        return 77
    names = [n for n in avail if n != T.REFERENCE]
    if a.setups:
        names = [n for n in a.setups.split(",") if n in avail]
    tmp = tempfile.mkdtemp(prefix="mpq-difftest-", dir="/tmp")
    repro_dir = a.repro_dir or os.path.join(tmp, "repro")
    setups = T.start_setups([T.REFERENCE] + names, tmp)
    ref = setups[T.REFERENCE]
    documented = load_divergences(a.divergences)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(setups))
    rc = 0
    try:
        if a.replay:
            if ":" in a.replay and not os.path.exists(a.replay):
                kind, seed = a.replay.split(":")
                prog = G.generate(kind, int(seed))
            else:
                with open(a.replay) as f:
                    prog = json.load(f)["program"]
            r = run_program(ref, prog)
            for n in names:
                g = run_program(setups[n], prog)
                fields = diff(r, g, ref.irq_visible and setups[n].irq_visible, prog)
                print("%s: %s" % (n, ", ".join(fields) or "identical"))
                for ln in detail(r, g):
                    print("   ", ln)
            return 0
        kinds = list(G.GENERATORS) if a.kind == "all" else a.kind.split(",")
        stats = {}
        shrunk = set()
        t0 = time.monotonic()
        for kind in kinds:
            st = stats[kind] = {"programs": 0, "identical": 0, "divergent": 0,
                                "undocumented": 0, "unstable": 0,
                                "classes": collections.Counter()}
            for seed in range(a.seed, a.seed + a.count):
                prog = G.generate(kind, seed)
                res = run_all(setups, prog, pool)
                r = res[T.REFERENCE]
                st["programs"] += 1
                same = True
                for n in names:
                    s = setups[n]
                    g = res[n]
                    fields = diff(r, g, ref.irq_visible and s.irq_visible, prog)
                    if not fields:
                        continue
                    # A difference outside the list must repeat: run the
                    # program again on both; one that changes is counted as
                    # unstable (timing of asynchronous disk I/O or interrupt
                    # delivery).
                    r2, g2 = r, g
                    if any(f not in documented.get(kind, ()) and f not in documented.get("all", ())
                           for f in fields):
                        r2, g2 = run_program(ref, prog), run_program(s, prog)
                    fields2 = diff(r2, g2, ref.irq_visible and s.irq_visible, prog)
                    if fields2 != fields:
                        st["unstable"] += 1
                        if a.verbose:
                            print("%s seed %d on %s: unstable (%s / %s)"
                                  % (kind, seed, n, ", ".join(fields), ", ".join(fields2)))
                        if not fields2:
                            continue
                        fields = sorted(set(fields) & set(fields2)) or fields2
                    same = False
                    new = [f for f in fields if f not in documented.get(kind, ()) and
                           f not in documented.get("all", ())]
                    for f in fields:
                        st["classes"][f] += 1
                    if new:
                        st["undocumented"] += 1
                        if a.verbose:
                            print("%s seed %d on %s: %s" % (kind, seed, n, ", ".join(new)))
                            for ln in detail(r2, g2, limit=8):
                                print("      ", ln)
                        key = (kind, new[0])
                        if a.shrink and key not in shrunk and len(shrunk) < a.shrink:
                            shrunk.add(key)
                            sp = shrink(prog, ref, s, [new[0]])
                            rr, gg = run_program(ref, sp), run_program(s, sp)
                            path = write_repro(repro_dir, sp, n, diff(rr, gg, True, sp), detail(rr, gg))
                            print("  reproducer (%d ops): %s" % (len(sp["ops"]), path))
                    if not all(x.alive() for x in setups.values()):
                        raise RuntimeError("a process died (logs in %s)" % tmp)
                if same:
                    st["identical"] += 1
                else:
                    st["divergent"] += 1
            print("%-8s programs %5d  identical %5d  divergent %5d  (undocumented %d, unstable %d)"
                  % (kind, st["programs"], st["identical"], st["divergent"], st["undocumented"],
                     st["unstable"]))
            for f, c in st["classes"].most_common():
                mark = "" if f in documented.get(kind, ()) or f in documented.get("all", ()) else " *"
                print("    %-20s %5d%s" % (f, c, mark))
            if st["undocumented"] and a.strict:
                rc = 1
        print("setups: stock vs %s; %.1f s" % (", ".join(names), time.monotonic() - t0))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({k: dict(v, classes=dict(v["classes"])) for k, v in stats.items()}, f,
                          indent=1)
    finally:
        pool.shutdown()
        for s in setups.values():
            s.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
