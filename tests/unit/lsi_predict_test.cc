// The read predictions the controller publishes in the register mirror
// (DSTAT, SIST0, SIST1): for any interrupt state, the prediction is what
// the read then returns, the window bytes it changes and the level it
// leaves; and a prediction that reaches a device which ran on since clears
// only what the guest was shown.
#include <random>

#include "lsi_test_util.h"

namespace lsitest {
namespace {

using Predict = LsiBench;
using Prediction = pci::PciDevice::ReadPrediction;

std::array<uint8_t, pci::kRegWindowSize> window(hw::Lsi53c895a& lsi) {
    std::array<uint8_t, pci::kRegWindowSize> w{};
    lsi.reg_window_fill(w);
    return w;
}

TEST_F(Predict, EveryPredictionIsWhatTheReadDoes) {
    std::mt19937 rng(20261207);
    const pci::RegWindow win = lsi->reg_window();
    unsigned lowered = 0, kept = 0;
    for (int iter = 0; iter < 3000; iter++) {
        hw::LsiState st = lsi->save_state();
        auto r8 = [&] { return static_cast<uint8_t>(rng()); };
        // Sparse bits, so that zero, one and several pending causes all come up.
        st.regs.dstat = r8() & r8();
        st.regs.sist0 = r8() & r8() & r8();
        st.regs.sist1 = r8() & r8() & r8() & 0x07;
        st.regs.dien = r8();
        st.regs.sien0 = r8();
        st.regs.sien1 = r8();
        st.regs.istat0 = r8() & (L::kIstatIntf | L::kIstatSigp | L::kIstatSem);
        lsi->restore_state(st);
        const hw::LsiState start = lsi->save_state();
        std::array<Prediction, pci::PciDevice::kMaxReadPredictions> pr{};
        unsigned n = lsi->predict_reads(pr);
        ASSERT_EQ(n, 3u);
        ASSERT_EQ(lsi->save_state().regs.dstat, start.regs.dstat) << "predicting changes nothing";
        for (unsigned i = 0; i < n; i++) {
            lsi->restore_state(start);
            auto before = window(*lsi);
            uint8_t v = rb(pr[i].offset);
            ASSERT_EQ(v, pr[i].value) << "iter " << iter << " offset " << unsigned(pr[i].offset);
            auto after = window(*lsi);
            for (unsigned b = 0; b < pci::kRegWindowSize; b++) {
                if (!win.pure[b]) continue;
                uint8_t want = before[b];
                for (unsigned c = 0; c < pr[i].changes; c++)
                    if (pr[i].change_offset[c] == b) want = pr[i].change_value[c];
                ASSERT_EQ(after[b], want) << "iter " << iter << " read " << unsigned(pr[i].offset) << " byte " << b;
            }
            ASSERT_EQ(lsi->config_state().irq_level, pr[i].irq_level_after) << "iter " << iter;
            ASSERT_EQ(irq.level, pr[i].irq_level_after);
            (pr[i].irq_level_after ? kept : lowered)++;
        }
    }
    // Both outcomes of the line were exercised.
    EXPECT_GT(lowered, 100u);
    EXPECT_GT(kept, 100u);
}

TEST_F(Predict, LateReadClearsOnlyWhatTheGuestSaw) {
    wb(L::kDien, L::kDstatSir | L::kDstatAbrt);
    hw::LsiState st = lsi->save_state();
    st.regs.dstat = L::kDstatSir;
    lsi->restore_state(st);
    std::array<Prediction, pci::PciDevice::kMaxReadPredictions> pr{};
    ASSERT_EQ(lsi->predict_reads(pr), 3u);
    ASSERT_EQ(pr[0].offset, L::kDstat);
    EXPECT_EQ(pr[0].value, L::kDstatSir | L::kDstatDfe);
    EXPECT_FALSE(pr[0].irq_level_after);
    // Before the read arrives the device raises another cause.
    st = lsi->save_state();
    st.regs.dstat |= L::kDstatAbrt;
    lsi->restore_state(st);
    lsi->late_predicted_read(1, L::kDstat, pr[0].value);
    EXPECT_EQ(lsi->save_state().regs.dstat, L::kDstatAbrt) << "the new cause stays for the next read";
    EXPECT_TRUE(irq.level);
    EXPECT_EQ(rb(L::kIstat0) & L::kIstatDip, L::kIstatDip);
    EXPECT_EQ(rb(L::kDstat), L::kDstatAbrt | L::kDstatDfe);
    EXPECT_FALSE(irq.level);

    // SIST0: the same rule.
    wb(L::kSien0, L::kSist0Ma);
    st = lsi->save_state();
    st.regs.sist0 = 0x01;
    lsi->restore_state(st);
    ASSERT_EQ(lsi->predict_reads(pr), 3u);
    ASSERT_EQ(pr[1].offset, L::kSist0);
    st = lsi->save_state();
    st.regs.sist0 |= L::kSist0Ma;
    lsi->restore_state(st);
    lsi->late_predicted_read(1, L::kSist0, pr[1].value);
    EXPECT_EQ(lsi->save_state().regs.sist0, L::kSist0Ma);
    EXPECT_TRUE(irq.level);
}

}  // namespace
}  // namespace lsitest
