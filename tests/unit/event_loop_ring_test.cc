// EventLoop in ring mode: the epoll side keeps working through the ring's poll
// of the epoll fd, and a socket can be answered and read through the ring.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "util/event_loop.h"

using namespace mpq;

namespace {

struct Rx {
    std::array<char, 64> buf{};
    iovec iov{};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 4)> ctl{};
    msghdr msg{};
    int res = 1234;  // not yet
    int calls = 0;
    void arm() {
        iov = {buf.data(), buf.size()};
        msg = msghdr{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.data();
        msg.msg_controllen = ctl.size();
    }
};

struct Pair {
    UniqueFd ours, peer;
    Pair() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ours.reset(sv[0]);
        peer.reset(sv[1]);
    }
};

void run_until(EventLoop& loop, const std::function<bool()>& done) {
    for (int i = 0; i < 50 && !done(); ++i) loop.run_once(100);
}

}  // namespace

TEST(EventLoopRing, EpollHandlersTimersAndPostsStillRun) {
    EventLoop loop;
    ASSERT_TRUE(loop.enable_ring());
    EXPECT_TRUE(loop.ring_enabled());
    UniqueFd e(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int fd_calls = 0;
    ASSERT_TRUE(loop.add_fd(e.get(), FdEvents::Read, [&](uint32_t) {
        ++fd_calls;
        // Not drained on the first call: level-triggered, so it must come back.
        if (fd_calls >= 2) {
            uint64_t v;
            ASSERT_EQ(::read(e.get(), &v, 8), 8);
        }
    }));
    uint64_t one = 1;
    ASSERT_EQ(::write(e.get(), &one, 8), 8);
    run_until(loop, [&] { return fd_calls >= 2; });
    EXPECT_EQ(fd_calls, 2);

    bool fired = false;
    loop.add_timer(1000000, [&] { fired = true; });
    run_until(loop, [&] { return fired; });
    EXPECT_TRUE(fired);

    bool posted = false;
    std::thread t([&] { loop.post([&] { posted = true; }); });
    run_until(loop, [&] { return posted; });
    t.join();
    EXPECT_TRUE(posted);
}

TEST(EventLoopRing, SendsReplyThenReceivesWithFds) {
    EventLoop loop;
    ASSERT_TRUE(loop.enable_ring());
    Pair p;
    auto rx = std::make_shared<Rx>();
    rx->arm();
    // First round: nothing to send, just the receive.
    ASSERT_TRUE(loop.ring_send_recvmsg(p.ours.get(), {}, &rx->msg, [](int) { FAIL(); },
                                       [rx](int res) {
                                           rx->res = res;
                                           ++rx->calls;
                                       }));
    loop.run_once(0);
    EXPECT_EQ(rx->calls, 0);

    // The peer sends 5 bytes with an fd attached.
    UniqueFd passed(::eventfd(7, EFD_CLOEXEC));
    char data[] = "hello";
    iovec iov{data, 5};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int pfd = passed.get();
    std::memcpy(CMSG_DATA(c), &pfd, sizeof pfd);
    ASSERT_EQ(::sendmsg(p.peer.get(), &m, 0), 5);
    run_until(loop, [&] { return rx->calls > 0; });
    ASSERT_EQ(rx->calls, 1);
    ASSERT_EQ(rx->res, 5);
    EXPECT_EQ(std::string(rx->buf.data(), 5), "hello");
    cmsghdr* got = CMSG_FIRSTHDR(&rx->msg);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->cmsg_type, SCM_RIGHTS);
    int rfd = -1;
    std::memcpy(&rfd, CMSG_DATA(got), sizeof rfd);
    UniqueFd received(rfd);
    uint64_t v = 0;
    ASSERT_EQ(::read(received.get(), &v, 8), 8);
    EXPECT_EQ(v, 7u);
    EXPECT_NE(::fcntl(received.get(), F_GETFD) & FD_CLOEXEC, 0);  // MSG_CMSG_CLOEXEC

    // Second round: the reply goes out before the next receive starts.
    static const uint8_t reply[] = {'o', 'k', '!'};
    rx->arm();
    ASSERT_TRUE(loop.ring_send_recvmsg(p.ours.get(), reply, &rx->msg, [](int) { FAIL(); },
                                       [rx](int res) {
                                           rx->res = res;
                                           ++rx->calls;
                                       }));
    loop.run_once(0);
    char back[8] = {};
    ASSERT_EQ(::recv(p.peer.get(), back, sizeof back, 0), 3);
    EXPECT_EQ(std::string(back, 3), "ok!");
    EXPECT_EQ(rx->calls, 1);

    // EOF completes the receive with 0.
    p.peer.reset();
    run_until(loop, [&] { return rx->calls > 1; });
    EXPECT_EQ(rx->calls, 2);
    EXPECT_EQ(rx->res, 0);
}

TEST(EventLoopRing, CancelCompletesWithEcanceled) {
    EventLoop loop;
    ASSERT_TRUE(loop.enable_ring());
    Pair p;
    auto rx = std::make_shared<Rx>();
    rx->arm();
    ASSERT_TRUE(loop.ring_send_recvmsg(p.ours.get(), {}, &rx->msg, [](int) {}, [rx](int res) {
        rx->res = res;
        ++rx->calls;
    }));
    loop.run_once(0);
    loop.ring_cancel(p.ours.get());
    p.ours.reset();
    run_until(loop, [&] { return rx->calls > 0; });
    EXPECT_EQ(rx->calls, 1);
    EXPECT_EQ(rx->res, -ECANCELED);
}

TEST(EventLoopRing, FailedSendCancelsTheReceive) {
    EventLoop loop;
    ASSERT_TRUE(loop.enable_ring());
    Pair p;
    ASSERT_EQ(::shutdown(p.ours.get(), SHUT_WR), 0);  // sends now fail with EPIPE
    auto rx = std::make_shared<Rx>();
    rx->arm();
    int send_res = 0;
    static const uint8_t reply[] = {1, 2, 3, 4};
    ASSERT_TRUE(loop.ring_send_recvmsg(p.ours.get(), reply, &rx->msg, [&](int res) { send_res = res; },
                                       [rx](int res) {
                                           rx->res = res;
                                           ++rx->calls;
                                       }));
    run_until(loop, [&] { return rx->calls > 0; });
    EXPECT_EQ(send_res, -EPIPE);
    EXPECT_EQ(rx->calls, 1);
    EXPECT_EQ(rx->res, -ECANCELED);
}

TEST(EventLoopRing, DestroyedWithAReceivePending) {
    // The receive's buffers live in the handler's captures: the loop must
    // not free them before the kernel let go of them (ASan checks the rest).
    Pair p;
    auto rx = std::make_shared<Rx>();
    std::weak_ptr<Rx> watch = rx;
    {
        EventLoop loop;
        ASSERT_TRUE(loop.enable_ring());
        rx->arm();
        ASSERT_TRUE(loop.ring_send_recvmsg(p.ours.get(), {}, &rx->msg, [](int) {}, [rx](int) {}));
        loop.run_once(0);
        rx.reset();
        EXPECT_FALSE(watch.expired());  // held by the pending receive
    }
    EXPECT_TRUE(watch.expired());
}

TEST(EventLoopRing, OffUntilEnabled) {
    EventLoop loop;
    EXPECT_FALSE(loop.ring_enabled());
    Pair p;
    msghdr m{};
    EXPECT_FALSE(loop.ring_send_recvmsg(p.ours.get(), {}, &m, [](int) {}, [](int) {}));
}
