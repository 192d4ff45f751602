// Partial sendmsg/recvmsg and EINTR, forced by interposing the libc calls in
// this test program (a unix socket never splits a frame this small by itself).
#include <dlfcn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>

#include <gtest/gtest.h>

#include "proto/channel.h"

using namespace mpq;
using namespace mpq::proto;

namespace {
int g_max_chunk = 0;     // 0: no limit
int g_eintr_every = 0;   // inject EINTR before every n-th call
int g_calls = 0;
int g_send_calls_with_fds = 0;
int g_send_calls = 0;

using SendFn = ssize_t (*)(int, const msghdr*, int);
using RecvFn = ssize_t (*)(int, msghdr*, int);

bool inject_eintr() {
    g_calls++;
    if (g_eintr_every && g_calls % g_eintr_every == 0) {
        errno = EINTR;
        return true;
    }
    return false;
}
}  // namespace

extern "C" ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
    static auto real = reinterpret_cast<SendFn>(dlsym(RTLD_NEXT, "sendmsg"));
    if (inject_eintr()) return -1;
    g_send_calls++;
    if (msg->msg_controllen) g_send_calls_with_fds++;
    if (!g_max_chunk) return real(fd, msg, flags);
    // Send at most g_max_chunk bytes of the iovecs.
    msghdr m = *msg;
    iovec iov[4];
    size_t left = g_max_chunk;
    unsigned n = 0;
    for (size_t i = 0; i < msg->msg_iovlen && left && n < 4; i++) {
        size_t l = std::min(left, msg->msg_iov[i].iov_len);
        iov[n++] = {msg->msg_iov[i].iov_base, l};
        left -= l;
    }
    m.msg_iov = iov;
    m.msg_iovlen = n;
    return real(fd, &m, flags);
}

extern "C" ssize_t recvmsg(int fd, msghdr* msg, int flags) {
    static auto real = reinterpret_cast<RecvFn>(dlsym(RTLD_NEXT, "recvmsg"));
    if (inject_eintr()) return -1;
    if (!g_max_chunk || msg->msg_iovlen != 1) return real(fd, msg, flags);
    iovec* orig = msg->msg_iov;
    iovec small{orig->iov_base, std::min<size_t>(orig->iov_len, g_max_chunk)};
    msg->msg_iov = &small;
    ssize_t r = real(fd, msg, flags);
    msg->msg_iov = orig;
    return r;
}

TEST(ProtoShortIo, FramesSurviveThreeByteChunksAndEintr) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    Channel tx{UniqueFd(sv[0])}, rx{UniqueFd(sv[1])};
    g_max_chunk = 3;
    g_eintr_every = 4;
    g_send_calls = g_send_calls_with_fds = 0;

    UniqueFd a(::eventfd(0, EFD_CLOEXEC)), b(::eventfd(0, EFD_CLOEXEC));
    int fds[2] = {a.get(), b.get()};
    ASSERT_TRUE(tx.send(Cmd::SetIrqfd, {}, fds).ok());
    EXPECT_EQ(g_send_calls_with_fds, 1);  // fds only on the first piece
    EXPECT_GE(g_send_calls, 6);
    BarAccess acc{0xc034, 0xdeadbeefcafef00d, 8, 0, {}};
    ASSERT_TRUE(tx.send_struct(Cmd::BarWrite, acc).ok());
    ASSERT_TRUE(tx.send_ret(77).ok());

    Frame f;
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    EXPECT_EQ(f.cmd(), Cmd::SetIrqfd);
    EXPECT_EQ(f.num_fds, 2u);
    EXPECT_TRUE(validate(f, Role::Remote).ok());
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    EXPECT_EQ(f.cmd(), Cmd::BarWrite);
    EXPECT_EQ(f.as<BarAccess>().val, 0xdeadbeefcafef00dull);
    EXPECT_EQ(f.as<BarAccess>().addr, 0xc034u);
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    EXPECT_EQ(f.as<uint64_t>(), 77u);
    EXPECT_TRUE(validate(f, Role::Proxy).ok());
    g_max_chunk = 0;
    g_eintr_every = 0;
}
