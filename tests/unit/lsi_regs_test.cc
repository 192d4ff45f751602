// LSI53C895A register file: power-on values, side effects, interrupts,
// resets, the Linux init sequence checks, save/restore.
#include "lsi_test_util.h"

namespace lsitest {
namespace {

using Regs = LsiBench;

TEST_F(Regs, PciIdentity) {
    EXPECT_EQ(lsi->config_read(0x00, 4), 0x00121000u);
    EXPECT_EQ(lsi->config_read(0x0b, 1), 0x01u);
    EXPECT_EQ(lsi->config_read(0x2e, 2), 0x1000u);
    EXPECT_EQ(lsi->config_read(0x3d, 1), 1u);
    lsi->config_write(0x0c, 0x10, 1);
    EXPECT_EQ(lsi->config_read(0x0c, 1), 0x10u);  // Linux pci_set_mwi
}

TEST_F(Regs, PowerOnValues) {
    EXPECT_EQ(rb(L::kScntl0), 0xc0);
    EXPECT_EQ(rb(L::kScid), 0x07);
    EXPECT_EQ(rb(L::kGpreg) & 1, 1);  // "No NVRAM"
    EXPECT_EQ(rb(L::kStest4), 0xe0);  // LVD, LCKFRQ
    EXPECT_EQ(rb(L::kRespid0), 0x80);
    EXPECT_EQ(rb(L::kDcmd), 0x40);
    EXPECT_EQ(rb(L::kSstat2), 0x02);  // not connected
    EXPECT_EQ(rb(0xe4), 0xff);        // unknown offset
    EXPECT_EQ(rb(L::kDstat), 0x80);   // DFE only
    EXPECT_EQ(rl(L::kDsp), 0u);
    EXPECT_EQ(lsi->bar_read(2, 0x1ff0, 4), 0u);  // RAM powers up zeroed (no "RAID")
    EXPECT_FALSE(irq.level);
}

TEST_F(Regs, IoAndMmioMirror) {
    lsi->bar_write(0, L::kScratchA, 0x11223344, 4);
    EXPECT_EQ(rl(L::kScratchA), 0x11223344u);
    EXPECT_EQ(lsi->bar_read(1, 0x300 + L::kScratchA, 4), 0x11223344u);
    wl(L::kScratchB, 0xa5a5a5a5);
    EXPECT_EQ(lsi->bar_read(0, L::kScratchB, 4), 0xa5a5a5a5u);
    wl(0x60 + 4 * 15, 0xdeadbeef);  // SCRATCHR
    EXPECT_EQ(rl(0x9c), 0xdeadbeefu);
    wl(L::kUa, 0x12345678);
    EXPECT_EQ(rl(L::kUa), 0x12345678u);
}

// The register mirror (REG_MIRROR) serves the window's pure bytes without
// asking the device: they must read as bar_read does, and filling the window
// must not fire the read-to-clear side effects it leaves out.
TEST_F(Regs, RegWindowIsTheRegisterFileWithoutSideEffects) {
    pci::RegWindow w = lsi->reg_window();
    EXPECT_EQ(w.bars, 0b011u);  // I/O and MMIO, not SCRIPTS RAM
    for (unsigned off : {L::kDstat, L::kCtest2, L::kSist0, L::kSist1}) EXPECT_FALSE(w.pure[off]) << off;
    EXPECT_EQ(w.pure.count(), pci::kRegWindowSize - 4);
    // Pending state behind each side-effect register: DSTAT.SIR (an INT),
    // ISTAT.SIGP (CTEST2 clears it).
    wb(L::kDien, L::kDstatSir);
    prog(0x1000, {kInt, 0x77});
    run(0x1000);
    for (int i = 0; i < 100 && !(rb(L::kIstat0) & L::kIstatDip); ++i) loop.run_once(1);
    wb(L::kIstat0, L::kIstatSigp);
    wl(L::kScratchA, 0x10203040);
    wl(L::kDsa, 0xcafe0000);
    wl(0x60 + 4 * 5, 0x89abcdef);  // SCRATCHH
    wl(L::kUa, 0x13572468);
    std::array<uint8_t, pci::kRegWindowSize> image{}, again{};
    lsi->reg_window_fill(image);
    lsi->reg_window_fill(again);
    EXPECT_EQ(image, again);
    for (unsigned off = 0; off < pci::kRegWindowSize; ++off) {
        if (!w.pure[off]) continue;
        EXPECT_EQ(image[off], rb(static_cast<uint8_t>(off))) << "offset " << off;
    }
    EXPECT_EQ(image[L::kScratchA + 1], 0x30);
    EXPECT_EQ(image[0x60 + 4 * 5 + 3], 0x89);
    EXPECT_EQ(image[L::kUa], 0x68);
    EXPECT_EQ(image[0xfc], 0xff);  // no register there
    // The side effects are all still pending after two fills and a sweep.
    EXPECT_TRUE(irq.level);
    EXPECT_TRUE(rb(L::kCtest2) & L::kCtest2Sigp);
    EXPECT_EQ(rb(L::kDstat) & L::kDstatSir, L::kDstatSir);
    EXPECT_FALSE(irq.level);
}

TEST_F(Regs, RegtestWideDstatRead) {
    // sym_regtest: 32-bit write/read at 0x0c must not read back all ones.
    wl(0x0c, 0xffffffff);
    EXPECT_NE(rl(0x0c), 0xffffffffu);
}

TEST_F(Regs, SdidMasksHighBits) {
    wb(L::kSdid, 0x83);
    EXPECT_EQ(rb(L::kSdid), 0x03);
}

TEST_F(Regs, ScriptsRamAccessWidths) {
    lsi->bar_write(2, 0x100, 0x0102030405060708ull, 8);
    EXPECT_EQ(lsi->bar_read(2, 0x100, 8), 0x0102030405060708ull);
    EXPECT_EQ(lsi->bar_read(2, 0x101, 1), 0x07u);
    EXPECT_EQ(lsi->bar_read(2, 0x102, 2), 0x0506u);
    lsi->bar_write(2, 0x1fff, 0xaa, 1);
    EXPECT_EQ(lsi->bar_read(2, 0x1fff, 1), 0xaau);
    lsi->bar_write(2, 0x1ffe, 0xffffffff, 4);  // beyond the end: ignored
    EXPECT_EQ(lsi->bar_read(2, 0x1ffe, 1), 0u);
}

TEST_F(Regs, GeneralPurposeTimerFiresImmediately) {
    ww(L::kSien0, 0);
    wb(L::kDien, 0);
    EXPECT_EQ(rw(L::kSist0), 0);
    wb(L::kScntl3, 4);
    wb(L::kStime1, 0);
    EXPECT_EQ(rw(L::kSist0), 0);
    wb(L::kStime1, 8);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatSip, L::kIstatSip);
    EXPECT_FALSE(irq.level);  // masked: SIP only
    EXPECT_EQ(rw(L::kSist0), 0x0200);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatSip, 0);
}

TEST_F(Regs, InterruptLevelFollowsMasksAndReads) {
    wb(L::kSien1, L::kSist1Gen);
    wb(L::kStime1, 1);
    EXPECT_TRUE(irq.level);
    EXPECT_EQ(rb(L::kSist1), L::kSist1Gen);  // read clears
    EXPECT_FALSE(irq.level);
    EXPECT_EQ(rb(L::kSist1), 0);
    // DSTAT: an INT instruction with DIEN.SIR.
    wb(L::kDien, L::kDstatSir);
    prog(0x1000, {kInt, 0x42});
    run(0x1000);
    EXPECT_TRUE(irq.level);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatDip, L::kIstatDip);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_FALSE(irq.level);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatDip, 0);
    // Masked DIEN: DIP without the line.
    wb(L::kDien, 0);
    run(0x1000);
    EXPECT_FALSE(irq.level);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatDip, L::kIstatDip);
    wb(L::kDien, L::kDstatSir);  // enabling re-evaluates the line
    EXPECT_TRUE(irq.level);
    rb(L::kDstat);
    EXPECT_FALSE(irq.level);
}

TEST_F(Regs, IntflyIsWriteOneToClear) {
    prog(0x1000, {kIntFly, 1, kInt, 2});
    run(0x1000);
    EXPECT_TRUE(irq.level);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatIntf, L::kIstatIntf);
    // DSTAT keeps its value while INTF is pending (QEMU behaviour).
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    wb(L::kIstat0, L::kIstatIntf);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatIntf, 0);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rb(L::kDstat), 0x80);
    EXPECT_FALSE(irq.level);
}

TEST_F(Regs, Ctest2ReadClearsSigp) {
    wb(L::kIstat0, L::kIstatSigp);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatSigp, L::kIstatSigp);
    uint8_t c = rb(L::kCtest2);
    EXPECT_EQ(c & L::kCtest2Sigp, L::kCtest2Sigp);
    EXPECT_EQ(c & L::kCtest2Dack, L::kCtest2Dack);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatSigp, 0);
    EXPECT_EQ(rb(L::kCtest2) & L::kCtest2Sigp, 0);
}

// Linux sym_reset_scsi_bus (spec 5.3 step 6).
TEST_F(Regs, ScsiBusResetChecks) {
    attach_disk(Timing::Sync);
    wb(L::kIstat0, L::kIstatSrst);
    rb(L::kMbox1);
    wb(L::kIstat0, 0);
    rb(L::kMbox1);
    ww(L::kSien0, L::kSist0Rst);
    int resets_before = disk->resets;
    wb(L::kStest3, 0x80);
    wb(L::kDcntl, 0);
    wb(L::kScntl1, L::kScntl1Rst);
    uint8_t sstat0 = rb(L::kSstat0);
    EXPECT_EQ(sstat0 & L::kSstat0Rst, L::kSstat0Rst);
    EXPECT_EQ(sstat0 & 0x01, 0);  // SDP0
    EXPECT_EQ(rb(L::kSstat2) & 0x01, 0);
    EXPECT_EQ(rw(L::kSbdl), 0);
    EXPECT_EQ(rb(L::kSbcl), 0);
    EXPECT_TRUE(irq.level);  // SIST0.RST enabled
    EXPECT_EQ(disk->resets, resets_before + 1);
    wb(L::kScntl1, 0);
    EXPECT_EQ(rb(L::kSstat0) & L::kSstat0Rst, 0);
    EXPECT_EQ(rw(L::kSist0) & L::kSist0Rst, L::kSist0Rst);
    EXPECT_FALSE(irq.level);
    // Holding CRST does not raise a second reset.
    wb(L::kScntl1, L::kScntl1Rst);
    wb(L::kScntl1, L::kScntl1Rst);
    EXPECT_EQ(disk->resets, resets_before + 2);
}

TEST_F(Regs, ChipResetRestoresDefaults) {
    wl(L::kDsa, 0x1234);
    wb(L::kScid, 0x47);
    wb(L::kDien, 0x6d);
    wb(L::kSien0, 0x8f);
    lsi->bar_write(2, 0, 0x11, 1);
    wb(L::kIstat0, L::kIstatSrst);
    wb(L::kIstat0, 0);
    EXPECT_EQ(rl(L::kDsa), 0u);
    EXPECT_EQ(rb(L::kScid), 0x07);
    EXPECT_EQ(rb(L::kDien), 0);
    EXPECT_EQ(rb(L::kIstat0), 0);
    EXPECT_EQ(lsi->bar_read(2, 0, 1), 0x11u);  // SCRIPTS RAM survives
}

TEST_F(Regs, ChipResetStopsWaitingScripts) {
    prog(0x1000, {kWaitResel, 0x1000});
    run(0x1000);
    EXPECT_FALSE(stopped());
    wb(L::kIstat0, L::kIstatSrst);
    EXPECT_TRUE(stopped());
    lsi->device_reset();
    EXPECT_TRUE(stopped());
}

// Linux sym_snooptest (spec 5.3 step 5), SCRIPTS in host memory.
TEST_F(Regs, LinuxSnoopTest) {
    const uint32_t hcb = 0x20000, scratch_off = 0x40, script = 0x30000;
    put32(hcb + scratch_off, 1);  // host_wr
    prog(script, {load_rel(L::kScratchA, 4), scratch_off, store_rel(L::kTemp, 4), scratch_off,
                  load_rel(L::kTemp, 4), scratch_off, kInt, 99});
    wb(L::kDien, 0);
    wb(L::kCtest4, 0x08);
    wl(L::kTemp, 2);  // sym_wr
    wl(L::kDsa, hcb);
    wl(L::kDsp, script);
    ASSERT_TRUE(pump_until([&] { return (rb(L::kIstat0) & (L::kIstatIntf | L::kIstatSip | L::kIstatDip)) != 0; }));
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsp), script + 32u);
    EXPECT_EQ(rl(L::kDsps), 99u);
    EXPECT_EQ(rl(L::kScratchA), 1u);
    EXPECT_EQ(rl(L::kTemp), 2u);
    EXPECT_EQ(get32(hcb + scratch_off), 2u);
    EXPECT_FALSE(irq.level);
}

TEST_F(Regs, DspWriteWithManualModeDoesNotStart) {
    prog(0x1000, {kInt, 5});
    wb(L::kDmode, L::kDmodeMan);
    run(0x1000);
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kDstat), 0x80);
    wb(L::kDcntl, L::kDcntlStd);  // start by STD
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsp), 0x1008u);
}

TEST_F(Regs, DspByteWritesStartOnLastByte) {
    prog(0x12340, {kInt, 7});
    wb(0x2c, 0x40);
    wb(0x2d, 0x23);
    wb(0x2e, 0x01);
    EXPECT_EQ(rb(L::kDstat), 0x80);
    wb(0x2f, 0x00);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 7u);
}

TEST_F(Regs, SaveRestoreRoundTrip) {
    wl(L::kDsa, 0xabcd0000);
    wl(L::kScratchB, 0x55);
    wb(L::kDien, 0x6d);
    lsi->bar_write(2, 0x80, 0x99, 1);
    hw::LsiState saved = lsi->save_state();
    wl(L::kDsa, 0);
    wl(L::kScratchB, 0);
    lsi->bar_write(2, 0x80, 0, 1);
    lsi->restore_state(saved);
    EXPECT_EQ(rl(L::kDsa), 0xabcd0000u);
    EXPECT_EQ(rl(L::kScratchB), 0x55u);
    EXPECT_EQ(rb(L::kDien), 0x6d);
    EXPECT_EQ(lsi->bar_read(2, 0x80, 1), 0x99u);
    // A state waiting for reselection keeps waiting after restore.
    prog(0x1000, {kWaitResel, 0x1008, kInt, 0x31});
    run(0x1000);
    hw::LsiState waiting = lsi->save_state();
    EXPECT_EQ(waiting.scripts.wait, hw::LsiWait::Reselect);
    wb(L::kIstat0, L::kIstatSrst);
    lsi->restore_state(waiting);
    EXPECT_FALSE(stopped());
    wb(L::kIstat0, L::kIstatSigp);
    EXPECT_EQ(rb(L::kDstat), 0x80 | L::kDstatSir);
    EXPECT_EQ(rl(L::kDsps), 0x31u);
}

}  // namespace
}  // namespace lsitest
