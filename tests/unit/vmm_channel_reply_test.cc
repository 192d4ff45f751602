// Channel::recv_reply (the proxy's receive of a RET): normal replies, an
// empty RET, a reply delivered in pieces, bytes beyond the frame, fds on a
// RET, an oversized header, EOF; and the buffered receive under it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "proto/channel.h"

namespace mpq::proto {
namespace {

struct Pair {
    Pair() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        proxy = Channel(UniqueFd(sv[0]));
        remote = Channel(UniqueFd(sv[1]));
    }
    Channel proxy, remote;
};

std::string raw_ret(uint64_t size, uint64_t val) {
    Header h{raw(Cmd::Ret), 0, size};
    std::string s(reinterpret_cast<char*>(&h), sizeof h);
    if (size >= 8) s.append(reinterpret_cast<char*>(&val), 8);
    return s;
}

TEST(VmmChannelReply, U64AndEmptyRet) {
    Pair p;
    Frame f;
    ASSERT_TRUE(p.remote.send_ret(0x1234).ok());
    auto r = p.proxy.recv_reply(f);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, RecvState::Frame);
    EXPECT_TRUE(validate(f, Role::Proxy).ok());
    EXPECT_EQ(f.as<uint64_t>(), 0x1234u);
    ASSERT_TRUE(p.remote.send_empty(Cmd::Ret).ok());
    r = p.proxy.recv_reply(f);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(f.size(), 0u);
    EXPECT_FALSE(p.proxy.mid_frame());
}

TEST(VmmChannelReply, PiecesAreCompleted) {
    Pair p;
    std::string s = raw_ret(8, 0xabcdef);
    std::thread t([&] {
        for (char c : s) {
            ASSERT_EQ(::write(p.remote.fd(), &c, 1), 1);
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    });
    Frame f;
    auto r = p.proxy.recv_reply(f);
    t.join();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, RecvState::Frame);
    EXPECT_EQ(f.as<uint64_t>(), 0xabcdefu);
}

TEST(VmmChannelReply, BytesBeyondTheFrameAreAnError) {
    Pair p;
    std::string s = raw_ret(0, 0) + std::string(8, 'x');
    ASSERT_EQ(::write(p.remote.fd(), s.data(), s.size()), static_cast<ssize_t>(s.size()));
    Frame f;
    auto r = p.proxy.recv_reply(f);
    EXPECT_FALSE(r.ok());
}

TEST(VmmChannelReply, OversizedHeaderIsAnError) {
    Pair p;
    std::string s = raw_ret(8, 1);
    uint64_t big = 4096;
    std::memcpy(&s[8], &big, 8);
    ASSERT_EQ(::write(p.remote.fd(), s.data(), s.size()), static_cast<ssize_t>(s.size()));
    Frame f;
    EXPECT_FALSE(p.proxy.recv_reply(f).ok());
}

TEST(VmmChannelReply, FdsOnARetAreClosedAndRejected) {
    Pair p;
    int e = ::eventfd(0, EFD_CLOEXEC);
    uint64_t v = 7;
    ASSERT_TRUE(p.remote.send(Cmd::Ret, std::span(reinterpret_cast<const uint8_t*>(&v), 8), std::span(&e, 1)).ok());
    ::close(e);
    Frame f;
    auto r = p.proxy.recv_reply(f);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(validate(f, Role::Proxy).ok());
    // The frame owns what came; dropping it closes the fd (the sender's
    // copy is closed already, so nothing refers to the eventfd any more).
    ASSERT_EQ(f.num_fds, 1u);
    int got = f.fds[0].get();
    f.reset();
    EXPECT_EQ(::fcntl(got, F_GETFD), -1);
}

TEST(VmmChannelReply, EofAndWouldBlock) {
    Pair p;
    ::fcntl(p.proxy.fd(), F_SETFL, O_NONBLOCK);
    Frame f;
    auto r = p.proxy.recv_reply(f);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, RecvState::WouldBlock);
    p.remote.close();
    r = p.proxy.recv_reply(f);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, RecvState::Closed);
}

// The buffered receive must hand every frame its own fds whatever the read
// boundaries are: frames of all sizes, pipelined, split into random pieces
// (fds always ride on the piece that starts their frame, as senders do),
// read while they arrive.
TEST(VmmChannelReply, BufferedReceiveKeepsFdsWithTheirFrames) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd tx(sv[0]);
    ::fcntl(sv[1], F_SETFL, O_NONBLOCK);
    Channel rx{UniqueFd(sv[1])};
    uint32_t seed = 12345;
    auto rnd = [&](uint32_t n) {
        seed = seed * 1103515245u + 12345u;
        return (seed >> 8) % n;
    };
    constexpr int kFrames = 3000;
    const uint64_t sizes[] = {0, 8, 12, 24, 64, 192};
    struct Want {
        int32_t cmd;
        uint64_t size;
        unsigned fds;
    };
    std::vector<Want> want;
    int got = 0;
    Frame f;
    auto drain = [&] {
        for (;;) {
            auto r = rx.recv(f);
            ASSERT_TRUE(r.ok()) << r.error().message;
            if (*r != RecvState::Frame) return;
            ASSERT_LT(got, static_cast<int>(want.size()));
            const Want& w = want[static_cast<size_t>(got)];
            ASSERT_EQ(f.hdr.cmd, w.cmd) << "frame " << got;
            ASSERT_EQ(f.size(), w.size) << "frame " << got;
            ASSERT_EQ(f.num_fds, w.fds) << "frame " << got;
            ASSERT_FALSE(f.ctrunc) << "frame " << got;
            for (uint64_t i = 0; i < w.size; ++i) ASSERT_EQ(f.payload[i], static_cast<uint8_t>(got + i));
            for (unsigned i = 0; i < f.num_fds; ++i) EXPECT_TRUE(is_eventfd(f.fds[i].get()));
            ++got;
        }
    };
    for (int n = 0; n < kFrames; ++n) {
        Want w{static_cast<int32_t>(rnd(100)), sizes[rnd(6)], rnd(4) == 0 ? 1 + rnd(3) : 0u};
        want.push_back(w);
        std::vector<uint8_t> bytes(sizeof(Header) + w.size);
        Header h{w.cmd, 0, w.size};
        std::memcpy(bytes.data(), &h, sizeof h);
        for (uint64_t i = 0; i < w.size; ++i) bytes[sizeof h + i] = static_cast<uint8_t>(n + i);
        size_t at = 0;
        while (at < bytes.size()) {
            size_t len = std::min<size_t>(bytes.size() - at, 1 + rnd(64));
            iovec iov{bytes.data() + at, len};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 3)];
            int fds[3];
            if (at == 0 && w.fds) {
                for (unsigned i = 0; i < w.fds; ++i) fds[i] = ::eventfd(0, EFD_CLOEXEC);
                msg.msg_control = ctl;
                msg.msg_controllen = CMSG_SPACE(sizeof(int) * w.fds);
                cmsghdr* c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * w.fds);
                std::memcpy(CMSG_DATA(c), fds, sizeof(int) * w.fds);
            }
            ASSERT_EQ(::sendmsg(tx.get(), &msg, MSG_NOSIGNAL), static_cast<ssize_t>(len));
            if (at == 0)
                for (unsigned i = 0; i < w.fds; ++i) ::close(fds[i]);
            at += len;
            if (rnd(3) == 0) drain();
            // A failed check inside drain() leaves frames unread; stop before
            // the sender blocks on a full socket.
            if (HasFatalFailure()) return;
        }
    }
    drain();
    EXPECT_EQ(got, kFrames);
    EXPECT_FALSE(rx.mid_frame());
}

// Fds attached to a piece that starts no frame are not given to anyone:
// the frame they landed in is rejected.
TEST(VmmChannelReply, FdsMidFrameAreClosedAndTheFrameRejected) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd tx(sv[0]);
    Channel rx{UniqueFd(sv[1])};
    Header h{raw(Cmd::BarRead), 0, sizeof(BarAccess)};
    ASSERT_EQ(::write(tx.get(), &h, sizeof h), static_cast<ssize_t>(sizeof h));
    Frame f;
    ::fcntl(rx.fd(), F_SETFL, O_NONBLOCK);
    ASSERT_EQ(*rx.recv(f), RecvState::WouldBlock);  // the header is buffered
    BarAccess b{};
    int e = ::eventfd(0, EFD_CLOEXEC);
    ASSERT_TRUE(::write(e, "\1\0\0\0\0\0\0\0", 8) == 8);
    iovec iov{&b, sizeof b};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &e, sizeof e);
    ASSERT_EQ(::sendmsg(tx.get(), &msg, 0), static_cast<ssize_t>(sizeof b));
    ::close(e);
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    EXPECT_EQ(f.num_fds, 0u);
    auto v = validate(f, Role::Remote);
    EXPECT_FALSE(v.ok());
}

}  // namespace
}  // namespace mpq::proto
