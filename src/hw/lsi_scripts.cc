// LSI53C895A SCRIPTS processor: fetch/decode loop with a work budget,
// block moves, I/O, register moves, transfer control, memory moves,
// LOAD/STORE, and the chip's view of the PCI bus for its own DMA.
#include <algorithm>
#include <array>
#include <cstring>

#include "hw/lsi_impl.h"
#include "util/log.h"

namespace mpq::hw {

using namespace lsi;

namespace {

constexpr uint64_t kAddrLimit = 1ull << 40;  // the chip drives 40 address bits
constexpr uint32_t kChunk = 4096;            // memory-move bounce size

uint32_t le32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
           static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

// ------------------------------------------------------------- control ----

void LsiController::start_scripts() {
    LsiRegs& r = s_.regs;
    if (r.istat1 & kIstat1Srun) return;  // already running or waiting
    r.istat1 |= kIstat1Srun;
    s_.scripts.wait = LsiWait::None;
    // Started from inside SCRIPTS (a self-DMA or LOAD hitting DSP/DCNTL):
    // the loop that is already running picks it up; no recursion.
    if (!in_exec_) execute();
}

void LsiController::stop_scripts() {
    s_.regs.istat1 &= ~kIstat1Srun;
    s_.scripts.wait = LsiWait::None;
    if (yield_timer_) {
        wq_.cancel_timer(yield_timer_);
        yield_timer_ = 0;
    }
}

void LsiController::yield_scripts() {
    s_.scripts.wait = LsiWait::Yield;
    if (yield_timer_) return;
    MPQ_TRACE(lsi_scripts_timer_start);
    std::weak_ptr<int> alive = alive_;
    yield_timer_ = wq_.add_timer(kLsiYieldNs, [this, alive] {
        if (alive.expired()) return;
        yield_timer_ = 0;
        MPQ_TRACE(lsi_scripts_timer_triggered);
        if (s_.scripts.wait == LsiWait::Yield) execute();
    });
}

void LsiController::schedule_resume() {
    if (in_exec_ || resume_scheduled_) return;
    resume_scheduled_ = true;
    std::weak_ptr<int> alive = alive_;
    // Not inline: the target is still inside its own completion path.
    wq_.defer([this, alive] {
        if (alive.expired()) return;
        resume_scheduled_ = false;
        LsiWait w = s_.scripts.wait;
        if ((s_.regs.istat1 & kIstat1Srun) && (w == LsiWait::Data || w == LsiWait::Reselect)) execute();
    });
}

void LsiController::script_dma_interrupt(uint8_t bits) {
    MPQ_TRACE(lsi_script_dma_interrupt, bits, s_.regs.dstat);
    s_.regs.dstat |= bits;
    update_irq();
    stop_scripts();
}

void LsiController::script_scsi_interrupt(uint8_t sist0_bits, uint8_t sist1_bits) {
    LsiRegs& r = s_.regs;
    // Masked CMP/SEL/RSL/GEN/HTH do not halt; STO never halts at once
    // (SCRIPTS stop at the next bus-phase or transfer-control fetch).
    uint8_t halt0 = static_cast<uint8_t>(r.sien0 | ~(kSist0Cmp | kSist0Sel | kSist0Rsl));
    uint8_t halt1 = static_cast<uint8_t>((r.sien1 | ~(kSist1Gen | kSist1Hth)) & ~kSist1Sto);
    MPQ_TRACE(lsi_script_scsi_interrupt, sist1_bits, sist0_bits, r.sist1, r.sist0);
    r.sist0 |= sist0_bits;
    r.sist1 |= sist1_bits;
    update_irq();
    if ((sist0_bits & halt0) || (sist1_bits & halt1)) stop_scripts();
}

bool LsiController::charge(unsigned units) {
    if (units >= budget_) {
        budget_ = 0;
        return false;
    }
    budget_ -= units;
    return true;
}

void LsiController::execute() {
    if (in_exec_) return;
    in_exec_ = true;
    budget_ = budget_per_activation_;
    while ((s_.regs.istat1 & kIstat1Srun) && !pending_chip_reset_ && !pending_bus_reset_) {
        LsiWait w = s_.scripts.wait;
        if (w == LsiWait::Data) {
            // Only the target ends this wait: a new chunk, or the status.
            if (current_ && !current_->completed && current_->off >= current_->avail) break;
            do_data_move();
            if (s_.scripts.wait == LsiWait::Data) break;
            if (s_.regs.istat1 & kIstat1Srun) finish_block_move();
            continue;
        }
        if (w == LsiWait::Reselect) {
            if (!wait_reselect_ready()) break;
            continue;
        }
        if (w == LsiWait::Yield) s_.scripts.wait = LsiWait::None;
        if (budget_ == 0) {
            yield_scripts();
            break;
        }
        step();
    }
    in_exec_ = false;
    if (s_.scripts.wait != LsiWait::Yield) MPQ_TRACE(lsi_execute_script_stop);
    run_deferred_actions();
}

void LsiController::step() {
    LsiRegs& r = s_.regs;
    uint32_t insn = 0;
    charge(1);
    if (!read_dword(r.dsp, &insn)) {
        script_dma_interrupt(kDstatBf);
        return;
    }
    if (insn == 0) {
        // An all-zero first dword is a 4-byte no-op; it still costs budget.
        r.dsp += 4;
        return;
    }
    uint32_t arg = 0;
    charge(1);
    if (!read_dword(static_cast<uint64_t>(r.dsp) + 4, &arg)) {
        script_dma_interrupt(kDstatBf);
        return;
    }
    MPQ_TRACE(lsi_execute_script, r.dsp, insn, arg);
    r.dsps = arg;
    r.dcmd = static_cast<uint8_t>(insn >> 24);
    r.dsp += 8;
    switch (insn >> 30) {
    case 0: exec_block_move(insn, arg); break;
    case 1:
        if (((insn >> 27) & 7) >= 5)
            exec_rmw(insn);
        else
            exec_io(insn, arg);
        break;
    case 2: exec_transfer(insn, arg); break;
    case 3:
        if (insn & (1u << 29))
            exec_load_store(insn, arg);
        else
            exec_memory_move(insn, arg);
        break;
    }
    if ((r.istat1 & kIstat1Srun) && s_.scripts.wait == LsiWait::None && (r.dcntl & kDcntlSsm))
        script_dma_interrupt(kDstatSsi);
}

// --------------------------------------------------------- block move ----

void LsiController::exec_block_move(uint32_t insn, uint32_t arg) {
    LsiRegs& r = s_.regs;
    if (r.sist1 & kSist1Sto) {  // the deferred selection-timeout stop point
        MPQ_TRACE(lsi_execute_script_blockmove_delayed);
        stop_scripts();
        return;
    }
    uint64_t insn_addr = r.dsp - 8;
    uint32_t count = insn & 0xffffff;
    uint64_t addr = arg;
    uint32_t upper = 0;
    // With both addressing bits set, indirect wins and the count stays the
    // instruction's, as in stock QEMU (difftest scripts:300986).
    if (insn & kMoveIndirect) {
        uint32_t ptr = 0;
        if (!read_dword(arg, &ptr)) {
            script_dma_interrupt(kDstatBf);
            return;
        }
        addr = ptr;
        if (r.ccntl1 & kCcntl1En64Dbmv) upper = r.sbms;
    } else if (insn & kMoveTableIndirect) {
        // Table indirect: {count, address} at DSA + signed offset.
        uint8_t ent[8];
        uint64_t ta = static_cast<uint32_t>(r.dsa + static_cast<uint32_t>(sext24(arg)));
        if (!bus_read(ta, ent)) {
            script_dma_interrupt(kDstatBf);
            return;
        }
        uint32_t w0 = le32(ent), w1 = le32(ent + 4);
        count = w0 & 0xffffff;
        addr = w1;
        uint8_t sel = static_cast<uint8_t>(w0 >> 24);
        if ((r.ccntl1 & (kCcntl1Ti64Mod | kCcntl1En64Tibmv)) == (kCcntl1Ti64Mod | kCcntl1En64Tibmv)) {
            upper = sel;  // 40-bit mode: address bits 39:32
        } else if (r.ccntl1 & kCcntl1En64Tibmv) {
            sel &= 0x1f;
            if (sel < 16)
                upper = r.scratch_cr[sel];
            else if (sel == 0x10)
                upper = r.mmrs;
            else if (sel == 0x11)
                upper = r.mmws;
            else if (sel == 0x12)
                upper = r.sfs;
            else if (sel == 0x13)
                upper = r.drs;
            else if (sel == 0x14)
                upper = r.sbms;
            else if (sel == 0x15)
                upper = r.dbms;
        }
    } else if (r.ccntl1 & kCcntl1En64Dbmv) {
        // 64-bit direct move: a third dword carries the upper address.
        charge(1);
        if (!read_dword(r.dsp, &r.dbms)) {
            script_dma_interrupt(kDstatBf);
            return;
        }
        r.dsp += 4;
        upper = r.dbms;
    }
    addr |= static_cast<uint64_t>(upper & 0xff) << 32;
    r.ia = static_cast<uint32_t>(insn_addr);
    r.dbc = count;
    charge(count / kChunk);

    // The phase is compared first, connected or not, as in stock QEMU: a
    // mismatch stops with SIST0.MA, RBC = the count, DNAD and UA untouched
    // (nothing moved; no phase-mismatch jump at an instruction boundary).
    Phase want = static_cast<Phase>((insn >> 24) & kPhaseMask);
    if (want != phase()) {
        MPQ_TRACE(lsi_execute_script_blockmove_badphase, lsi_phase_name(r.sstat1), lsi_phase_name(insn >> 24));
        r.rbc = count;
        script_scsi_interrupt(kSist0Ma, 0);
        return;
    }
    r.dnad = static_cast<uint32_t>(addr);
    r.dnad64 = upper & 0xff;
    s_.scripts.move_addr = addr;
    move_start_ = static_cast<uint32_t>(addr);
    move_count_ = count;
    move_mismatched_ = false;
    if (!connected()) {
        // Nothing on the bus answers: the chip would wait for a REQ that
        // never comes. Report it as an unexpected disconnect.
        script_scsi_interrupt(kSist0Udc, 0);
        stop_scripts();
        return;
    }
    switch (want) {
    case Phase::DataOut:
    case Phase::DataIn:
        s_.scripts.move_out = want == Phase::DataOut;
        do_data_move();
        if (s_.scripts.wait == LsiWait::Data) return;  // finished on resume
        break;
    case Phase::Command: do_command(); break;
    case Phase::Status: do_status(); break;
    case Phase::MsgOut: do_msg_out(); break;
    case Phase::MsgIn: do_msg_in(); break;
    default:
        script_dma_interrupt(kDstatIid);
        return;
    }
    finish_block_move();
}

void LsiController::finish_block_move() {
    LsiRegs& r = s_.regs;
    r.dfifo = static_cast<uint8_t>(r.dbc & 0xff);
    r.ctest5 = static_cast<uint8_t>((r.ctest5 & 0xfc) | ((r.dbc >> 8) & 3));
    r.sbc = r.dbc;
    // After a move that ran to its end stock QEMU leaves RBC = count - DBC
    // and UA = start + DBC. A move cut short by a phase mismatch keeps
    // what bad_phase() set: the manual's remaining count and next address,
    // which Linux's phase-mismatch SCRIPTS store as the rest of the
    // scatter entry.
    if (!move_mismatched_) {
        r.rbc = move_count_ - r.dbc;
        r.ua = move_start_ + r.dbc;
    }
}

// ------------------------------------------------------------------ I/O ----

void LsiController::exec_io(uint32_t insn, uint32_t arg) {
    LsiRegs& r = s_.regs;
    uint32_t alt = arg;
    if (insn & (1u << 26)) alt = r.dsp + static_cast<uint32_t>(sext24(arg));
    r.dnad = alt;
    switch ((insn >> 27) & 7) {
    case 0: {  // SELECT
        uint32_t id = (insn >> 16) & 0x0f;
        if (insn & (1u << 25)) {
            uint32_t ent = 0;
            if (!read_dword(static_cast<uint32_t>(r.dsa + static_cast<uint32_t>(sext24(insn))), &ent)) {
                script_dma_interrupt(kDstatBf);
                return;
            }
            id = (ent >> 16) & 0x0f;
            r.sxfer = static_cast<uint8_t>(ent >> 8);
            r.scntl3 = static_cast<uint8_t>(ent >> 24);
        }
        r.sdid = static_cast<uint8_t>(id);
        if (connected()) {  // reselected meanwhile: take the alternate path
            MPQ_TRACE(lsi_execute_script_io_alreadyreselected);
            r.dsp = alt;
            return;
        }
        exec_select(id);
        if (connected()) MPQ_TRACE(lsi_execute_script_io_selected, static_cast<uint8_t>(id), (insn & (1u << 3)) ? " ATN" : "");
        // ATN comes from bit 3, as in stock QEMU, and only with a target
        // that answered. Bit 24 (the manual's select-with-ATN) is ignored
        // there; its targets go to MSG OUT regardless, so a driver that
        // sets it (Linux's SCR_SEL_TBL_ATN) sees no ATN in SOCL or SBCL.
        if (connected() && (insn & (1u << 3))) {
            r.socl |= kSoclAtn;
            r.sbcl |= kSbclAtn;
        }
        return;
    }
    case 1:
        MPQ_TRACE(lsi_execute_script_io_disconnect);
        wait_disconnect();
        return;
    case 2:  // WAIT RESELECT
        if (r.istat0 & kIstatSigp) {
            r.dsp = alt;
            return;
        }
        MPQ_TRACE(lsi_wait_reselect);
        s_.scripts.wait = LsiWait::Reselect;
        wait_reselect_ready();
        return;
    case 3:  // SET
        MPQ_TRACE(lsi_execute_script_io_set, (insn & (1u << 3)) ? " ATN" : "", (insn & (1u << 6)) ? " ACK" : "",
                  (insn & (1u << 9)) ? " TM" : "", (insn & (1u << 10)) ? " CC" : "");
        if (insn & (1u << 3)) {
            r.socl |= kSoclAtn;
            r.sbcl |= kSbclAtn;
            // As in stock QEMU the target answers ATN at once, connected
            // or not: the bus shows MSG OUT.
            set_phase(Phase::MsgOut);
        }
        if (insn & (1u << 6)) r.sbcl |= kSbclAck;
        if (insn & (1u << 10)) s_.scripts.carry = true;
        return;
    case 4:  // CLEAR
        MPQ_TRACE(lsi_execute_script_io_clear, (insn & (1u << 3)) ? " ATN" : "", (insn & (1u << 6)) ? " ACK" : "",
                  (insn & (1u << 9)) ? " TM" : "", (insn & (1u << 10)) ? " CC" : "");
        if (insn & (1u << 3)) {
            r.socl &= ~kSoclAtn;
            r.sbcl &= ~kSbclAtn;
        }
        if (insn & (1u << 6)) r.sbcl &= ~kSbclAck;
        if (insn & (1u << 10)) s_.scripts.carry = false;
        return;
    }
}

// ------------------------------------------------- register move (RMW) ----

void LsiController::exec_rmw(uint32_t insn) {
    LsiRegs& r = s_.regs;
    unsigned opcode = (insn >> 27) & 7;
    unsigned op = (insn >> 24) & 7;
    uint8_t reg = static_cast<uint8_t>(((insn >> 16) & 0x7f) | (insn & 0x80));
    uint8_t imm = static_cast<uint8_t>(insn >> 8);
    uint8_t a = 0, b = imm;
    static constexpr const char* kOpcodes[3] = {"Write", "Read", "Read-Modify-Write"};
    static constexpr const char* kOperators[8] = {"MOV", "SHL", "OR", "XOR", "AND", "SHR", "ADD", "ADC"};
    MPQ_TRACE(lsi_execute_script_io_opcode, kOpcodes[opcode - 5], reg, kOperators[op], imm, r.sfbr,
              (insn & (1u << 23)) ? " SFBR" : "");
    switch (opcode) {
    case 5: a = r.sfbr; break;  // move from SFBR
    case 6:                     // move to SFBR
        if (op != 0) a = reg_read(reg);
        break;
    default:  // read-modify-write
        if (op != 0) a = reg_read(reg);
        if (insn & (1u << 23)) b = r.sfbr;
        break;
    }
    bool& carry = s_.scripts.carry;
    unsigned res = 0;
    switch (op) {
    case 0: res = b; break;  // the source register is never read for MOV
    case 1:
        res = static_cast<unsigned>(a << 1) | (carry ? 1u : 0u);
        carry = (a & 0x80) != 0;
        break;
    case 2: res = a | b; break;
    case 3: res = a ^ b; break;
    case 4: res = a & b; break;
    case 5:
        res = static_cast<unsigned>(a >> 1) | (carry ? 0x80u : 0u);
        carry = (a & 1) != 0;
        break;
    case 6:
        res = static_cast<unsigned>(a) + b;
        carry = res > 0xff;
        break;
    case 7:
        res = static_cast<unsigned>(a) + b + (carry ? 1u : 0u);
        carry = res > 0xff;
        break;
    }
    uint8_t v = static_cast<uint8_t>(res);
    if (opcode == 6)
        r.sfbr = v;
    else
        reg_write(reg, v);
}

// ---------------------------------------------------- transfer control ----

void LsiController::exec_transfer(uint32_t insn, uint32_t arg) {
    LsiRegs& r = s_.regs;
    if ((insn & 0x002e0000) == 0) {  // no test and "if false": a no-op
        MPQ_TRACE(lsi_execute_script_tc_nop);
        return;
    }
    if (r.sist1 & kSist1Sto) {  // the deferred selection-timeout stop point
        MPQ_TRACE(lsi_execute_script_tc_delayedselect_timeout);
        stop_scripts();
        return;
    }
    bool want = (insn & (1u << 19)) != 0;
    bool cond = want;
    char rel = want ? '=' : '!';
    if (cond == want && (insn & (1u << 21))) {
        MPQ_TRACE(lsi_execute_script_tc_compc, s_.scripts.carry == want);
        cond = s_.scripts.carry;
    }
    if (cond == want && (insn & (1u << 17))) {
        MPQ_TRACE(lsi_execute_script_tc_compp, lsi_phase_name(r.sstat1), rel, lsi_phase_name(insn >> 24));
        cond = phase() == static_cast<Phase>((insn >> 24) & 7);
    }
    if (cond == want && (insn & (1u << 18))) {
        uint8_t mask = static_cast<uint8_t>(~insn >> 8);
        MPQ_TRACE(lsi_execute_script_tc_compd, r.sfbr, mask, rel, static_cast<int>(insn & mask));
        cond = (r.sfbr & mask) == (insn & mask);
    }
    if (cond != want) {
        MPQ_TRACE(lsi_execute_script_tc_cc_failed);
        return;
    }
    uint32_t target = arg;
    if (insn & (1u << 23)) target = r.dsp + static_cast<uint32_t>(sext24(arg));
    switch ((insn >> 27) & 7) {
    case 0:  // JUMP
        MPQ_TRACE(lsi_execute_script_tc_jump, target);
        r.adder = target;
        r.dsp = target;
        break;
    case 1:  // CALL
        MPQ_TRACE(lsi_execute_script_tc_call, target);
        r.temp = r.dsp;
        r.dsp = target;
        break;
    case 2:  // RETURN
        MPQ_TRACE(lsi_execute_script_tc_return, r.temp);
        r.dsp = r.temp;
        break;
    case 3:  // INT / INTFLY
        MPQ_TRACE(lsi_execute_script_tc_interrupt, r.dsps);
        if (insn & (1u << 20)) {
            r.istat0 |= kIstatIntf;
            update_irq();
        } else {
            script_dma_interrupt(kDstatSir);
        }
        break;
    default:
        MPQ_TRACE(lsi_execute_script_tc_illegal);
        script_dma_interrupt(kDstatIid);
        break;
    }
}

// ---------------------------------------------------------- memory move ----

void LsiController::exec_memory_move(uint32_t insn, uint32_t src) {
    LsiRegs& r = s_.regs;
    uint32_t dst = 0;
    charge(1);
    if (!read_dword(r.dsp, &dst)) {
        script_dma_interrupt(kDstatBf);
        return;
    }
    r.dsp += 4;
    uint32_t count = insn & 0xffffff;
    MPQ_TRACE(lsi_memcpy, dst, src, static_cast<int>(count));
    std::array<uint8_t, kChunk> buf;
    uint64_t s = src, d = dst;
    while (count > 0) {
        uint32_t n = std::min(count, kChunk);
        std::span<uint8_t> chunk(buf.data(), n);
        charge(1);
        if (!move_read(s, chunk) || !move_write(d, chunk)) {
            script_dma_interrupt(kDstatBf);
            return;
        }
        s += n;
        d += n;
        count -= n;
        // A copy into our own registers may have reset or stopped the chip.
        if (pending_chip_reset_ || !(r.istat1 & kIstat1Srun)) return;
    }
}

// ---------------------------------------------------------- LOAD / STORE ----

void LsiController::exec_load_store(uint32_t insn, uint32_t arg) {
    LsiRegs& r = s_.regs;
    unsigned reg = (insn >> 16) & 0xff;
    // The manual allows 1..4 bytes; stock QEMU moves whatever the 3-bit
    // count says (0..7). Bytes past the end of the register file read as
    // 0xff and are not written, so nothing wraps to offset 0.
    unsigned n = insn & 7;
    uint64_t addr = arg;
    if (insn & (1u << 28)) addr = static_cast<uint32_t>(r.dsa + static_cast<uint32_t>(sext24(arg)));
    if (n == 0) return;
    uint8_t data[7] = {};
    if (insn & (1u << 24)) {
        if (!bus_read(addr, std::span<uint8_t>(data, n))) {
            script_dma_interrupt(kDstatBf);
            return;
        }
        MPQ_TRACE(lsi_execute_script_mm_load, static_cast<int>(reg), static_cast<int>(insn & 7), static_cast<uint32_t>(addr), static_cast<int>(le32(data)));
        for (unsigned i = 0; i < n && reg + i <= 0xff; i++) reg_write(static_cast<uint8_t>(reg + i), data[i]);
    } else {
        MPQ_TRACE(lsi_execute_script_mm_store, static_cast<int>(reg), static_cast<int>(insn & 7), static_cast<uint32_t>(addr));
        for (unsigned i = 0; i < n; i++) data[i] = reg + i <= 0xff ? reg_read(static_cast<uint8_t>(reg + i)) : kUnknownRead;
        if (!bus_write(addr, std::span<const uint8_t>(data, n))) script_dma_interrupt(kDstatBf);
    }
}

// --------------------------------------------------------- bus access ----

namespace {

struct Window {
    int bar = -1;         // 1 = registers, 2 = SCRIPTS RAM, -1 = guest memory
    uint64_t offset = 0;  // inside the BAR
    uint64_t len = 0;     // bytes handled by this piece
};

}  // namespace

// Splits [addr, addr+len) at our own memory BARs.
static Window classify(const pci::PciDevice& dev, uint64_t addr, uint64_t len) {
    Window w;
    w.len = len;
    for (int bar : {1, 2}) {
        if (!dev.bar_enabled(bar)) continue;
        uint64_t base = dev.bar_address(bar);
        uint64_t size = dev.identity().bars[bar].size;
        if (base == 0 || size == 0) continue;
        if (addr >= base && addr - base < size) {
            w.bar = bar;
            w.offset = addr - base;
            w.len = std::min(len, size - w.offset);
            return w;
        }
        if (base > addr && base - addr < w.len) w.len = base - addr;
    }
    return w;
}

Status LsiController::bus_read(uint64_t addr, std::span<uint8_t> out) {
    size_t done = 0;
    while (done < out.size()) {
        uint64_t a = addr + done;
        if (a >= kAddrLimit || out.size() - done > kAddrLimit - a) return fail("lsi: DMA beyond 40 bits");
        Window w = classify(*this, a, out.size() - done);
        if (w.bar == 2) {
            std::memcpy(out.data() + done, &s_.ram[w.offset], w.len);
        } else if (w.bar == 1) {
            for (uint64_t i = 0; i < w.len; i++)
                out[done + i] = reg_read(static_cast<uint8_t>(w.offset + i));
        } else {
            MPQ_TRY(dma_read(a, out.subspan(done, w.len)));
        }
        done += w.len;
    }
    return {};
}

Status LsiController::bus_write(uint64_t addr, std::span<const uint8_t> in) {
    size_t done = 0;
    while (done < in.size()) {
        uint64_t a = addr + done;
        if (a >= kAddrLimit || in.size() - done > kAddrLimit - a) return fail("lsi: DMA beyond 40 bits");
        Window w = classify(*this, a, in.size() - done);
        if (w.bar == 2) {
            std::memcpy(&s_.ram[w.offset], in.data() + done, w.len);
        } else if (w.bar == 1) {
            // Register side effects apply; anything that would start or
            // reset SCRIPTS is deferred by the register model (in_exec_).
            for (uint64_t i = 0; i < w.len; i++) reg_write(static_cast<uint8_t>(w.offset + i), in[done + i]);
        } else {
            MPQ_TRY(dma_write(a, in.subspan(done, w.len)));
        }
        done += w.len;
    }
    return {};
}

// DMODE bits 5 (SIOM) and 4 (DIOM) put the source / destination of a
// memory move or block move in PCI I/O space (manual, DMODE register): the
// chip then issues I/O read / write cycles. Of the I/O space only our own
// I/O BAR is decoded here; no other port answers a cycle from this device,
// so reads elsewhere in the x86's 64 KiB port range return all ones (an
// unclaimed port reads as floating lines), reads above it return zero as
// on stock QEMU (no port space exists there), and writes go nowhere. Like stock QEMU,
// COMMAND, STATUS and MESSAGE phases, LOAD/STORE, table fetches and
// instruction fetches stay in memory space.
static constexpr uint8_t kIoFloat = 0xff;
static constexpr uint64_t kIoSpaceSize = 0x10000;

Status LsiController::move_read(uint64_t addr, std::span<uint8_t> out) {
    if (!(s_.regs.dmode & kDmodeSiom)) return bus_read(addr, out);
    bool on = bar_enabled(0);
    uint64_t base = bar_address(0), size = identity().bars[0].size;
    for (size_t i = 0; i < out.size(); i++) {
        uint64_t a = addr + i;
        if (on && a >= base && a - base < size) out[i] = reg_read(static_cast<uint8_t>(a - base));
        else out[i] = a < kIoSpaceSize ? kIoFloat : 0;
    }
    return {};
}

Status LsiController::move_write(uint64_t addr, std::span<const uint8_t> in) {
    if (!(s_.regs.dmode & kDmodeDiom)) return bus_write(addr, in);
    bool on = bar_enabled(0);
    uint64_t base = bar_address(0), size = identity().bars[0].size;
    for (size_t i = 0; i < in.size(); i++) {
        uint64_t a = addr + i;
        if (on && a >= base && a - base < size) reg_write(static_cast<uint8_t>(a - base), in[i]);
    }
    return {};
}

bool LsiController::read_dword(uint64_t addr, uint32_t* val) {
    uint8_t b[4];
    if (!bus_read(addr, b)) return false;
    *val = le32(b);
    return true;
}

}  // namespace mpq::hw
