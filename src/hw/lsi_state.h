// Plain, copyable state of the LSI53C895A: everything a save/restore needs
// except SCSI requests in flight (those live in the targets and are
// cancelled on restore, as after a bus reset).
#pragma once

#include <array>
#include <cstdint>

namespace mpq::hw {

inline constexpr unsigned kLsiScriptsRamSize = 8192;
// Queued MSG IN bytes: IDENTIFY + two-byte tag message is the longest
// sequence the target side ever queues; 8 leaves room, never more.
inline constexpr unsigned kLsiMsgQueueMax = 8;

// What the target does once the queued MSG IN bytes have been read.
enum class LsiMsgAction : uint8_t { Command, Disconnect, DataOut, DataIn, Status };

// Why the SCRIPTS processor is not fetching right now.
enum class LsiWait : uint8_t {
    None,      // stopped (SRUN clear) or actively running
    Reselect,  // inside WAIT RESELECT; SIGP or a reselection wakes it
    Data,      // inside a data-phase block move, waiting for the target
    Yield,     // budget exhausted; resumes from the event loop
};

struct LsiRegs {
    uint8_t scntl0 = 0, scntl1 = 0, scntl2 = 0, scntl3 = 0;
    uint8_t scid = 0, sxfer = 0, sdid = 0, sfbr = 0;
    uint8_t socl = 0, ssid = 0, sbcl = 0, dstat = 0;
    uint8_t sstat0 = 0, sstat1 = 0;
    uint32_t dsa = 0;
    uint8_t istat0 = 0, istat1 = 0, mbox0 = 0, mbox1 = 0;
    uint8_t ctest2 = 0, ctest3 = 0, ctest4 = 0, ctest5 = 0;
    uint32_t temp = 0;
    uint8_t dfifo = 0;
    uint32_t dbc = 0;  // 24 bits
    uint8_t dcmd = 0;
    uint32_t dnad = 0;
    uint32_t dsp = 0;
    uint32_t dsps = 0;
    uint32_t scratch_a = 0;
    uint8_t dmode = 0, dien = 0, sbr = 0, dcntl = 0;
    uint32_t adder = 0;
    uint8_t sien0 = 0, sien1 = 0, sist0 = 0, sist1 = 0;
    uint8_t stime0 = 0, respid0 = 0, respid1 = 0;
    uint8_t stest1 = 0, stest2 = 0, stest3 = 0;
    uint8_t sidl = 0, ccntl0 = 0, ccntl1 = 0;
    uint32_t scratch_b = 0;
    std::array<uint32_t, 16> scratch_cr{};  // SCRATCHC .. SCRATCHR
    uint32_t mmrs = 0, mmws = 0, sfs = 0, drs = 0;
    uint32_t sbms = 0, dbms = 0, dnad64 = 0;
    uint32_t pmjad1 = 0, pmjad2 = 0;
    uint32_t rbc = 0, ua = 0, ia = 0;
    uint32_t sbc = 0, csbc = 0;
};

struct LsiScriptsState {
    LsiWait wait = LsiWait::None;
    bool carry = false;
    // Data-phase block move suspended while the target produces data.
    bool move_out = false;     // DATA OUT (guest -> target)
    uint64_t move_addr = 0;    // next guest address (40 bits)
    // Target side of the connection.
    uint8_t target = 0;        // id selected or reselected
    uint8_t lun = 0;           // from IDENTIFY
    bool tag_valid = false;    // a queue tag message arrived for this nexus
    uint8_t tag = 0;
    uint8_t status = 0;        // status byte of the last completed command
    LsiMsgAction msg_action = LsiMsgAction::Command;
    uint8_t msg_len = 0;
    std::array<uint8_t, kLsiMsgQueueMax> msg{};
};

struct LsiState {
    LsiRegs regs;
    LsiScriptsState scripts;
    std::array<uint8_t, kLsiScriptsRamSize> ram{};
};

}  // namespace mpq::hw
