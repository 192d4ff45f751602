// The controller on a ManualWorkQueue: SCRIPTS that never end yield to the
// queue (a timer on its virtual clock) instead of blocking the caller, each
// pump runs one bounded activation, and the guest's abort still stops them.
// The SCRIPTS budget (LsiTuning) sets how much one activation does.
#include "lsi_test_util.h"

namespace lsitest {
namespace {

class LsiManual : public LsiBench {
protected:
    void SetUp() override {
        driver = Driver::Manual;
        LsiBench::SetUp();
    }
};

TEST_F(LsiManual, EndlessScriptsYieldToTheQueueAndAbortStopsThem) {
    prog(0x1000, {kJump, 0x1000});  // JUMP to itself
    run(0x1000);
    // The DSP write returned: one activation ran, the next waits on a timer.
    EXPECT_FALSE(stopped());
    EXPECT_EQ(manual.timers_armed(), 1u);
    EXPECT_FALSE(manual.run_until_idle(5));  // five more activations, still looping
    EXPECT_FALSE(stopped());
    EXPECT_EQ(rl(L::kDsp), 0x1000u);
    wb(L::kIstat0, L::kIstatAbrt);
    EXPECT_TRUE(manual.run_until_idle(100));
    EXPECT_TRUE(stopped());
    EXPECT_EQ(rb(L::kDstat) & L::kDstatAbrt, L::kDstatAbrt);
    EXPECT_EQ(manual.timers_armed(), 0u);
}

// A program of N no-op words then INT: with a budget of 16, it finishes
// after about N/16 activations, with the same result as in one go.
TEST_F(LsiManual, SmallBudgetSpreadsTheSameWorkOverMoreActivations) {
    lsi = hw::make_lsi53c895a(manual, "lsi1", hw::LsiTuning{16});
    lsi->attach_irq(&irq);
    lsi->attach_dma(&mem);
    lsi->config_write(0x10, kIoBase | 1, 4);
    lsi->config_write(0x14, kMmioBase, 4);
    lsi->config_write(0x18, kRamBarBase, 4);
    lsi->config_write(0x04, 0x0007, 2);
    constexpr uint32_t kWords = 160;
    for (uint32_t i = 0; i < kWords; ++i) put32(0x2000 + 4 * i, 0);  // all-zero dwords: 4-byte no-ops
    prog(0x2000 + 4 * kWords, {kInt, 0x1234});
    run(0x2000);
    EXPECT_FALSE(stopped());
    size_t activations = 1;
    while (!stopped() && activations < 100) {
        ASSERT_TRUE(manual.fire_next_timer());
        ++activations;
    }
    EXPECT_TRUE(stopped());
    EXPECT_GE(activations, kWords / 16);
    EXPECT_LE(activations, kWords / 16 + 2);
    EXPECT_EQ(rl(L::kDsps), 0x1234u);
    EXPECT_TRUE(rb(L::kDstat) & L::kDstatSir);
}

}  // namespace
}  // namespace lsitest
