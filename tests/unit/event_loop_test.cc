#include "util/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

using namespace mpq;

namespace {
void kick(int fd) {
    uint64_t one = 1;
    ASSERT_EQ(::write(fd, &one, 8), 8);
}
uint64_t drain(int fd) {
    uint64_t v = 0;
    if (::read(fd, &v, 8) != 8) return 0;
    return v;
}
}  // namespace

TEST(EventLoop, FdHandlerRunsOnReadable) {
    EventLoop loop;
    UniqueFd e(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int calls = 0;
    ASSERT_TRUE(loop.add_fd(e.get(), FdEvents::Read, [&](uint32_t) {
        calls++;
        drain(e.get());
    }));
    loop.run_once(0);
    EXPECT_EQ(calls, 0);
    kick(e.get());
    loop.run_once(-1);
    EXPECT_EQ(calls, 1);
    loop.remove_fd(e.get());
    kick(e.get());
    loop.run_once(0);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoop, AddFdRejectsBadFd) {
    EventLoop loop;
    EXPECT_FALSE(loop.add_fd(-1, FdEvents::Read, [](uint32_t) {}));
    EXPECT_FALSE(loop.add_fd(12345, FdEvents::Read, [](uint32_t) {}));
    EXPECT_FALSE(loop.modify_fd(12345, FdEvents::Write));
}

TEST(EventLoop, HandlerRemovingOtherFdInSameBatch) {
    EventLoop loop;
    UniqueFd a(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    UniqueFd b(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int a_calls = 0, b_calls = 0;
    // Whichever runs first removes the other: exactly one handler runs.
    ASSERT_TRUE(loop.add_fd(a.get(), FdEvents::Read, [&](uint32_t) {
        a_calls++;
        loop.remove_fd(b.get());
        loop.remove_fd(a.get());
    }));
    ASSERT_TRUE(loop.add_fd(b.get(), FdEvents::Read, [&](uint32_t) {
        b_calls++;
        loop.remove_fd(a.get());
        loop.remove_fd(b.get());
    }));
    kick(a.get());
    kick(b.get());
    loop.run_once(-1);
    EXPECT_EQ(a_calls + b_calls, 1);
}

TEST(EventLoop, HandlerRemovingItselfStaysAliveWhileRunning) {
    EventLoop loop;
    UniqueFd a(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    auto big = std::make_shared<std::vector<int>>(1000, 7);
    int sum = 0;
    ASSERT_TRUE(loop.add_fd(a.get(), FdEvents::Read, [&, big](uint32_t) {
        loop.remove_fd(a.get());
        sum = (*big)[999];  // captured state must still be valid
    }));
    big.reset();
    kick(a.get());
    loop.run_once(-1);
    EXPECT_EQ(sum, 7);
}

TEST(EventLoop, TimersFireInOrderAndCancel) {
    EventLoop loop;
    std::vector<int> order;
    loop.add_timer(2'000'000, [&] { order.push_back(2); });
    auto t = loop.add_timer(1'000'000, [&] { order.push_back(99); });
    loop.add_timer(0, [&] { order.push_back(0); });
    loop.add_timer(1'000'000, [&] {
        order.push_back(1);
    });
    loop.cancel_timer(t);
    loop.cancel_timer(424242);
    loop.add_timer(3'000'000, [&] { loop.stop(5); });
    EXPECT_EQ(loop.run(), 5);
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

TEST(EventLoop, DeferRunsAfterHandlerAndDoesNotStarve) {
    EventLoop loop;
    int n = 0;
    std::function<void()> again = [&] {
        if (++n < 3) loop.defer(again);
    };
    loop.defer(again);
    loop.run_once(0);
    EXPECT_EQ(n, 3);  // work deferred by deferred work runs on in the same round (a few batches)

    // A callback that defers itself forever gets a bounded share of each
    // round: fd handlers still run.
    int spins = 0;
    std::function<void()> forever = [&] {
        ++spins;
        loop.defer(forever);
    };
    UniqueFd e(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int fd_calls = 0;
    ASSERT_TRUE(loop.add_fd(e.get(), FdEvents::Read, [&](uint32_t) {
        ++fd_calls;
        drain(e.get());
    }));
    loop.defer(forever);
    kick(e.get());
    for (int i = 0; i < 3; ++i) loop.run_once(0);
    EXPECT_EQ(fd_calls, 1);
    EXPECT_GE(spins, 3);
    EXPECT_LE(spins, 12);  // at most 4 batches per round
}

TEST(EventLoop, PostFromOtherThreadWakesLoop) {
    EventLoop loop;
    std::atomic<int> v{0};
    std::thread t([&] {
        loop.post([&] {
            v = 42;
            loop.stop(3);
        });
    });
    EXPECT_EQ(loop.run(), 3);
    t.join();
    EXPECT_EQ(v.load(), 42);
}

TEST(EventLoop, ManyPostsAllRun) {
    EventLoop loop;
    int count = 0;
    constexpr int kN = 10000;
    std::thread t([&] {
        for (int i = 0; i < kN; i++) loop.post([&] { count++; });
        loop.post([&] { loop.stop(); });
    });
    loop.run();
    t.join();
    EXPECT_EQ(count, kN);
}

TEST(EventLoop, ReusedFdNumberGetsFreshHandler) {
    EventLoop loop;
    UniqueFd a(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int old_calls = 0, new_calls = 0;
    int num = a.get();
    ASSERT_TRUE(loop.add_fd(num, FdEvents::Read, [&](uint32_t) { old_calls++; }));
    loop.remove_fd(num);
    a.reset();
    UniqueFd b(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_EQ(b.get(), num);
    ASSERT_TRUE(loop.add_fd(num, FdEvents::Read, [&](uint32_t) {
        new_calls++;
        drain(b.get());
    }));
    kick(b.get());
    loop.run_once(-1);
    EXPECT_EQ(old_calls, 0);
    EXPECT_EQ(new_calls, 1);
}

TEST(EventLoop, WriteInterest) {
    EventLoop loop;
    UniqueFd e(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    uint32_t seen = 0;
    ASSERT_TRUE(loop.add_fd(e.get(), FdEvents::Write, [&](uint32_t ev) { seen = ev; }));
    loop.run_once(0);
    EXPECT_NE(seen & 0x004 /*EPOLLOUT*/, 0u);
    seen = 0;
    ASSERT_TRUE(loop.modify_fd(e.get(), FdEvents::Read));
    loop.run_once(0);
    EXPECT_EQ(seen, 0u);
}

// The register mirror relies on this: everything a round runs happens
// between its begin and end hooks, exactly once each per round.
TEST(EventLoop, RoundHooksEncloseEveryCallback) {
    EventLoop loop;
    std::vector<std::string> seen;
    loop.set_round_hooks([&] { seen.push_back("begin"); }, [&] { seen.push_back("end"); });
    int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    ASSERT_TRUE(loop.add_fd(efd, FdEvents::Read, [&](uint32_t) {
        uint64_t v;
        ASSERT_EQ(::read(efd, &v, sizeof v), 8);
        seen.push_back("fd");
        loop.defer([&] { seen.push_back("deferred"); });
    }));
    loop.add_timer(0, [&] { seen.push_back("timer"); });
    uint64_t one = 1;
    ASSERT_EQ(::write(efd, &one, sizeof one), 8);
    loop.run_once(100);
    EXPECT_EQ(seen, (std::vector<std::string>{"begin", "fd", "timer", "deferred", "end"}));
    seen.clear();
    loop.run_once(0);  // an idle round is still one round
    EXPECT_EQ(seen, (std::vector<std::string>{"begin", "end"}));
    loop.set_round_hooks({}, {});
    seen.clear();
    loop.run_once(0);
    EXPECT_TRUE(seen.empty());
    loop.remove_fd(efd);
    ::close(efd);
}
