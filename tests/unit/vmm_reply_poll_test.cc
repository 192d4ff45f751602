// PollPolicy: polls for replies only while polling measures clearly faster.
#include <gtest/gtest.h>

#include "vmm/reply_poll.h"

namespace mpq::vmm {
namespace {

// Feeds `n` exchanges whose latency depends on the mode the policy chose.
void run(PollPolicy& p, unsigned n, uint64_t sleep_ns, uint64_t poll_ns) {
    for (unsigned i = 0; i < n; ++i) p.record(p.poll_ns() ? poll_ns : sleep_ns);
}

TEST(VmmReplyPoll, StartsSleepingAndSwitchesWhenPollingIsFaster) {
    PollPolicy p(60);
    EXPECT_EQ(p.mode(), PollPolicy::Mode::Sleep);
    EXPECT_EQ(p.poll_ns(), 0u);
    run(p, PollPolicy::kEpoch + PollPolicy::kProbe, 38000, 30000);
    EXPECT_EQ(p.mode(), PollPolicy::Mode::Poll);
    EXPECT_EQ(p.poll_ns(), 60000u);
    // Placement changes: polling now slower; the next probe of sleeping wins.
    run(p, PollPolicy::kEpoch + PollPolicy::kProbe, 25000, 38000);
    EXPECT_EQ(p.mode(), PollPolicy::Mode::Sleep);
}

TEST(VmmReplyPoll, ProbesBrieflyAndKeepsTheFasterMode) {
    PollPolicy p(60);
    unsigned polled = 0;
    for (unsigned i = 0; i < 10 * (PollPolicy::kEpoch + PollPolicy::kProbe); ++i) {
        polled += p.poll_ns() != 0;
        p.record(p.poll_ns() ? 38000 : 25000);
    }
    EXPECT_EQ(p.mode(), PollPolicy::Mode::Sleep);
    EXPECT_EQ(polled, 10 * PollPolicy::kProbe);  // only the probes polled
}

TEST(VmmReplyPoll, SmallDifferencesAndOutliersDoNotSwitch) {
    PollPolicy p(60);
    run(p, PollPolicy::kEpoch + PollPolicy::kProbe, 30000, 29000);  // < 10 % faster
    EXPECT_EQ(p.mode(), PollPolicy::Mode::Sleep);
    // A few huge sleeping samples are capped and do not make polling win.
    for (unsigned i = 0; i < PollPolicy::kEpoch; ++i) p.record(i % 128 == 0 ? 50000000000ull : 25000);
    run(p, PollPolicy::kProbe, 25000, 38000);
    EXPECT_EQ(p.mode(), PollPolicy::Mode::Sleep);
}

TEST(VmmReplyPoll, ZeroWindowNeverPolls) {
    PollPolicy p(0);
    for (unsigned i = 0; i < 4 * PollPolicy::kEpoch; ++i) {
        EXPECT_EQ(p.poll_ns(), 0u);
        p.record(i % 2 ? 1000 : 90000);
    }
}

}  // namespace
}  // namespace mpq::vmm
