// Channel framing against raw sockets: exact bytes, fds, partial I/O, EOF.
#include "proto/channel.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include <gtest/gtest.h>

using namespace mpq;
using namespace mpq::proto;

namespace {

struct Pair {
    UniqueFd a, b;
    Pair() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        a.reset(sv[0]);
        b.reset(sv[1]);
    }
};

int count_fds() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') n++;
    ::closedir(d);
    return n - 1;  // the DIR's own fd
}

void set_nonblock(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

std::vector<uint8_t> read_all_available(int fd) {
    std::vector<uint8_t> out(4096);
    ssize_t n = ::recv(fd, out.data(), out.size(), MSG_DONTWAIT);
    out.resize(n > 0 ? n : 0);
    return out;
}

// Sends raw bytes with `nfds` fresh eventfds attached; returns the fds sent
// (still open on our side).
std::vector<UniqueFd> raw_send(int sock, const std::vector<uint8_t>& bytes, unsigned nfds) {
    std::vector<UniqueFd> sent;
    std::vector<int> raw;
    for (unsigned i = 0; i < nfds; i++) {
        sent.emplace_back(::eventfd(0, EFD_CLOEXEC));
        raw.push_back(sent.back().get());
    }
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    std::vector<char> ctl(CMSG_SPACE(sizeof(int) * (nfds ? nfds : 1)));
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds) {
        msg.msg_control = ctl.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        std::memcpy(CMSG_DATA(c), raw.data(), sizeof(int) * nfds);
    }
    EXPECT_EQ(::sendmsg(sock, &msg, 0), static_cast<ssize_t>(bytes.size()));
    return sent;
}

std::vector<uint8_t> header_bytes(int32_t cmd, uint64_t size) {
    std::vector<uint8_t> b(16, 0);
    std::memcpy(&b[0], &cmd, 4);
    std::memcpy(&b[8], &size, 8);
    return b;
}

}  // namespace

TEST(ProtoChannel, CfgReadBytesMatchStock) {
    Pair p;
    Channel tx(std::move(p.a));
    PciConf c{0, 0, 2};
    ASSERT_TRUE(tx.send_struct(Cmd::PciCfgRead, c).ok());
    auto got = read_all_available(p.b.get());
    // Verified frame from spec §2.2.
    std::vector<uint8_t> want = {0x03, 0, 0, 0, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0,
                                 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0};
    EXPECT_EQ(got, want);
}

TEST(ProtoChannel, RetAndEmptyBytes) {
    Pair p;
    Channel tx(std::move(p.a));
    ASSERT_TRUE(tx.send_ret(0x1000).ok());
    std::vector<uint8_t> want = {1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0,
                                 0x00, 0x10, 0, 0, 0, 0, 0, 0};
    EXPECT_EQ(read_all_available(p.b.get()), want);
    ASSERT_TRUE(tx.send_empty(Cmd::Ret).ok());
    EXPECT_EQ(read_all_available(p.b.get()), header_bytes(1, 0));
}

TEST(ProtoChannel, RoundTripBarAccess) {
    Pair p;
    Channel tx(std::move(p.a)), rx(std::move(p.b));
    BarAccess b{0xfebf0034, 0x11223344, 4, 1, {}};
    ASSERT_TRUE(tx.send_struct(Cmd::BarWrite, b).ok());
    Frame f;
    auto r = rx.recv(f);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, RecvState::Frame);
    EXPECT_EQ(f.cmd(), Cmd::BarWrite);
    EXPECT_EQ(f.size(), 24u);
    EXPECT_TRUE(validate(f, Role::Remote).ok());
    auto g = f.as<BarAccess>();
    EXPECT_EQ(g.addr, 0xfebf0034u);
    EXPECT_EQ(g.val, 0x11223344u);
    EXPECT_EQ(g.size, 4u);
    EXPECT_EQ(g.memory, 1);
    EXPECT_FALSE(rx.mid_frame());
}

TEST(ProtoChannel, FdsPassedAndClosed) {
    Pair p;
    Channel tx(std::move(p.a)), rx(std::move(p.b));
    int before = count_fds();
    UniqueFd irq(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    UniqueFd rs(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int fds[2] = {irq.get(), rs.get()};
    ASSERT_TRUE(tx.send(Cmd::SetIrqfd, {}, fds).ok());
    {
        Frame f;
        ASSERT_EQ(*rx.recv(f), RecvState::Frame);
        ASSERT_TRUE(validate(f, Role::Remote).ok());
        ASSERT_EQ(f.num_fds, 2u);
        EXPECT_NE(f.fds[0].get(), irq.get());
        EXPECT_TRUE(is_eventfd(f.fds[0].get()));
        EXPECT_TRUE(::fcntl(f.fds[0].get(), F_GETFD) & FD_CLOEXEC);
        // Same eventfd: a write on the received copy shows on ours.
        uint64_t one = 1, v = 0;
        ASSERT_EQ(::write(f.fds[0].get(), &one, 8), 8);
        ASSERT_EQ(::read(irq.get(), &v, 8), 8);
        EXPECT_EQ(v, 1u);
        EXPECT_EQ(count_fds(), before + 4);
    }
    EXPECT_EQ(count_fds(), before + 2);  // the frame closed its copies
}

TEST(ProtoChannel, SevenFdsAcceptedEightRejected) {
    Pair p;
    Channel rx(std::move(p.b));
    SyncSysmem s{};
    std::vector<uint8_t> bytes = header_bytes(0, 192);
    bytes.resize(16 + 192);
    std::memcpy(&bytes[16], &s, 192);
    int before = count_fds();
    {
        auto sent = raw_send(p.a.get(), bytes, 7);
        Frame f;
        ASSERT_EQ(*rx.recv(f), RecvState::Frame);
        EXPECT_EQ(f.num_fds, 7u);
        EXPECT_TRUE(validate(f, Role::Remote).ok());
    }
    {
        auto sent = raw_send(p.a.get(), bytes, 8);
        Frame f;
        ASSERT_EQ(*rx.recv(f), RecvState::Frame);
        EXPECT_EQ(f.num_fds, 8u);
        auto v = validate(f, Role::Remote);
        ASSERT_FALSE(v.ok());
        EXPECT_NE(v.error().message.find("fds"), std::string::npos) << v.error().message;
    }
    EXPECT_EQ(count_fds(), before);
}

TEST(ProtoChannel, MoreThanEightFdsAllClosedStreamInSync) {
    Pair p;
    Channel rx(std::move(p.b));
    int before = count_fds();
    for (unsigned n : {9u, 16u, 20u}) {
        {
            auto sent = raw_send(p.a.get(), header_bytes(6, 0), n);
            Frame f;
            ASSERT_EQ(*rx.recv(f), RecvState::Frame);
            EXPECT_EQ(f.num_fds, 0u);
            EXPECT_GE(f.dropped_fds + (f.ctrunc ? 1 : 0), 1u);
            auto v = validate(f, Role::Remote);
            ASSERT_FALSE(v.ok());
            EXPECT_NE(v.error().message.find("too many fds"), std::string::npos) << v.error().message;
        }
        EXPECT_EQ(count_fds(), before) << n << " fds";
        // The next frame still parses.
        raw_send(p.a.get(), header_bytes(7, 0), 0);
        Frame g;
        ASSERT_EQ(*rx.recv(g), RecvState::Frame);
        EXPECT_EQ(g.cmd(), Cmd::DeviceReset);
        EXPECT_TRUE(validate(g, Role::Remote).ok());
    }
}

TEST(ProtoChannel, EofAtBoundaryIsClosed) {
    Pair p;
    Channel rx(std::move(p.b));
    p.a.reset();
    Frame f;
    auto r = rx.recv(f);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, RecvState::Closed);
}

TEST(ProtoChannel, EofInsideHeaderIsError) {
    Pair p;
    Channel rx(std::move(p.b));
    auto h = header_bytes(3, 12);
    h.resize(10);
    raw_send(p.a.get(), h, 0);
    p.a.reset();
    Frame f;
    auto r = rx.recv(f);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("EOF inside a frame"), std::string::npos);
}

TEST(ProtoChannel, EofInsidePayloadIsErrorAndClosesFds) {
    Pair p;
    Channel rx(std::move(p.b));
    int before = count_fds();
    auto h = header_bytes(0, 192);
    h.resize(16 + 40);
    {
        auto sent = raw_send(p.a.get(), h, 2);
    }
    p.a.reset();
    Frame f;
    auto r = rx.recv(f);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("EOF inside a frame"), std::string::npos);
    EXPECT_EQ(count_fds(), before - 1);  // p.a closed; both passed fds closed too
}

TEST(ProtoChannel, OversizedPayloadIsError) {
    Pair p;
    Channel rx(std::move(p.b));
    raw_send(p.a.get(), header_bytes(3, 193), 0);
    Frame f;
    auto r = rx.recv(f);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("193"), std::string::npos);
    raw_send(p.a.get(), header_bytes(3, ~0ull), 0);
    EXPECT_FALSE(rx.recv(f).ok());
}

TEST(ProtoChannel, SendRefusesBadArguments) {
    Pair p;
    Channel tx(std::move(p.a));
    std::vector<uint8_t> big(193);
    EXPECT_FALSE(tx.send(Cmd::Ret, big).ok());
    int fds[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_FALSE(tx.send(Cmd::SyncSysmem, {}, fds).ok());
    Channel closed;
    EXPECT_FALSE(closed.send_ret(0).ok());
}

TEST(ProtoChannel, NonBlockingByteByByte) {
    Pair p;
    set_nonblock(p.b.get());
    Channel rx(std::move(p.b));
    PciConf c{0x10, 0xffffffff, 4};
    auto bytes = header_bytes(2, 12);
    bytes.resize(28);
    std::memcpy(&bytes[16], &c, 12);
    Frame f;
    EXPECT_EQ(*rx.recv(f), RecvState::WouldBlock);
    for (size_t i = 0; i < bytes.size(); i++) {
        // fds ride on the very first byte
        auto sent = raw_send(p.a.get(), {bytes[i]}, i == 0 ? 1 : 0);
        auto r = rx.recv(f);
        ASSERT_TRUE(r.ok());
        if (i + 1 < bytes.size()) {
            EXPECT_EQ(*r, RecvState::WouldBlock) << i;
            EXPECT_TRUE(rx.mid_frame());
        } else {
            EXPECT_EQ(*r, RecvState::Frame);
        }
    }
    EXPECT_EQ(f.cmd(), Cmd::PciCfgWrite);
    EXPECT_EQ(f.num_fds, 1u);
    EXPECT_FALSE(validate(f, Role::Remote).ok());  // CFGWRITE with an fd
    EXPECT_EQ(f.as<PciConf>().val, 0xffffffffu);
    EXPECT_EQ(f.as<PciConf>().len, 4);
}

TEST(ProtoChannel, ShortWritesWithTinySendBuffer) {
    Pair p;
    int small = 1;  // the kernel rounds this up to its minimum
    ASSERT_EQ(::setsockopt(p.a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    set_nonblock(p.a.get());
    set_nonblock(p.b.get());
    Channel tx(std::move(p.a)), rx(std::move(p.b));
    constexpr int kFrames = 2000;
    int before = count_fds();

    std::thread reader([&] {
        Frame f;
        int got = 0;
        while (got < kFrames) {
            auto r = rx.recv(f);
            ASSERT_TRUE(r.ok()) << r.error().message;
            if (*r == RecvState::WouldBlock) {
                pollfd pf{rx.fd(), POLLIN, 0};
                ::poll(&pf, 1, -1);
                continue;
            }
            ASSERT_EQ(*r, RecvState::Frame);
            ASSERT_EQ(f.cmd(), Cmd::SyncSysmem);
            ASSERT_EQ(f.size(), 192u);
            auto s = f.as<SyncSysmem>();
            ASSERT_EQ(s.gpa[0], static_cast<uint64_t>(got));
            ASSERT_EQ(s.offset[7], -static_cast<int64_t>(got));
            ASSERT_EQ(f.num_fds, got % 3 == 0 ? 1u : 0u);
            got++;
        }
    });
    UniqueFd efd(::eventfd(0, EFD_CLOEXEC));
    for (int i = 0; i < kFrames; i++) {
        SyncSysmem s{};
        s.gpa[0] = i;
        s.offset[7] = -i;
        int fd = efd.get();
        std::span<const int> fds;
        if (i % 3 == 0) fds = std::span<const int>(&fd, 1);
        ASSERT_TRUE(tx.send_struct(Cmd::SyncSysmem, s, fds).ok());
    }
    reader.join();
    EXPECT_EQ(count_fds(), before + 1);
}

TEST(ProtoChannel, UnknownCommandReadWholeStreamInSync) {
    Pair p;
    Channel rx(std::move(p.b));
    auto bad = header_bytes(9, 12);
    bad.resize(28, 0xee);
    raw_send(p.a.get(), bad, 0);
    auto good = header_bytes(7, 0);
    raw_send(p.a.get(), good, 0);
    Frame f;
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    auto v = validate(f, Role::Remote);
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.error().message, "unknown command 9");
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    EXPECT_EQ(f.cmd(), Cmd::DeviceReset);
    EXPECT_TRUE(validate(f, Role::Remote).ok());
}

TEST(ProtoChannel, FrameReuseClearsOldPayload) {
    Pair p;
    Channel tx(std::move(p.a)), rx(std::move(p.b));
    BarAccess b{~0ull, ~0ull, ~0u, 1, {}};
    ASSERT_TRUE(tx.send_struct(Cmd::BarRead, b).ok());
    ASSERT_TRUE(tx.send_empty(Cmd::DeviceReset).ok());
    Frame f;
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    ASSERT_EQ(*rx.recv(f), RecvState::Frame);
    EXPECT_EQ(f.as<BarAccess>().addr, 0u);
}

TEST(ProtoChannel, SendTimesOutWhenPeerNeverReads) {
    Pair p;
    set_nonblock(p.a.get());
    Channel tx(std::move(p.a));
    tx.set_send_timeout_ms(50);
    Status last;
    for (int i = 0; i < 100000 && last.ok(); i++) last = tx.send_ret(i);
    ASSERT_FALSE(last.ok());
    EXPECT_NE(last.error().message.find("peer does not read"), std::string::npos) << last.error().message;
}
