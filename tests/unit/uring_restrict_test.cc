// util/uring_restrict: a restricted ring runs what it was opened for and
// refuses every other operation, SQE flag and register call.
#include "util/uring_restrict.h"

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <gtest/gtest.h>

using namespace mpq;

namespace {

struct RestrictedRing : ::testing::Test {
    io_uring ring{};
    bool ok = false;
    void SetUp() override {
        io_uring_params p{};
        p.flags = IORING_SETUP_R_DISABLED;
        if (io_uring_queue_init_params(8, &ring, &p) != 0) GTEST_SKIP() << "no io_uring here";
        ok = true;
        const uint8_t ops[] = {IORING_OP_READ};
        auto st = restrict_uring(ring.ring_fd, ops, 0);
        ASSERT_TRUE(st.ok()) << st.error().message;
    }
    void TearDown() override {
        if (ok) io_uring_queue_exit(&ring);
    }
    int run(io_uring_sqe* sqe) {
        (void)sqe;
        EXPECT_EQ(io_uring_submit(&ring), 1);
        io_uring_cqe* c = nullptr;
        EXPECT_EQ(io_uring_wait_cqe(&ring, &c), 0);
        int res = c ? c->res : 0;
        if (c) io_uring_cqe_seen(&ring, c);
        return res;
    }
};

TEST_F(RestrictedRing, RunsItsOperationAndRefusesOthers) {
    int efd = ::eventfd(3, EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    uint64_t v = 0;
    io_uring_sqe* q = io_uring_get_sqe(&ring);
    io_uring_prep_read(q, efd, &v, sizeof v, 0);
    EXPECT_EQ(run(q), 8);
    EXPECT_EQ(v, 3u);

    q = io_uring_get_sqe(&ring);
    io_uring_prep_nop(q);
    EXPECT_EQ(run(q), -EACCES) << "an operation not in the list";

    q = io_uring_get_sqe(&ring);
    io_uring_prep_read(q, efd, &v, sizeof v, 0);
    q->flags |= IOSQE_ASYNC;
    EXPECT_EQ(run(q), -EACCES) << "an SQE flag not allowed";

    EXPECT_EQ(io_uring_register_eventfd(&ring, efd), -EACCES) << "no register call after the lock";
    ::close(efd);
}

TEST(UringRestrict, RefusesAnEnabledRing) {
    io_uring ring{};
    if (io_uring_queue_init(8, &ring, 0) != 0) GTEST_SKIP() << "no io_uring here";
    const uint8_t ops[] = {IORING_OP_READ};
    EXPECT_FALSE(restrict_uring(ring.ring_fd, ops, 0).ok());
    io_uring_queue_exit(&ring);
}

}  // namespace
