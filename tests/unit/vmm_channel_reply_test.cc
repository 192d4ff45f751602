// Channel::recv_reply (the proxy's receive of a RET): normal replies, an
// empty RET, a reply delivered in pieces, bytes beyond the frame, fds on a
// RET, an oversized header, EOF; and the buffered receive under it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

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
    Header h{static_cast<int32_t>(Cmd::Ret), 0, size};
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

}  // namespace
}  // namespace mpq::proto
