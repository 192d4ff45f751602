// The process-free parts of the supervisor/worker split (remote/worker.h):
// the published slot's journal encoding and its refusal of damaged input,
// how a successor judges the head of a socket against the last round's
// request, the restart rate limit, poison-request detection, and the
// supervisor's table of handed-over fds.
#include <fcntl.h>
#include <sys/eventfd.h>

#include <gtest/gtest.h>

#include "remote/worker.h"

namespace mpq::remote::worker {
namespace {

std::vector<uint8_t> bytes(std::initializer_list<int> v) {
    std::vector<uint8_t> out;
    for (int b : v) out.push_back(static_cast<uint8_t>(b));
    return out;
}

TEST(WorkerSlot, RoundTrip) {
    std::vector<ConnJournal> conns(2);
    conns[0].features = 7;
    conns[0].selected = 1;
    conns[0].posted_done = 12345;
    conns[0].request = bytes({1, 2, 3, 4});
    conns[0].replies = bytes({9, 8});
    conns[1].request = {};
    auto state = bytes({0x4d, 0x50, 0x51});
    auto slot = encode_slot(conns, state);
    auto v = decode_slot(slot);
    ASSERT_TRUE(v.ok()) << v.error().message;
    ASSERT_EQ(v->conns.size(), 2u);
    EXPECT_EQ(v->conns[0].features, 7u);
    EXPECT_EQ(v->conns[0].selected, 1u);
    EXPECT_EQ(v->conns[0].posted_done, 12345u);
    EXPECT_EQ(v->conns[0].request, bytes({1, 2, 3, 4}));
    EXPECT_EQ(v->conns[0].replies, bytes({9, 8}));
    EXPECT_TRUE(v->conns[1].request.empty());
    EXPECT_EQ(std::vector<uint8_t>(v->state.begin(), v->state.end()), state);
}

TEST(WorkerSlot, DamagedIsRefused) {
    std::vector<ConnJournal> conns(1);
    conns[0].request = bytes({1, 2, 3});
    auto slot = encode_slot(conns, bytes({5, 6, 7, 8}));
    // Every truncation is refused, never read past.
    for (size_t n = 0; n < slot.size(); n++) {
        auto v = decode_slot(std::span(slot.data(), n));
        EXPECT_FALSE(v.ok()) << "truncated to " << n;
    }
    auto bad = slot;
    bad[0] ^= 1;
    EXPECT_FALSE(decode_slot(bad).ok());
    bad = slot;
    bad[4] = 0xff;  // connection count out of range
    EXPECT_FALSE(decode_slot(bad).ok());
    bad = slot;
    bad[4 + 4 + 8 + 4 + 8] = 0xff;  // request length larger than the slot
    EXPECT_FALSE(decode_slot(bad).ok());
}

TEST(WorkerJournal, HeadVerdicts) {
    auto rq = bytes({1, 2, 3, 4});
    // The request is still at the head (maybe with the next one behind it).
    EXPECT_EQ(judge_head(bytes({1, 2, 3, 4}), rq), HeadVerdict::Consume);
    EXPECT_EQ(judge_head(bytes({1, 2, 3, 4, 5, 6}), rq), HeadVerdict::Consume);
    // Consumed already: the head is something else, or nothing.
    EXPECT_EQ(judge_head(bytes({}), rq), HeadVerdict::AlreadyGone);
    EXPECT_EQ(judge_head(bytes({1, 2, 9, 4}), rq), HeadVerdict::AlreadyGone);
    EXPECT_EQ(judge_head(bytes({7}), rq), HeadVerdict::AlreadyGone);
    // A prefix only (cannot happen with whole frames; never consumed).
    EXPECT_EQ(judge_head(bytes({1, 2}), rq), HeadVerdict::NotYet);
    // A round without a request has nothing to settle.
    EXPECT_EQ(judge_head(bytes({1, 2}), bytes({})), HeadVerdict::AlreadyGone);
}

TEST(WorkerRestartPolicy, GivesUpAfterTooManyInTheWindow) {
    constexpr uint64_t s = 1'000'000'000ull;
    RestartPolicy p(10, 10 * s);
    for (int i = 0; i < 10; i++) EXPECT_TRUE(p.allow(100 * s + i * s / 2)) << i;
    EXPECT_FALSE(p.allow(100 * s + 5 * s));  // the 11th within 10 s
    EXPECT_EQ(p.total(), 11u);
}

TEST(WorkerRestartPolicy, OldDeathsAgeOut) {
    constexpr uint64_t s = 1'000'000'000ull;
    RestartPolicy p(10, 10 * s);
    // One death every 1.5 s for a minute: never more than 7 in 10 s.
    for (int i = 0; i < 40; i++) EXPECT_TRUE(p.allow(i * 3 * s / 2)) << i;
}

TEST(WorkerPoison, TwoDeathsOnTheSameRequest) {
    PoisonDetector d;
    EXPECT_FALSE(d.died(true, 5));  // first death while handling round 6's request
    EXPECT_TRUE(d.died(true, 5));   // the successor died on it too: poison
    // After the verdict the next death starts a new count.
    EXPECT_FALSE(d.died(true, 5));
}

TEST(WorkerPoison, ProgressOrIdleDeathsAreNotPoison) {
    PoisonDetector d;
    EXPECT_FALSE(d.died(true, 5));
    EXPECT_FALSE(d.died(true, 6));   // the successor got further
    EXPECT_FALSE(d.died(false, 6));  // killed between requests
    EXPECT_FALSE(d.died(true, 6));   // the count started over
    EXPECT_TRUE(d.died(true, 6));
}

TEST(WorkerLiveUpdate, VersionAnswerIsParsedStrictly) {
    EXPECT_EQ(parse_version_answer("mpq-state-version 1\n"), 1u);
    EXPECT_EQ(parse_version_answer("mpq-state-version 4294967295\n"), 4294967295u);
    // Anything else is no answer: the binary is refused.
    EXPECT_FALSE(parse_version_answer(""));
    EXPECT_FALSE(parse_version_answer("mpq-state-version 1"));  // cut short
    EXPECT_FALSE(parse_version_answer("mpq-state-version \n"));
    EXPECT_FALSE(parse_version_answer("mpq-state-version -1\n"));
    EXPECT_FALSE(parse_version_answer("mpq-state-version 1x\n"));
    EXPECT_FALSE(parse_version_answer("mpq-state-version 4294967296\n"));
    EXPECT_FALSE(parse_version_answer("usage: qemu-scsi-dev\n"));
    EXPECT_FALSE(parse_version_answer(" mpq-state-version 1\n"));
}

// The monitor sockets a worker hands over: kept, updated, forgotten, and
// bounded (a worker taken over by a guest cannot make the supervisor hoard fds).
TEST(WorkerFdTable, MonitorSocketsAreKeptUpdatedForgottenAndBounded) {
    FdTable t;
    auto msg = [](HandoffKind k, uint32_t index, uint32_t key, uint32_t nfds, bool negotiated) {
        return make_handoff(k, index, key, nfds, negotiated);
    };
    auto one_fd = [] {
        std::vector<UniqueFd> v;
        v.emplace_back(::eventfd(0, EFD_CLOEXEC));
        return v;
    };
    std::vector<UniqueFd> none;
    auto fds = one_fd();
    apply_handoff(msg(HandoffKind::MonListener, 0, 0, 1, false), fds, t);
    EXPECT_EQ(t.mon_listeners.size(), 1u);
    fds = one_fd();
    apply_handoff(msg(HandoffKind::MonClient, 0, 5, 1, false), fds, t);
    const auto five = std::make_pair(0u, 5u);
    ASSERT_EQ(t.mon_clients.count(five), 1u);
    EXPECT_FALSE(t.mon_clients[five].negotiated);
    int kept = t.mon_clients[five].fd.get();
    apply_handoff(msg(HandoffKind::MonClient, 0, 5, 0, true), none, t);  // negotiation done
    EXPECT_TRUE(t.mon_clients[five].negotiated);
    EXPECT_EQ(t.mon_clients[five].fd.get(), kept);
    apply_handoff(msg(HandoffKind::MonClient, 0, 6, 0, true), none, t);  // no fd, unknown key
    EXPECT_EQ(t.mon_clients.count({0, 6}), 0u);
    fds = one_fd();
    apply_handoff(msg(HandoffKind::MonClient, 0, 7, 2, false), fds, t);  // says 2 fds, has 1
    EXPECT_EQ(t.mon_clients.count({0, 7}), 0u);
    apply_handoff(msg(HandoffKind::MonForget, 0, 5, 0, false), none, t);
    EXPECT_EQ(t.mon_clients.count(five), 0u);
    EXPECT_EQ(::fcntl(kept, F_GETFD), -1);  // closed
    for (uint32_t k = 100; k < 100 + 2 * FdTable::kMaxMonitorSockets; ++k) {
        fds = one_fd();
        apply_handoff(msg(HandoffKind::MonClient, 1, k, 1, false), fds, t);
        fds = one_fd();
        apply_handoff(msg(HandoffKind::MonListener, k, 0, 1, false), fds, t);
    }
    EXPECT_EQ(t.mon_clients.size(), FdTable::kMaxMonitorSockets);
    EXPECT_EQ(t.mon_listeners.size(), FdTable::kMaxMonitorSockets);
}

}  // namespace
}  // namespace mpq::remote::worker
