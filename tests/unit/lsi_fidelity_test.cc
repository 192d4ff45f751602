// Register semantics where the differential tester (tests/difftest) found
// our LSI53C895A answering differently from stock QEMU's: each test pins
// the behaviour a driver sees there.
#include "lsi_test_util.h"

namespace lsitest {
namespace {

using Fidelity = LsiBench;

uint32_t le32_at(const std::vector<uint8_t>& m, size_t at) {
    return m[at] | m[at + 1] << 8 | m[at + 2] << 16 | static_cast<uint32_t>(m[at + 3]) << 24;
}

// DFIFO and DCMD are the chip's report of the last block move and the last
// fetched instruction: a host (or SCRIPTS LOAD) write leaves them alone.
TEST_F(Fidelity, DfifoAndDcmdIgnoreWrites) {
    wb(L::kDfifo, 0xff);
    EXPECT_EQ(rb(L::kDfifo), 0x00);
    wl(L::kDbc, 0x83a9a452);  // DBC takes the low three bytes, DCMD nothing
    EXPECT_EQ(rl(L::kDbc), 0x40a9a452u);
    wb(L::kDcmd, 0x12);
    EXPECT_EQ(rb(L::kDcmd), 0x40);
}

// SCNTL1 stores what the host writes except SST, CON included; SSTAT2
// reports LDSC from CON.
TEST_F(Fidelity, Scntl1ConIsWritable) {
    wb(L::kScntl1, 0x91);
    EXPECT_EQ(rb(L::kScntl1), 0x90);
    EXPECT_EQ(rb(L::kSstat2), 0x00);
    ww(L::kScntl0, 0x7ce0);  // CRST with CON: the bus reset leaves CON as written
    EXPECT_EQ(rb(L::kScntl1), 0x7c);
    EXPECT_EQ(rb(L::kSstat2), 0x00);
    EXPECT_EQ(rb(L::kSist0) & L::kSist0Rst, L::kSist0Rst);
    ww(L::kScntl0, 0x00c0);  // a word write at SCNTL0 writes SCNTL1 too
    EXPECT_EQ(rb(L::kScntl1), 0x00);
    EXPECT_EQ(rb(L::kSstat2), L::kSstat2Ldsc);
    // A block move with CON set by the host and nothing selected ends in an
    // interrupt, never a hang or a crash.
    wb(L::kScntl1, L::kScntl1Con);
    prog(0x1000, {move(kDI, 16), 0x2000, kInt, 1});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return (rb(L::kIstat0) & 3) != 0 || stopped(); }));
}

// SELECT asserts ATN (SOCL, SBCL) only for bit 3 and only when the target
// answers; bit 24 alone leaves it clear, so an ordinary command ends with
// SOCL = 0.
TEST_F(Fidelity, SelectAtnFromBit3OnlyAndOnlyWhenSelected) {
    attach_disk(Timing::Sync);
    ram[0x2000] = 0xc0;  // IDENTIFY
    ram[0x2100] = 0x00;  // TEST UNIT READY
    prog(0x1000, {select_atn(0), 0x1f00, move(kMO, 1), 0x2000, move(kCMD, 6), 0x2100,
                  move(kST, 1), 0x2200, move(kMI, 1), 0x2300, kClearAck, 0, kWaitDisc, 0, kInt, 1});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 1u);
    EXPECT_EQ(rb(L::kSocl), 0x00);
    // Bit 3 with a target that answers: ATN on the bus until cleared.
    prog(0x1000, {select_atn(0) | 0x08, 0x1f00, kInt, 2});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kSocl), L::kSoclAtn);
    EXPECT_EQ(rb(L::kSbcl) & L::kSbclAtn, L::kSbclAtn);
    wb(L::kIstat0, L::kIstatSrst);
    wb(L::kIstat0, 0);
    // Bit 3 to an absent target: selection timeout, no ATN.
    prog(0x1000, {select_atn(5) | 0x08, 0x1f00, kJump, 0x1010, kInt, 3});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kSist1) & L::kSist1Sto, L::kSist1Sto);
    EXPECT_EQ(rb(L::kSocl), 0x00);
}

// A block move compares the phase before anything else, connected or not:
// a mismatch raises SIST0.MA with DBC and RBC holding the count and DNAD
// untouched.
TEST_F(Fidelity, BlockMovePhaseMismatchBeforeConnectionCheck) {
    wl(L::kDnad, 0x11111111);
    wl(L::kUa, 0x22222222);
    prog(0x1000, {move(kCMD, 16), 0x1081a5, kInt, 1});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kSist0), L::kSist0Ma);
    EXPECT_EQ(rl(L::kDnad), 0x11111111u);
    EXPECT_EQ(rl(L::kUa), 0x22222222u);
    EXPECT_EQ(rl(L::kRbc), 16u);
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 16u);
    EXPECT_EQ(rl(L::kIa), 0x1000u);
}

// SET ATN puts the bus in MSG OUT even with nothing connected.
TEST_F(Fidelity, SetAtnShowsMsgOutWhileDisconnected) {
    prog(0x1000, {kSetAtn | 0x40, 0, kInt, 1});  // SET ATN ACK
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kSstat1) & L::kPhaseMask, kMO);
    EXPECT_EQ(rb(L::kSbcl), L::kSbclReq | L::kSbclAck | L::kSbclAtn | kMO);
    EXPECT_EQ(rb(L::kSocl), L::kSoclAtn);
}

// LOAD/STORE move as many bytes as the 3-bit count says (up to 7); bytes
// past offset 0xff read as 0xff and are not written.
TEST_F(Fidelity, LoadStoreCountsUpToSeven) {
    for (int i = 0; i < 8; i++) ram[0x3000 + i] = static_cast<uint8_t>(0x11 * (i + 1));
    std::memset(&ram[0x4000], 0xee, 16);
    prog(0x1000, {load(L::kScratchB, 7), 0x3000, store(L::kScratchB, 7), 0x4000, store(0xfd, 6), 0x4008,
                  load(0xfe, 5), 0x3000, kInt, 1});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kScratchB), 0x44332211u);
    EXPECT_EQ(rl(0x60), 0x00776655u);  // SCRATCHC takes the other three
    for (int i = 0; i < 7; i++) EXPECT_EQ(ram[0x4000 + i], 0x11 * (i + 1)) << i;
    EXPECT_EQ(ram[0x4007], 0xee);
    for (int i = 0; i < 6; i++) EXPECT_EQ(ram[0x4008 + i], 0xff) << i;  // 0xfd..0xff unknown, then past the end
    EXPECT_EQ(rb(0x00), 0xc0);  // nothing wrapped to SCNTL0
}

// COMMAND, STATUS and MSG IN moves leave DBC at their count (the CDB
// length, 1, the MSG IN count) and DNAD at their start; RBC = count - DBC
// and UA = start + DBC after a move that ran to its end.
TEST_F(Fidelity, ByteCountsAfterAnOrdinaryCommand) {
    attach_disk(Timing::Sync);
    ram[0x2000] = 0x80;  // IDENTIFY
    ram[0x2100] = 0x00;  // TEST UNIT READY
    prog(0x1000, {select_atn(0), 0x1f00, move(kMO, 1), 0x2000, move(kCMD, 6), 0x2100, kInt, 1});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kDstat) & L::kDstatSir, L::kDstatSir);
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 6u);
    EXPECT_EQ(rb(L::kDfifo), 6);
    EXPECT_EQ(rl(L::kDnad), 0x2100u);
    prog(0x1000, {move(kST, 1), 0x2200, kInt, 2});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 1u);
    prog(0x1000, {move(kMI, 4), 0x2300, kInt, 3});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(ram[0x2300], 0x00);  // COMMAND COMPLETE
    EXPECT_EQ(rl(L::kDbc) & 0xffffff, 4u);
    EXPECT_EQ(rb(L::kDfifo), 4);
    EXPECT_EQ(rl(L::kSbc), 4u);
    EXPECT_EQ(rl(L::kDnad), 0x2300u);
    EXPECT_EQ(rl(L::kRbc), 0u);
    EXPECT_EQ(rl(L::kUa), 0x2304u);
}

// DMODE.SIOM / DIOM put a memory move's source / destination in PCI I/O
// space: our own I/O BAR answers there (registers), other ports below 64 KiB
// read as all ones, above it as zero, and guest memory at the same address
// is neither read nor written.
TEST_F(Fidelity, DmodeIoSpaceMemoryMoves) {
    for (int i = 0; i < 4; i++) ram[0x3000 + i] = static_cast<uint8_t>(0xa1 + i);
    ram[0x20000] = 0x5a;
    std::memset(&ram[0x4000], 0xee, 0x40);
    wl(L::kScratchA, 0x44332211);
    wb(L::kDmode, 0x20);  // SIOM
    prog(0x1000, {memmove_insn(4), kIoBase + L::kScratchA, 0x4000, memmove_insn(4), 0x3000, 0x4010,
                  memmove_insn(4), 0x20000, 0x4020, kInt, 1});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(le32_at(ram, 0x4000), 0x44332211u);
    EXPECT_EQ(le32_at(ram, 0x4010), 0xffffffffu);
    EXPECT_EQ(le32_at(ram, 0x4020), 0u);
    rb(L::kDstat);
    wb(L::kDmode, 0x10);  // DIOM
    prog(0x1000, {memmove_insn(4), 0x3000, kIoBase + L::kScratchB, memmove_insn(4), 0x3000, 0x4030, kInt, 2});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kScratchB), 0xa4a3a2a1u);
    EXPECT_EQ(le32_at(ram, 0x4030), 0xeeeeeeeeu);
}

// The general purpose timer expires at once when STIME1 is written: with
// SIEN1.GEN enabled, a SCRIPTS LOAD into STIME1 halts SCRIPTS right after
// the LOAD with SIP; masked, SCRIPTS run on and only SIST1.GEN is set.
TEST_F(Fidelity, GeneralPurposeTimerHaltsScriptsWhenEnabled) {
    ram[0x3000] = 0x0c;
    wb(L::kSien1, L::kSist1Gen);
    prog(0x1000, {load(L::kStime1, 1), 0x3000, kInt, 1});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kIstat0) & (L::kIstatSip | L::kIstatDip), L::kIstatSip);
    EXPECT_EQ(rl(L::kDsp), 0x1008u);
    EXPECT_EQ(rb(L::kSist1), L::kSist1Gen);
    wb(L::kSien1, 0);
    prog(0x1000, {load(L::kStime1, 1), 0x3000, kInt, 2});
    run(0x1000);
    EXPECT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rl(L::kDsps), 2u);
    EXPECT_EQ(rb(L::kSist1), L::kSist1Gen);
}

}  // namespace
}  // namespace lsitest
