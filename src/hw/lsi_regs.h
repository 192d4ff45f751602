// LSI53C895A register file: offsets (byte addresses inside the 256-byte
// register window, mirrored through BAR0 and every 256 bytes of BAR1) and
// the bits the emulation interprets. Names follow the LSI manual.
#pragma once

#include <cstdint>

namespace mpq::hw::lsi {

// ---- register offsets ----
inline constexpr uint8_t kScntl0 = 0x00;    // SCSI control 0 (arbitration mode), plain R/W
inline constexpr uint8_t kScntl1 = 0x01;    // SCSI control 1: CRST bus reset, CON connected
inline constexpr uint8_t kScntl2 = 0x02;    // SCSI control 2: SDU, WSR/WSS (W1C, never set)
inline constexpr uint8_t kScntl3 = 0x03;    // SCSI control 3: clock dividers, EWS
inline constexpr uint8_t kScid = 0x04;      // own SCSI id + RRE/SRE enables
inline constexpr uint8_t kSxfer = 0x05;     // synchronous transfer period/offset
inline constexpr uint8_t kSdid = 0x06;      // destination id (low nibble)
inline constexpr uint8_t kGpreg = 0x07;     // general purpose pins (NVRAM bit-bang)
inline constexpr uint8_t kSfbr = 0x08;      // SCSI first byte received
inline constexpr uint8_t kSocl = 0x09;      // SCSI output control latch (ATN)
inline constexpr uint8_t kSsid = 0x0a;      // SCSI selector id (VAL | id after reselection)
inline constexpr uint8_t kSbcl = 0x0b;      // SCSI bus control lines (REQ/ACK/BSY/ATN/phase)
inline constexpr uint8_t kDstat = 0x0c;     // DMA status, read-to-clear
inline constexpr uint8_t kSstat0 = 0x0d;    // SCSI status 0 (WOA, RST, ...)
inline constexpr uint8_t kSstat1 = 0x0e;    // SCSI status 1: bus phase in bits 2:0
inline constexpr uint8_t kSstat2 = 0x0f;    // SCSI status 2: LDSC when not connected
inline constexpr uint8_t kDsa = 0x10;       // data structure address (4 bytes)
inline constexpr uint8_t kIstat0 = 0x14;    // interrupt status 0 (ABRT SRST SIGP SEM CON INTF SIP DIP)
inline constexpr uint8_t kIstat1 = 0x15;    // interrupt status 1: SRUN while SCRIPTS run/wait
inline constexpr uint8_t kMbox0 = 0x16;     // mailbox 0, scratch
inline constexpr uint8_t kMbox1 = 0x17;     // mailbox 1, scratch (Linux flush read)
inline constexpr uint8_t kCtest0 = 0x18;    // chip test 0 (reads 0xff)
inline constexpr uint8_t kCtest1 = 0x19;    // chip test 1 (FIFO flags, reads 0)
inline constexpr uint8_t kCtest2 = 0x1a;    // chip test 2: read reports and clears SIGP
inline constexpr uint8_t kCtest3 = 0x1b;    // chip test 3: low nibble stored
inline constexpr uint8_t kTemp = 0x1c;      // CALL/RETURN address (4 bytes)
inline constexpr uint8_t kDfifo = 0x20;     // DMA FIFO byte count (= DBC & 0xff after a move)
inline constexpr uint8_t kCtest4 = 0x21;    // chip test 4 (MPEE, BDIS), plain R/W
inline constexpr uint8_t kCtest5 = 0x22;    // chip test 5: bits 1:0 = DBC[9:8] after a move
inline constexpr uint8_t kCtest6 = 0x23;    // chip test 6 (DMA FIFO), reads 0
inline constexpr uint8_t kDbc = 0x24;       // DMA byte counter (3 bytes)
inline constexpr uint8_t kDcmd = 0x27;      // DMA command: first byte of the last instruction
inline constexpr uint8_t kDnad = 0x28;      // DMA next address (4 bytes)
inline constexpr uint8_t kDsp = 0x2c;       // SCRIPTS pointer; writing byte 0x2f starts SCRIPTS
inline constexpr uint8_t kDspLast = 0x2f;   // last DSP byte: the write that starts execution
inline constexpr uint8_t kDsps = 0x30;      // second dword of the last instruction (INT vector)
inline constexpr uint8_t kScratchA = 0x34;  // scratch A (4 bytes)
inline constexpr uint8_t kDmode = 0x38;     // DMA mode (burst length, MAN)
inline constexpr uint8_t kDien = 0x39;      // DMA interrupt enables
inline constexpr uint8_t kSbr = 0x3a;       // scratch byte register
inline constexpr uint8_t kDcntl = 0x3b;     // DMA control: SSM single step, STD start, COM
inline constexpr uint8_t kAdder = 0x3c;     // adder sum output (last JUMP target)
inline constexpr uint8_t kSien0 = 0x40;     // SCSI interrupt enables 0
inline constexpr uint8_t kSien1 = 0x41;     // SCSI interrupt enables 1
inline constexpr uint8_t kSist0 = 0x42;     // SCSI interrupt status 0, read-to-clear
inline constexpr uint8_t kSist1 = 0x43;     // SCSI interrupt status 1, read-to-clear
inline constexpr uint8_t kSlpar = 0x44;     // SCSI longitudinal parity (reads 0xff)
inline constexpr uint8_t kSwide = 0x45;     // SCSI wide residue (reads 0xff)
inline constexpr uint8_t kMacntl = 0x46;    // memory access control (reads 0x0f)
inline constexpr uint8_t kGpcntl = 0x47;    // general purpose pin control (reads 0x0f)
inline constexpr uint8_t kStime0 = 0x48;    // selection / handshake timeouts
inline constexpr uint8_t kStime1 = 0x49;    // general purpose timer: a non-zero GEN raises SIST1.GEN
inline constexpr uint8_t kRespid0 = 0x4a;   // response id 0
inline constexpr uint8_t kRespid1 = 0x4b;   // response id 1
inline constexpr uint8_t kStest0 = 0x4c;    // SCSI test 0 (reads 0xff)
inline constexpr uint8_t kStest1 = 0x4d;    // SCSI test 1: clock doubler control
inline constexpr uint8_t kStest2 = 0x4e;    // SCSI test 2
inline constexpr uint8_t kStest3 = 0x4f;    // SCSI test 3
inline constexpr uint8_t kSidl = 0x50;      // SCSI input data latch: last MSG IN byte
inline constexpr uint8_t kStest4 = 0x52;    // SCSI test 4: bus mode LVD + clock locked
inline constexpr uint8_t kSodl = 0x54;      // SCSI output data latch (reads 0xff)
inline constexpr uint8_t kCcntl0 = 0x56;    // chip control 0: ENPMJ, PMJCTL
inline constexpr uint8_t kCcntl1 = 0x57;    // chip control 1: 64-bit table indirect modes
inline constexpr uint8_t kSbdl = 0x58;      // SCSI bus data lines (2 bytes)
inline constexpr uint8_t kScratchB = 0x5c;  // scratch B (4 bytes)
inline constexpr uint8_t kScratchC = 0x60;  // scratch C..R: 16 x 4 bytes up to 0x9f
inline constexpr uint8_t kScratchEnd = 0xa0;  // one past scratch R
inline constexpr uint8_t kMmrs = 0xa0;      // memory move read selector (upper 32 bits)
inline constexpr uint8_t kMmws = 0xa4;      // memory move write selector
inline constexpr uint8_t kSfs = 0xa8;       // SCRIPTS fetch selector
inline constexpr uint8_t kDrs = 0xac;       // DSA relative selector
inline constexpr uint8_t kSbms = 0xb0;      // static block move selector
inline constexpr uint8_t kDbms = 0xb4;      // dynamic block move selector
inline constexpr uint8_t kDnad64 = 0xb8;    // upper DNAD bits of a 64-bit move
inline constexpr uint8_t kPmjad1 = 0xc0;    // phase mismatch jump address 1
inline constexpr uint8_t kPmjad2 = 0xc4;    // phase mismatch jump address 2
inline constexpr uint8_t kRbc = 0xc8;       // remaining byte count of the interrupted move
inline constexpr uint8_t kUa = 0xcc;        // updated address of the interrupted move
inline constexpr uint8_t kEsa = 0xd0;       // entry storage address (unused)
inline constexpr uint8_t kIa = 0xd4;        // instruction address of the last block move
inline constexpr uint8_t kSbc = 0xd8;       // SCSI byte count (3 bytes)
inline constexpr uint8_t kCsbc = 0xdc;      // cumulative SCSI byte count

// ---- bits ----
inline constexpr uint8_t kScntl1Con = 0x10;   // connected
inline constexpr uint8_t kScntl1Rst = 0x08;   // assert SCSI RST
inline constexpr uint8_t kScntl1Sst = 0x01;   // start SCSI transfer (not stored)
inline constexpr uint8_t kScntl2Wsr = 0x01;   // wide SCSI receive
inline constexpr uint8_t kScntl2Wss = 0x08;   // wide SCSI send

inline constexpr uint8_t kSoclAtn = 0x08;

inline constexpr uint8_t kSbclReq = 0x80;
inline constexpr uint8_t kSbclAck = 0x40;
inline constexpr uint8_t kSbclBsy = 0x20;
inline constexpr uint8_t kSbclAtn = 0x08;

inline constexpr uint8_t kDstatDfe = 0x80;   // DMA FIFO empty (always reported)
inline constexpr uint8_t kDstatMdpe = 0x40;  // master data parity error
inline constexpr uint8_t kDstatBf = 0x20;    // bus fault (failed DMA)
inline constexpr uint8_t kDstatAbrt = 0x10;  // aborted via ISTAT.ABRT
inline constexpr uint8_t kDstatSsi = 0x08;   // single step interrupt
inline constexpr uint8_t kDstatSir = 0x04;   // SCRIPTS INT instruction
inline constexpr uint8_t kDstatIid = 0x01;   // illegal instruction

inline constexpr uint8_t kSstat0Woa = 0x04;  // won arbitration
inline constexpr uint8_t kSstat0Rst = 0x02;  // SCSI RST asserted
inline constexpr uint8_t kSstat2Ldsc = 0x02;  // last disconnect

inline constexpr uint8_t kIstatAbrt = 0x80;
inline constexpr uint8_t kIstatSrst = 0x40;
inline constexpr uint8_t kIstatSigp = 0x20;
inline constexpr uint8_t kIstatSem = 0x10;
inline constexpr uint8_t kIstatCon = 0x08;
inline constexpr uint8_t kIstatIntf = 0x04;
inline constexpr uint8_t kIstatSip = 0x02;
inline constexpr uint8_t kIstatDip = 0x01;

inline constexpr uint8_t kIstat1Srun = 0x02;

inline constexpr uint8_t kCtest2Dack = 0x01;
inline constexpr uint8_t kCtest2Cm = 0x10;
inline constexpr uint8_t kCtest2Sigp = 0x40;
inline constexpr uint8_t kCtest2Pcicie = 0x08;

inline constexpr uint8_t kDmodeMan = 0x01;
inline constexpr uint8_t kDmodeDiom = 0x10;   // destination in PCI I/O space
inline constexpr uint8_t kDmodeSiom = 0x20;   // source in PCI I/O space
inline constexpr uint8_t kDcntlSsm = 0x10;
inline constexpr uint8_t kDcntlStd = 0x04;
inline constexpr uint8_t kDcntlPff = 0x40;
inline constexpr uint8_t kDcntlCom = 0x01;

inline constexpr uint8_t kSist0Ma = 0x80;
inline constexpr uint8_t kSist0Cmp = 0x40;
inline constexpr uint8_t kSist0Sel = 0x20;
inline constexpr uint8_t kSist0Rsl = 0x10;
inline constexpr uint8_t kSist0Sge = 0x08;
inline constexpr uint8_t kSist0Udc = 0x04;
inline constexpr uint8_t kSist0Rst = 0x02;
inline constexpr uint8_t kSist0Par = 0x01;
inline constexpr uint8_t kSist1Sbmc = 0x10;
inline constexpr uint8_t kSist1Sto = 0x04;
inline constexpr uint8_t kSist1Gen = 0x02;
inline constexpr uint8_t kSist1Hth = 0x01;

inline constexpr uint8_t kScidRre = 0x40;
inline constexpr uint8_t kCcntl0Enpmj = 0x80;
inline constexpr uint8_t kCcntl0Pmjctl = 0x40;
inline constexpr uint8_t kCcntl1En64Dbmv = 0x01;
inline constexpr uint8_t kCcntl1En64Tibmv = 0x02;
inline constexpr uint8_t kCcntl1Ti64Mod = 0x04;

// Power-on values that are not zero.
inline constexpr uint8_t kResetScntl0 = 0xc0;
inline constexpr uint8_t kResetScid = 0x07;
inline constexpr uint8_t kResetDcmd = 0x40;
inline constexpr uint8_t kResetRespid0 = 0x80;
// Constant reads.
inline constexpr uint8_t kGpregValue = 0x7f;   // bit 0 high: no NVRAM answers
inline constexpr uint8_t kStest4Value = 0xe0;  // LVD bus mode, clock quadrupler locked
inline constexpr uint8_t kGpcntlValue = 0x0f;
inline constexpr uint8_t kMacntlValue = 0x0f;
inline constexpr uint8_t kUnknownRead = 0xff;

// Block move instruction (first dword), addressing mode bits.
inline constexpr uint32_t kMoveIndirect = 1u << 29;       // second dword points to the address
inline constexpr uint32_t kMoveTableIndirect = 1u << 28;  // {count, address} at DSA + offset

// SCSI bus phases (MSG, C/D, I/O).
enum class Phase : uint8_t {
    DataOut = 0,
    DataIn = 1,
    Command = 2,
    Status = 3,
    MsgOut = 6,
    MsgIn = 7,
};
inline constexpr uint8_t kPhaseMask = 0x07;

}  // namespace mpq::hw::lsi
