// ManualWorkQueue: deferred work in order and never inside defer(), timers
// on a virtual clock (deferred work running as time passes), cancellation,
// and the bound on a pump.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "util/manual_work_queue.h"

namespace mpq {
namespace {

TEST(ManualWorkQueue, DeferredRunsOnlyWhenPumpedInOrderIncludingNested) {
    ManualWorkQueue q;
    std::string log;
    q.defer([&] {
        log += "a";
        q.defer([&] { log += "c"; });
    });
    q.defer([&] { log += "b"; });
    EXPECT_EQ(log, "");
    EXPECT_TRUE(q.has_deferred());
    EXPECT_EQ(q.run_deferred(100), 3u);
    EXPECT_EQ(log, "abc");
    EXPECT_FALSE(q.has_deferred());
}

TEST(ManualWorkQueue, RunDeferredStopsAtItsBound) {
    ManualWorkQueue q;
    int n = 0;
    std::function<void()> again = [&] {
        ++n;
        q.defer(again);  // a device that always has more to do
    };
    q.defer(again);
    EXPECT_EQ(q.run_deferred(10), 10u);
    EXPECT_EQ(n, 10);
    EXPECT_FALSE(q.run_until_idle(5));
    EXPECT_EQ(n, 15);
}

TEST(ManualWorkQueue, TimersFollowTheVirtualClock) {
    ManualWorkQueue q;
    std::vector<int> fired;
    q.add_timer(300, [&] { fired.push_back(3); });
    q.add_timer(100, [&] { fired.push_back(1); });
    auto two = q.add_timer(200, [&] { fired.push_back(2); });
    EXPECT_EQ(q.timers_armed(), 3u);
    q.advance(99);
    EXPECT_TRUE(fired.empty());
    q.advance(1);
    EXPECT_EQ(fired, std::vector<int>({1}));
    q.cancel_timer(two);
    q.cancel_timer(two);     // twice: ignored
    q.cancel_timer(12345);   // unknown: ignored
    EXPECT_TRUE(q.fire_next_timer());
    EXPECT_EQ(fired, std::vector<int>({1, 3}));
    EXPECT_EQ(q.now_ns(), 300u);
    EXPECT_FALSE(q.fire_next_timer());
}

TEST(ManualWorkQueue, RunUntilIdleRunsDeferredWorkBeforeTimersAndRearmedTimers) {
    ManualWorkQueue q;
    std::string log;
    int rearm = 3;
    std::function<void()> tick = [&] {
        log += "t";
        if (--rearm > 0) q.add_timer(1000, tick);
    };
    q.add_timer(10, tick);
    q.defer([&] { log += "d"; });
    EXPECT_TRUE(q.run_until_idle(100));
    EXPECT_EQ(log, "dttt");
    EXPECT_EQ(q.now_ns(), 2010u);
}

TEST(ManualWorkQueue, AdvanceRunsDeferredWorkAsTimePassesAndTimersSeeTheirDeadline) {
    ManualWorkQueue q;
    std::string log;
    std::vector<uint64_t> seen;
    q.defer([&] { log += "d"; });
    q.add_timer(100, [&] {
        log += "a";
        seen.push_back(q.now_ns());
        q.defer([&] { log += "x"; });  // work a timer starts runs in the same span
        q.add_timer(50, [&] {
            log += "b";
            seen.push_back(q.now_ns());
        });
    });
    q.add_timer(500, [&] { log += "late"; });
    EXPECT_TRUE(q.advance(200));
    EXPECT_EQ(log, "daxb");
    EXPECT_EQ(seen, std::vector<uint64_t>({100, 150}));
    EXPECT_EQ(q.now_ns(), 200u);
    EXPECT_EQ(q.pending(), 1u);
}

TEST(ManualWorkQueue, AdvanceStopsAtItsBoundWhenATimerKeepsRearmingAtZeroDelay) {
    ManualWorkQueue q;
    int ticks = 0;
    std::function<void()> tick = [&] {
        ++ticks;
        q.add_timer(0, tick);
    };
    q.add_timer(10, tick);
    EXPECT_FALSE(q.advance(20, 50));
    EXPECT_EQ(ticks, 50);
    EXPECT_EQ(q.now_ns(), 20u);
    EXPECT_EQ(q.timers_armed(), 1u);  // overdue, fires at the next pump
}

TEST(ManualWorkQueue, TimerDelayNearTheEndOfTimeDoesNotWrap) {
    ManualWorkQueue q;
    bool early = false, late = false;
    q.advance(10);
    q.add_timer(UINT64_MAX, [&] { late = true; });
    q.add_timer(5, [&] { early = true; });
    q.advance(5);
    EXPECT_TRUE(early);
    EXPECT_FALSE(late);
}

}  // namespace
}  // namespace mpq
