// LSI53C895A SCRIPTS processor per instruction class, and hostile programs.
#include "lsi_test_util.h"

namespace lsitest {
namespace {

using Scripts = LsiBench;

constexpr uint32_t P = 0x10000;  // where test programs live

TEST_F(Scripts, ZeroDwordIsFourByteNop) {
    prog(P, {0, kInt, 3});
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsp), P + 12);
}

TEST_F(Scripts, RegisterOpsWithCarry) {
    prog(P, {
                reg_rmw(L::kScratchA, 0, 0x81),      // MOV 0x81
                0,
                kClearCarry, 0,
                reg_rmw(L::kScratchA, 1, 0),         // SHL: 0x02, carry 1
                0,
                reg_rmw(L::kScratchA + 1, 0, 0xff),  // MOV 0xff
                0,
                reg_rmw(L::kScratchA + 1, 7, 0x00),  // ADC 0 + carry: 0x00, carry 1
                0,
                reg_rmw(L::kScratchA + 2, 7, 0x10),  // ADC: 0 + 0x10 + 1 = 0x11, carry 0
                0,
                reg_rmw(L::kScratchA + 3, 0, 0xf0),  // MOV
                0,
                reg_rmw(L::kScratchA + 3, 6, 0x20),  // ADD: 0x10, carry 1
                0,
                reg_rmw(L::kScratchB, 0, 0x01),      // MOV 1
                0,
                reg_rmw(L::kScratchB, 5, 0),         // SHR with carry in: 0x80, carry 1
                0,
                reg_rmw(L::kUa, 0, 0x5a),            // A7 register (0xcc)
                0,
                reg_rmw(L::kUa + 1, 2, 0x0f),        // OR
                0,
                reg_rmw(L::kUa + 2, 0, 0xff), 0,
                reg_rmw(L::kUa + 2, 4, 0x3c), 0,     // AND
                reg_rmw(L::kUa + 3, 3, 0xa5), 0,     // XOR with 0
                to_sfbr(L::kScratchA, 2, 0), 0,      // SFBR = SCRATCHA0 | 0
                from_sfbr(L::kScratchB + 1, 3, 0xff), 0,  // SCRATCHB1 = SFBR ^ 0xff
                kInt, 0,
            });
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kScratchA), 0x10110002u);
    EXPECT_EQ(rb(L::kScratchB), 0x80);
    EXPECT_EQ(rb(L::kScratchB + 1), 0xfd);
    EXPECT_EQ(rl(L::kUa), 0xa53c0f5au);
    EXPECT_EQ(rb(L::kSfbr), 0x02);
}

TEST_F(Scripts, RmwUsesSfbrOperand) {
    prog(P, {reg_rmw(L::kSfbr, 0, 0x07), 0,
             reg_rmw(L::kScratchA, 0, 0x30), 0,
             reg_rmw(L::kScratchA, 6, 0) | (1u << 23), 0,  // SCRATCHA += SFBR
             kInt, 0});
    run(P);
    EXPECT_EQ(rb(L::kScratchA), 0x37);
}

TEST_F(Scripts, MovDoesNotReadSource) {
    // A MOV into DSTAT's neighbour must not clear DSTAT via a read; and a
    // FROM_REG of CTEST2 (OR 0) does read it and clears SIGP.
    wb(L::kIstat0, L::kIstatSigp);
    prog(P, {to_sfbr(L::kCtest2, 0, 0x00), 0, kJump, P + 16, kInt, 1});
    run(P);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatSigp, L::kIstatSigp);
    rb(L::kDstat);
    prog(P, {to_sfbr(L::kCtest2, 2, 0x00), 0, kInt, 1});
    run(P);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatSigp, 0);
    EXPECT_EQ(rb(L::kSfbr) & L::kCtest2Sigp, L::kCtest2Sigp);
}

TEST_F(Scripts, JumpCallReturnRelative) {
    prog(P, {kCall, P + 0x40,                 // 0x00
             kJump | kRelative, 0x10,         // 0x08 -> 0x20
             kInt, 0xbad,                     // 0x10
             kInt, 0xbad,                     // 0x18
             kInt, 0x600d});                  // 0x20
    prog(P + 0x40, {reg_rmw(L::kScratchA, 0, 9), 0, kReturn, 0});
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 0x600du);
    EXPECT_EQ(rb(L::kScratchA), 9);
    EXPECT_EQ(rl(L::kTemp), P + 8);
    EXPECT_EQ(rl(L::kAdder), P + 0x20);
}

TEST_F(Scripts, NegativeRelativeJumpAndDataCompare) {
    // Counts SCRATCHA up to 3 with a backward relative jump.
    prog(P, {reg_rmw(L::kScratchA, 6, 1), 0,          // 0x00: ADD 1
             to_sfbr(L::kScratchA, 2, 0), 0,          // 0x08
             jump_if_data(3) | kRelative, 0x08,       // 0x10: ==3 -> 0x20
             kJump | kRelative, static_cast<uint32_t>(-0x20) & 0xffffff,  // 0x18 -> 0x00
             kInt, 0x33});                            // 0x20
    run(P);
    EXPECT_EQ(rl(L::kDsps), 0x33u);
    EXPECT_EQ(rb(L::kScratchA), 3);
}

TEST_F(Scripts, DataCompareWithMaskAndIfFalse) {
    prog(P, {reg_rmw(L::kSfbr, 0, 0x47), 0,
             // IF (SFBR & ~0x0f) == 0x40 -> 0x18
             jump_if_data(0x40, 0x0f), P + 0x18,
             kInt, 1,
             // IF FALSE data 0x47 -> must not jump
             0x80000000u | kCmpData | 0x47, P + 0x28,
             kInt, 2,
             kInt, 3});
    run(P);
    EXPECT_EQ(rl(L::kDsps), 2u);
}

TEST_F(Scripts, CarryConditions) {
    prog(P, {kSetCarry, 0,
             0x80000000u | kIfTrue | kCmpCarry, P + 0x18,
             kInt, 1,
             kClearCarry, 0,
             0x80000000u | kIfTrue | kCmpCarry, P + 0x30,
             kInt, 2,
             kInt, 3});
    run(P);
    EXPECT_EQ(rl(L::kDsps), 2u);
}

TEST_F(Scripts, NoConditionIfFalseIsNop) {
    prog(P, {0x80000000u, P + 0x100, kInt, 4});
    run(P);
    EXPECT_EQ(rl(L::kDsps), 4u);
}

TEST_F(Scripts, IllegalTransferOpcode) {
    prog(P, {0xa0080000u, 0});
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatIid);
    EXPECT_TRUE(stopped());
}

TEST_F(Scripts, IntflyContinues) {
    prog(P, {kIntFly, 1, reg_rmw(L::kScratchA, 0, 0x66), 0, kInt, 2});
    run(P);
    EXPECT_EQ(rb(L::kScratchA), 0x66);
    EXPECT_EQ(rb(L::kIstat0) & (L::kIstatIntf | L::kIstatDip), L::kIstatIntf | L::kIstatDip);
}

TEST_F(Scripts, SingleStep) {
    prog(P, {reg_rmw(L::kScratchA, 0, 1), 0, reg_rmw(L::kScratchA, 0, 2), 0, kInt, 0});
    wb(L::kDcntl, L::kDcntlSsm);
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSsi);
    EXPECT_EQ(rb(L::kScratchA), 1);
    wb(L::kDcntl, L::kDcntlSsm | L::kDcntlStd);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSsi);
    EXPECT_EQ(rb(L::kScratchA), 2);
}

TEST_F(Scripts, MemoryMove) {
    for (int i = 0; i < 10000; i++) ram[0x40000 + i] = static_cast<uint8_t>(i * 13);
    wl(L::kTemp, 0x1234);
    prog(P, {memmove_insn(10000), 0x40000, 0x60000, kInt, 0});
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(std::memcmp(&ram[0x40000], &ram[0x60000], 10000), 0);
    EXPECT_EQ(rl(L::kTemp), 0x1234u);  // preserved
    EXPECT_EQ(rl(L::kDsp), P + 20);
}

TEST_F(Scripts, LoadStoreAbsoluteAndDsaRelative) {
    put32(0x50000, 0xcafef00d);
    put32(0x50100, 0x00000000);
    wl(L::kDsa, 0x50080);
    prog(P, {load(L::kScratchA, 4), 0x50000,
             store(L::kScratchA + 1, 2), 0x50010,
             load_rel(L::kScratchB, 4), static_cast<uint32_t>(-0x80) & 0xffffff,  // DSA - 0x80
             store_rel(L::kScratchB, 4), 0x80,                                    // DSA + 0x80
             load(0xfe, 7), 0x50000,  // clamped at the end of the register file
             kInt, 0});
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kScratchA), 0xcafef00du);
    EXPECT_EQ(get32(0x50010) & 0xffff, 0xfef0u);
    EXPECT_EQ(rl(L::kScratchB), 0xcafef00du);
    EXPECT_EQ(get32(0x50100), 0xcafef00du);
}

TEST_F(Scripts, ScriptsRamFetchAndLoadStore) {
    // Linux runs its firmware from BAR2 and keeps variables there.
    auto ram_put = [&](uint32_t off, uint32_t v) { lsi->bar_write(2, off, v, 4); };
    uint32_t base = kRamBarBase;
    uint32_t code[] = {load(L::kScratchA, 4), base + 0x1000,
                       reg_rmw(L::kScratchA, 6, 1), 0,
                       store(L::kScratchA, 4), base + 0x1004,
                       kJump, base + 0x800};
    for (unsigned i = 0; i < 8; i++) ram_put(i * 4, code[i]);
    ram_put(0x800, kInt);
    ram_put(0x804, 0x77);
    ram_put(0x1000, 0x41);
    run(base);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 0x77u);
    EXPECT_EQ(lsi->bar_read(2, 0x1004, 4), 0x42u);
}

TEST_F(Scripts, SelectTimeoutStopsAtNextTransferControl) {
    // Linux: SELECT, LOAD_REL scr0, then "INT IFFALSE WHEN MSG_OUT" at
    // wf_sel_done; sym_int_sto wants DSP == wf_sel_done + 8.
    wl(L::kDsa, 0x50000);
    ww(L::kSien0, 0x058f);
    wb(L::kSien1, 0x04);
    prog(P, {select_atn(3), P + 0x100,
             load_rel(L::kScratchB, 4), 0,
             int_if_not_phase(kMO), 2,  // wf_sel_done
             kInt, 0xbad});
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rl(L::kDsp), P + 0x18);
    EXPECT_EQ(rb(L::kDstat), 0x80);  // no SIR
    EXPECT_TRUE(irq.level);
    EXPECT_EQ(rw(L::kSist0), 0x0400);  // STO
    EXPECT_FALSE(irq.level);
    EXPECT_EQ(rb(L::kSdid), 3);
    EXPECT_EQ(rb(L::kScntl1) & L::kScntl1Con, 0);
}

TEST_F(Scripts, SelectTimeoutSeabiosStyle) {
    // SeaBIOS polls SIST with no timeout: selection must end in STO.
    prog(P, {select_atn(5) & ~(1u << 24), 0, move(kMO, 1), 0x100, kInt, 0});
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kSist1), L::kSist1Sto);
    EXPECT_EQ(rl(L::kDsp), P + 16);
}

TEST_F(Scripts, WaitReselectWokenBySigp) {
    prog(P, {kWaitResel, P + 0x20, kInt, 1, 0, 0, 0, 0, kInt, 2});
    run(P);
    EXPECT_FALSE(stopped());
    EXPECT_EQ(rb(L::kDstat), 0x80);
    // The DSP write of a waiting processor is ignored.
    prog(P + 0x100, {kInt, 9});
    run(P + 0x100);
    EXPECT_EQ(rb(L::kDstat), 0x80);
    wb(L::kIstat0, L::kIstatSigp);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 2u);
    EXPECT_TRUE(stopped());
}

TEST_F(Scripts, WaitReselectWithSigpAlreadySetJumps) {
    wb(L::kIstat0, L::kIstatSigp);
    prog(P, {kWaitResel | (1u << 26), 0x8, kInt, 1, kInt, 2});  // relative alternate
    run(P);
    EXPECT_EQ(rl(L::kDsps), 2u);
}

// ------------------------------------------------------ hostile programs ----

TEST_F(Scripts, EndlessLoopYieldsAndResumes) {
    prog(P, {kJump, P});
    run(P);  // returns: the budget stopped this activation
    EXPECT_FALSE(stopped());
    EXPECT_EQ(rb(L::kDstat), 0x80);
    for (int i = 0; i < 5; i++) loop.run_once(5);  // later activations keep spinning
    EXPECT_FALSE(stopped());
    wl(L::kScratchA, 0x1234);  // the register path still works
    EXPECT_EQ(rl(L::kScratchA), 0x1234u);
    prog(P, {kInt, 0x99});  // the guest fixes its program
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 0x99u);
}

TEST_F(Scripts, ZeroDwordSledCountsAgainstBudget) {
    // CVE-2019-12068: all-zero memory is an endless run of NOPs.
    run(0);
    EXPECT_FALSE(stopped());
    ASSERT_TRUE(pump_until([&] { return stopped(); }, 100000));
    // It finally ran off the end of guest RAM: a bus fault, no crash.
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatBf);
}

TEST_F(Scripts, AbortStopsLoop) {
    prog(P, {kJump, P});
    run(P);
    wb(L::kIstat0, L::kIstatAbrt);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatAbrt);
    wb(L::kIstat0, 0);
    for (int i = 0; i < 3; i++) loop.run_once(1);
    EXPECT_TRUE(stopped());
}

TEST_F(Scripts, SelfDmaToDspDoesNotRecurse) {
    // CVE-2023-0330: a memory move writes the chip's own DSP. The running
    // loop continues at the new address; nothing starts recursively.
    put32(0x40000, P + 0x100);
    prog(P, {memmove_insn(4), 0x40000, kMmioBase + L::kDsp, kInt, 1});
    prog(P + 0x100, {kInt, 2});
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 2u);
}

TEST_F(Scripts, SelfDmaLoopThroughOwnRegisters) {
    // A program that keeps rewriting DSP to itself through the register
    // window is just another endless loop.
    put32(0x40000, P);
    prog(P, {memmove_insn(4), 0x40000, kMmioBase + 0x100 + L::kDsp});
    run(P);
    EXPECT_FALSE(stopped());
    for (int i = 0; i < 3; i++) loop.run_once(2);
    wb(L::kIstat0, L::kIstatSrst);
    EXPECT_TRUE(stopped());
}

TEST_F(Scripts, SelfDmaResetIsDeferred) {
    // A LOAD into ISTAT with SRST from SCRIPTS resets the chip after the
    // instruction, not under it.
    put32(0x40000, L::kIstatSrst);
    wl(L::kDsa, 0x1234);
    prog(P, {load(L::kIstat0, 1), 0x40000, kInt, 1});
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rl(L::kDsa), 0u);
    EXPECT_EQ(rb(L::kDstat), 0x80);
}

TEST_F(Scripts, MemoryMoveFromAndToOwnBars) {
    for (int i = 0; i < 64; i++) ram[0x40000 + i] = static_cast<uint8_t>(i);
    prog(P, {memmove_insn(64), 0x40000, kRamBarBase + 0x1fc0,  // fits exactly
             memmove_insn(8), kMmioBase + L::kScratchA, 0x41000,  // registers -> RAM
             kInt, 0});
    wl(L::kScratchA, 0x01020304);
    wl(L::kDsa, 0x05060708);
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(lsi->bar_read(2, 0x1fc0, 8), 0x0706050403020100ull);
    EXPECT_EQ(get32(0x41000), 0x01020304u);
}

TEST_F(Scripts, DmaOutsideGuestRamIsBusFault) {
    prog(P, {memmove_insn(16), 0x7f000000, 0x40000, kInt, 0});
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatBf);
    // Fetch from nowhere, then the device still works.
    run(0xf0000000);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatBf);
    prog(P, {kInt, 5});
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
}

TEST_F(Scripts, DmaWithoutBusMasterIsBusFault) {
    lsi->config_write(0x04, 0x0003, 2);
    prog(P, {kInt, 5});
    run(P);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatBf);
}

TEST_F(Scripts, AbsurdMemoryMoveCountIsBounded) {
    // 16 MiB from RAM that ends at 1 MiB: copies until the fault.
    prog(P, {memmove_insn(0xffffff), 0x80000, 0x90000, kInt, 0});
    run(P);
    ASSERT_TRUE(pump_until([&] { return stopped(); }));
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatBf);
}

TEST_F(Scripts, BlockMoveWhileDisconnected) {
    // The bus phase reads DATA OUT when nothing is connected: another phase
    // is a phase mismatch, DATA OUT itself an unexpected disconnect.
    prog(P, {move(kDI, 0xffffff), 0x40000, kInt, 0});
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kSist0), L::kSist0Ma);
    prog(P, {move(kDO, 0xffffff), 0x40000, kInt, 0});
    run(P);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kSist0) & L::kSist0Udc, L::kSist0Udc);
}

}  // namespace
}  // namespace lsitest
