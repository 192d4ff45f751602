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

}  // namespace
}  // namespace lsitest
