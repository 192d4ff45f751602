// Register semantics where the differential tester (tests/difftest) found
// our LSI53C895A answering differently from stock QEMU's: each test pins
// the behaviour a driver sees there.
#include "lsi_test_util.h"

namespace lsitest {
namespace {

using Fidelity = LsiBench;

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

}  // namespace
}  // namespace lsitest
