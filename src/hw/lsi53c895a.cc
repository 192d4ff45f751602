// LSI53C895A: PCI identity, register file with its side effects, interrupt
// line, chip / SCSI bus / PCI resets, save and restore.
#include "hw/lsi53c895a.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "hw/lsi_impl.h"
#include "util/log.h"

namespace mpq::hw {

using namespace lsi;

namespace {

pci::PciIdentity lsi_identity() {
    pci::PciIdentity id;
    id.vendor = kLsiVendor;
    id.device = kLsiDevice;
    id.class_code = kLsiClass;
    id.subsys_vendor = 0;
    id.subsys_id = 0x1000;
    id.irq_pin = 1;
    id.latency_timer = 0xff;
    id.bars[0] = {pci::BarKind::Io, kLsiIoBarSize};
    id.bars[1] = {pci::BarKind::Mem32, kLsiMmioBarSize};
    id.bars[2] = {pci::BarKind::Mem32, kLsiRamBarSize};
    return id;
}

uint8_t byte_of(uint32_t v, unsigned i) { return static_cast<uint8_t>(v >> (8 * (i & 3))); }

void set_byte(uint32_t& v, unsigned i, uint8_t b) {
    unsigned sh = 8 * (i & 3);
    v = (v & ~(0xffu << sh)) | (static_cast<uint32_t>(b) << sh);
}

// 32-bit registers above SCRATCHR that have no side effects.
uint32_t* wide_reg(LsiRegs& r, uint8_t off) {
    switch (off & 0xfc) {
    case kMmrs: return &r.mmrs;
    case kMmws: return &r.mmws;
    case kSfs: return &r.sfs;
    case kDrs: return &r.drs;
    case kSbms: return &r.sbms;
    case kDbms: return &r.dbms;
    case kDnad64: return &r.dnad64;
    case kPmjad1: return &r.pmjad1;
    case kPmjad2: return &r.pmjad2;
    case kRbc: return &r.rbc;
    case kUa: return &r.ua;
    case kIa: return &r.ia;
    case kSbc: return &r.sbc;
    case kCsbc: return &r.csbc;
    default: return nullptr;
    }
}

}  // namespace

bool lsi_trace_enabled() {
    static const bool on = std::getenv("MPQ_LSI_TRACE") != nullptr;
    return on;
}

LsiController::LsiController(WorkQueue& wq, std::string id, LsiTuning tuning)
    : Lsi53c895a(lsi_identity()), wq_(wq), id_(std::move(id)),
      budget_per_activation_(std::max(1u, tuning.scripts_budget)) {
    chip_reset(ResetKind::PowerOn);
}

LsiController::~LsiController() {
    if (yield_timer_) wq_.cancel_timer(yield_timer_);
    cancel_all_requests();
}

// ---------------------------------------------------------------- BARs ----

uint64_t LsiController::bar_read(int bar, uint64_t off, unsigned size) {
    if (size == 0 || size > 8) return 0;
    if (bar == 2) {
        if (off >= s_.ram.size() || size > s_.ram.size() - off) return ~0ull;
        uint64_t v = 0;
        std::memcpy(&v, &s_.ram[off], size);
        return v;
    }
    if (bar != 0 && bar != 1) return ~0ull;
    // Wide accesses are ascending byte accesses, so read side effects
    // (DSTAT, SIST0/1, CTEST2) fire per byte as on the PCI bus.
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++)
        v |= static_cast<uint64_t>(reg_read(static_cast<uint8_t>(off + i))) << (8 * i);
    return v;
}

void LsiController::bar_write(int bar, uint64_t off, uint64_t val, unsigned size) {
    if (size == 0 || size > 8) return;
    if (bar == 2) {
        if (off >= s_.ram.size() || size > s_.ram.size() - off) return;
        std::memcpy(&s_.ram[off], &val, size);
        return;
    }
    if (bar != 0 && bar != 1) return;
    for (unsigned i = 0; i < size; i++)
        reg_write(static_cast<uint8_t>(off + i), static_cast<uint8_t>(val >> (8 * i)));
}

// Registers a read of which changes the chip: everything else reads stored
// state and may be served from the proxy's mirror.
static bool read_has_side_effect(unsigned off) {
    return off == kDstat || off == kCtest2 || off == kSist0 || off == kSist1;
}

pci::RegWindow LsiController::reg_window() const {
    pci::RegWindow w;
    w.bars = 0b011;  // the I/O BAR and the MMIO BAR decode the same register file
    for (unsigned off = 0; off < pci::kRegWindowSize; ++off) w.pure[off] = !read_has_side_effect(off);
    return w;
}

void LsiController::reg_window_fill(std::span<uint8_t, pci::kRegWindowSize> image) {
    // Runs at the end of every event-loop round of the remote: the named
    // registers through reg_read, the dword banks above them (scratch C..R,
    // the 64-bit/move registers) a dword at a time, as reg_read decodes them.
    for (unsigned off = 0; off < kScratchC; ++off)
        if (!read_has_side_effect(off)) image[off] = reg_read_raw(static_cast<uint8_t>(off));
    LsiRegs& r = s_.regs;
    for (unsigned off = kScratchC; off < pci::kRegWindowSize; off += 4) {
        uint32_t* w = off < kScratchEnd ? &r.scratch_cr[(off - kScratchC) / 4] : wide_reg(r, static_cast<uint8_t>(off));
        for (unsigned i = 0; i < 4; ++i) image[off + i] = w ? byte_of(*w, i) : kUnknownRead;
    }
    static_assert(kScratchEnd == kMmrs && kScratchC % 4 == 0, "the dword banks are contiguous");
}

static bool settle_irq(LsiRegs& r);

// The three status registers a driver reads in its interrupt handler, as
// reg_read_raw would read them (one byte, the register cleared, update_irq),
// done on a copy.
unsigned LsiController::predict_reads(std::span<ReadPrediction, kMaxReadPredictions> out) const {
    static_assert(kMaxReadPredictions >= 3);
    unsigned n = 0;
    auto add = [&](uint8_t off, uint8_t value, LsiRegs after) {
        ReadPrediction p;
        p.offset = off;
        p.value = value;
        p.irq_level_after = settle_irq(after);
        // The other window bytes a read changes: only ISTAT0 (DIP, SIP).
        if (after.istat0 != s_.regs.istat0) {
            p.change_offset[p.changes] = kIstat0;
            p.change_value[p.changes] = after.istat0;
            p.changes++;
        }
        out[n++] = p;
    };
    {
        LsiRegs a = s_.regs;
        uint8_t v = a.dstat | kDstatDfe;
        if (!(a.istat0 & kIstatIntf)) a.dstat = 0;
        add(kDstat, v, a);
    }
    {
        LsiRegs a = s_.regs;
        uint8_t v = a.sist0;
        a.sist0 = 0;
        add(kSist0, v, a);
    }
    {
        LsiRegs a = s_.regs;
        uint8_t v = a.sist1;
        a.sist1 = 0;
        add(kSist1, v, a);
    }
    return n;
}

// The device ran on between the publication and the read's arrival: a
// status reported to the guest is cleared, what was raised since stays
// for the next read (as if the new bits had come right after the read).
void LsiController::late_predicted_read(int bar, unsigned offset, uint8_t seen) {
    LsiRegs& r = s_.regs;
    switch (bar == 0 || bar == 1 ? offset : ~0u) {
    case kDstat:
        if (!(r.istat0 & kIstatIntf)) r.dstat &= static_cast<uint8_t>(~seen);
        break;
    case kSist0: r.sist0 &= static_cast<uint8_t>(~seen); break;
    case kSist1: r.sist1 &= static_cast<uint8_t>(~seen); break;
    default: (void)bar_read(bar, offset, 1); return;
    }
    if (MPQ_TRACE_ON(lsi_reg_read)) trace::emit_lsi_reg_read(lsi_reg_name(static_cast<uint8_t>(offset)), offset, seen);
    update_irq();
}

// ----------------------------------------------------------- registers ----

uint8_t LsiController::reg_read(uint8_t off) {
    uint8_t v = reg_read_raw(off);
    // QEMU hands out the pending message byte of a MSG IN phase without a line.
    if (MPQ_TRACE_ON(lsi_reg_read) && !(off == kSbdl && phase() == Phase::MsgIn))
        trace::emit_lsi_reg_read(lsi_reg_name(off), off, v);
    return v;
}

uint8_t LsiController::reg_read_raw(uint8_t off) {
    LsiRegs& r = s_.regs;
    if (off >= kScratchC && off < kScratchEnd) return byte_of(r.scratch_cr[(off - kScratchC) / 4], off);
    if (off >= kMmrs) {
        uint32_t* w = wide_reg(r, off);
        return w ? byte_of(*w, off) : kUnknownRead;
    }
    switch (off) {
    case kScntl0: return r.scntl0;
    case kScntl1: return r.scntl1;
    case kScntl2: return r.scntl2;
    case kScntl3: return r.scntl3;
    case kScid: return r.scid;
    case kSxfer: return r.sxfer;
    case kSdid: return r.sdid;
    case kGpreg: return kGpregValue;
    case kSfbr: return r.sfbr;
    case kSocl: return r.socl;
    case kSsid: return r.ssid;
    case kSbcl: return r.sbcl;
    case kDstat: {
        uint8_t v = r.dstat | kDstatDfe;
        // An INTFLY still being acknowledged keeps DSTAT for the next read.
        if (!(r.istat0 & kIstatIntf)) r.dstat = 0;
        update_irq();
        return v;
    }
    case kSstat0: return r.sstat0;
    case kSstat1: return r.sstat1;
    case kSstat2: return connected() ? 0 : kSstat2Ldsc;
    case kDsa: case kDsa + 1: case kDsa + 2: case kDsa + 3: return byte_of(r.dsa, off);
    case kIstat0: return r.istat0;
    case kIstat1: return r.istat1;
    case kMbox0: return r.mbox0;
    case kMbox1: return r.mbox1;
    case kCtest0: return 0xff;
    case kCtest1: return 0;
    case kCtest2: {
        uint8_t v = r.ctest2 | kCtest2Dack | kCtest2Cm;
        if (r.istat0 & kIstatSigp) {
            r.istat0 &= ~kIstatSigp;
            v |= kCtest2Sigp;
        }
        return v;
    }
    case kCtest3: return r.ctest3;
    case kTemp: case kTemp + 1: case kTemp + 2: case kTemp + 3: return byte_of(r.temp, off);
    case kDfifo: return r.dfifo;
    case kCtest4: return r.ctest4;
    case kCtest5: return r.ctest5;
    case kCtest6: return 0;
    case kDbc: case kDbc + 1: case kDbc + 2: return byte_of(r.dbc, off);
    case kDcmd: return r.dcmd;
    case kDnad: case kDnad + 1: case kDnad + 2: case kDnad + 3: return byte_of(r.dnad, off);
    case kDsp: case kDsp + 1: case kDsp + 2: case kDsp + 3: return byte_of(r.dsp, off);
    case kDsps: case kDsps + 1: case kDsps + 2: case kDsps + 3: return byte_of(r.dsps, off);
    case kScratchA: case kScratchA + 1: case kScratchA + 2: case kScratchA + 3:
        return byte_of(r.scratch_a, off);
    case kDmode: return r.dmode;
    case kDien: return r.dien;
    case kSbr: return r.sbr;
    case kDcntl: return r.dcntl;
    case kAdder: case kAdder + 1: case kAdder + 2: case kAdder + 3: return byte_of(r.adder, off);
    case kSien0: return r.sien0;
    case kSien1: return r.sien1;
    case kSist0: {
        uint8_t v = r.sist0;
        r.sist0 = 0;
        update_irq();
        return v;
    }
    case kSist1: {
        uint8_t v = r.sist1;
        r.sist1 = 0;
        update_irq();
        return v;
    }
    case kMacntl: return kMacntlValue;
    case kGpcntl: return kGpcntlValue;
    case kStime0: return r.stime0;
    case kRespid0: return r.respid0;
    case kRespid1: return r.respid1;
    case kStest1: return r.stest1;
    case kStest2: return r.stest2;
    case kStest3: return r.stest3;
    case kSidl: return r.sidl;
    case kStest4: return kStest4Value;
    case kCcntl0: return r.ccntl0;
    case kCcntl1: return r.ccntl1;
    case kSbdl:
        // The byte the target presents: the pending message in MSG IN.
        return (connected() && phase() == Phase::MsgIn && s_.scripts.msg_len > 0) ? s_.scripts.msg[0] : 0;
    case kSbdl + 1: return 0;
    case kScratchB: case kScratchB + 1: case kScratchB + 2: case kScratchB + 3:
        return byte_of(r.scratch_b, off);
    default: return kUnknownRead;
    }
}

void LsiController::reg_write(uint8_t off, uint8_t val) {
    MPQ_TRACE(lsi_reg_write, lsi_reg_name(off), off, val);
    LsiRegs& r = s_.regs;
    if (off >= kScratchC && off < kScratchEnd) {
        set_byte(r.scratch_cr[(off - kScratchC) / 4], off, val);
        return;
    }
    if (off >= kMmrs) {
        if (uint32_t* w = wide_reg(r, off)) set_byte(*w, off, val);
        return;
    }
    switch (off) {
    case kScntl0: r.scntl0 = val; break;
    case kScntl1: {
        // SST starts nothing here. CON takes the written value as in stock
        // QEMU (SSTAT2.LDSC follows it); the SCSI side copes with a
        // connection flag that has no request behind it.
        r.scntl1 = static_cast<uint8_t>(val & ~kScntl1Sst);
        if (val & kScntl1Rst) {
            if (!(r.sstat0 & kSstat0Rst)) {
                r.sstat0 |= kSstat0Rst;
                scsi_bus_reset();
                // The bus reset drops the connection, but the register
                // keeps the value just written.
                r.scntl1 = static_cast<uint8_t>(val & ~kScntl1Sst);
            }
        } else {
            r.sstat0 &= ~kSstat0Rst;
        }
        break;
    }
    case kScntl2: r.scntl2 = val & ~(kScntl2Wsr | kScntl2Wss); break;
    case kScntl3: r.scntl3 = val; break;
    case kScid: r.scid = val; break;
    case kSxfer: r.sxfer = val; break;
    case kSdid: r.sdid = val & 0x0f; break;
    case kSfbr: r.sfbr = val; break;  // only SCRIPTS moves write it in practice
    case kDsa: case kDsa + 1: case kDsa + 2: case kDsa + 3: set_byte(r.dsa, off, val); break;
    case kIstat0: {
        r.istat0 = static_cast<uint8_t>((r.istat0 & 0x0f) | (val & 0xf0));
        if (val & kIstatAbrt) script_dma_interrupt(kDstatAbrt);
        if (val & kIstatIntf) r.istat0 &= ~kIstatIntf;
        update_irq();
        if ((val & kIstatSigp) && s_.scripts.wait == LsiWait::Reselect) execute();
        if (val & kIstatSrst) {
            if (in_exec_) {
                pending_chip_reset_ = true;
                stop_scripts();
            } else {
                chip_reset(ResetKind::Chip);
            }
        }
        break;
    }
    case kMbox0: r.mbox0 = val; break;
    case kMbox1: r.mbox1 = val; break;
    case kCtest2: r.ctest2 = val & kCtest2Pcicie; break;
    case kCtest3: r.ctest3 = val & 0x0f; break;
    case kTemp: case kTemp + 1: case kTemp + 2: case kTemp + 3: set_byte(r.temp, off, val); break;
    case kCtest4: r.ctest4 = val; break;
    case kCtest5: r.ctest5 = val; break;
    case kDbc: case kDbc + 1: case kDbc + 2: set_byte(r.dbc, off, val); break;
    case kDnad: case kDnad + 1: case kDnad + 2: case kDnad + 3: set_byte(r.dnad, off, val); break;
    case kDsp: case kDsp + 1: case kDsp + 2: set_byte(r.dsp, off, val); break;
    case kDspLast:
        set_byte(r.dsp, off, val);
        if (!(r.dmode & kDmodeMan)) start_scripts();
        break;
    case kDsps: case kDsps + 1: case kDsps + 2: case kDsps + 3: set_byte(r.dsps, off, val); break;
    case kScratchA: case kScratchA + 1: case kScratchA + 2: case kScratchA + 3:
        set_byte(r.scratch_a, off, val);
        break;
    case kDmode: r.dmode = val; break;
    case kDien:
        r.dien = val;
        update_irq();
        break;
    case kSbr: r.sbr = val; break;
    case kDcntl:
        r.dcntl = val & ~(kDcntlPff | kDcntlStd);
        if (val & kDcntlStd) start_scripts();
        break;
    case kSien0:
        r.sien0 = val;
        update_irq();
        break;
    case kSien1:
        r.sien1 = val;
        update_irq();
        break;
    case kStime0: r.stime0 = val; break;
    case kStime1:
        // No timer runs: Linux measures the SCSI clock with it and accepts
        // an immediate expiry (see the spec, getfreq). The expiry is a
        // SCSI interrupt like any other: with SIEN1.GEN set it halts SCRIPTS
        // (a SCRIPTS LOAD or register move into STIME1 stops there), masked
        // it only sets SIST1.GEN.
        if (val & 0x0f) script_scsi_interrupt(0, kSist1Gen);
        break;
    case kRespid0: r.respid0 = val; break;
    case kRespid1: r.respid1 = val; break;
    case kStest1: r.stest1 = val; break;
    case kStest2: r.stest2 = val; break;
    case kStest3: r.stest3 = val; break;
    case kCcntl0: r.ccntl0 = val; break;
    case kCcntl1: r.ccntl1 = val; break;
    case kScratchB: case kScratchB + 1: case kScratchB + 2: case kScratchB + 3:
        set_byte(r.scratch_b, off, val);
        break;
    default: break;  // read-only or unimplemented: ignored
    }
}

// ---------------------------------------------------------- interrupts ----

// ISTAT0's DIP and SIP brought in line with DSTAT and SIST0/1, and the
// INTx level the registers then call for.
static bool settle_irq(LsiRegs& r) {
    bool level = false;
    if (r.dstat) {
        r.istat0 |= kIstatDip;
        if (r.dstat & r.dien) level = true;
    } else {
        r.istat0 &= ~kIstatDip;
    }
    if (r.sist0 || r.sist1) {
        r.istat0 |= kIstatSip;
        if ((r.sist0 & r.sien0) || (r.sist1 & r.sien1)) level = true;
    } else {
        r.istat0 &= ~kIstatSip;
    }
    if (r.istat0 & kIstatIntf) level = true;
    return level;
}

void LsiController::update_irq() {
    LsiRegs& r = s_.regs;
    bool level = settle_irq(r);
    if (level != traced_level_) {  // QEMU prints level changes only
        MPQ_TRACE(lsi_update_irq, level, r.dstat, r.sist1, r.sist0);
        traced_level_ = level;
    }
    set_irq(level);
    if (!current_ && !level && (r.sien0 & kSist0Rsl) && (r.scid & kScidRre) && !connected())
        MPQ_TRACE(lsi_update_irq_disconnected);
}

// -------------------------------------------------------------- resets ----

void LsiController::chip_reset(ResetKind kind) {
    if (kind == ResetKind::Chip) MPQ_TRACE(lsi_reset);
    cancel_all_requests();
    if (yield_timer_) {
        wq_.cancel_timer(yield_timer_);
        yield_timer_ = 0;
    }
    pending_chip_reset_ = false;
    pending_bus_reset_ = false;
    // Stock QEMU keeps SFBR and the adder across a chip reset.
    uint8_t sfbr = s_.regs.sfbr;
    uint32_t adder = s_.regs.adder;
    s_.regs = LsiRegs{};
    s_.scripts = LsiScriptsState{};
    if (kind == ResetKind::Chip) {
        s_.regs.sfbr = sfbr;
        s_.regs.adder = adder;
    }
    LsiRegs& r = s_.regs;
    r.scntl0 = kResetScntl0;
    r.scid = kResetScid;
    r.dcmd = kResetDcmd;
    r.ctest2 = 0;
    r.respid0 = kResetRespid0;
    msg_buf_len_ = msg_buf_pos_ = 0;
    // The targets see the reset too: their queued work is gone and they
    // report a unit attention.
    bus_.reset();
    update_irq();
}

void LsiController::device_reset() {
    if (in_exec_) {
        pending_chip_reset_ = true;
        stop_scripts();
        return;
    }
    chip_reset(ResetKind::Chip);
}

void LsiController::scsi_bus_reset() {
    if (in_exec_) {
        // Cancelling requests under the running SCRIPTS loop would pull
        // the connected nexus away mid-instruction: finish it first.
        pending_bus_reset_ = true;
    } else {
        cancel_all_requests();
        bus_.reset();
    }
    disconnect();
    s_.scripts.msg_len = 0;
    script_scsi_interrupt(kSist0Rst, 0);
    stop_scripts();  // RST always stops, masked or not
}

void LsiController::run_deferred_actions() {
    if (pending_chip_reset_) {
        chip_reset(ResetKind::Chip);
    }
    if (pending_bus_reset_) {
        pending_bus_reset_ = false;
        cancel_all_requests();
        bus_.reset();
    }
}

void LsiController::restore_state(const LsiState& state) {
    chip_reset(ResetKind::Restore);
    s_ = state;
    // Requests did not survive: nothing is connected, and a SCRIPTS wait
    // that depended on a request cannot continue.
    LsiRegs& r = s_.regs;
    r.scntl1 &= ~kScntl1Con;
    r.sstat1 &= ~kPhaseMask;
    r.sbcl = 0;
    s_.scripts.msg_len = std::min<uint8_t>(s_.scripts.msg_len, kLsiMsgQueueMax);
    switch (s_.scripts.wait) {
    case LsiWait::None:
        if (r.istat1 & kIstat1Srun) r.istat1 &= ~kIstat1Srun;
        break;
    case LsiWait::Reselect:
        r.istat1 |= kIstat1Srun;
        break;
    case LsiWait::Yield:
        r.istat1 |= kIstat1Srun;
        yield_scripts();
        break;
    case LsiWait::Data:
        s_.scripts.wait = LsiWait::None;
        r.istat1 &= ~kIstat1Srun;
        r.sist0 |= kSist0Rst;
        break;
    }
    update_irq();
}

const char* lsi_reg_name(unsigned off) {
    // One row per register dword, 0x00..0x5f; QEMU names unnamed bytes by
    // their offset and everything above SCRATCHB "???".
    static constexpr const char* kNames[0x60] = {
        "SCNTL0", "SCNTL1", "SCNTL2", "SCNTL3",   "SCID", "SXFER", "SDID", "GPREG",
        "SFBR", "SOCL", "SSID", "SBCL",           "DSTAT", "SSTAT0", "SSTAT1", "SSTAT2",
        "DSA0", "DSA1", "DSA2", "DSA3",           "ISTAT", "0x15", "0x16", "0x17",
        "CTEST0", "CTEST1", "CTEST2", "CTEST3",   "TEMP0", "TEMP1", "TEMP2", "TEMP3",
        "DFIFO", "CTEST4", "CTEST5", "CTEST6",    "DBC0", "DBC1", "DBC2", "DCMD",
        "DNAD0", "DNAD1", "DNAD2", "DNAD3",       "DSP0", "DSP1", "DSP2", "DSP3",
        "DSPS0", "DSPS1", "DSPS2", "DSPS3",       "SCRATCHA0", "SCRATCHA1", "SCRATCHA2", "SCRATCHA3",
        "DMODE", "DIEN", "SBR", "DCNTL",          "ADDER0", "ADDER1", "ADDER2", "ADDER3",
        "SIEN0", "SIEN1", "SIST0", "SIST1",       "SLPAR", "0x45", "MACNTL", "GPCNTL",
        "STIME0", "STIME1", "RESPID", "0x4b",     "STEST0", "STEST1", "STEST2", "STEST3",
        "SIDL", "0x51", "0x52", "0x53",           "SODL", "0x55", "0x56", "0x57",
        "SBDL", "0x59", "0x5a", "0x5b",           "SCRATCHB0", "SCRATCHB1", "SCRATCHB2", "SCRATCHB3",
    };
    return off < 0x60 ? kNames[off] : "???";
}

const char* lsi_phase_name(unsigned phase) {
    static constexpr const char* kPhases[8] = {"DOUT", "DIN", "CMD", "STATUS", "RSVOUT", "RSVIN", "MSGOUT", "MSGIN"};
    return kPhases[phase & 7];
}

std::unique_ptr<Lsi53c895a> make_lsi53c895a(WorkQueue& wq, const std::string& id,
                                            LsiTuning tuning) {
    return std::make_unique<LsiController>(wq, id, tuning);
}

}  // namespace mpq::hw
