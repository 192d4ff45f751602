// The receiver's validity rules, one command at a time.
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "proto/channel.h"

using namespace mpq;
using namespace mpq::proto;

namespace {

Frame make(int32_t cmd, uint64_t size, unsigned nfds) {
    Frame f;
    f.hdr.cmd = cmd;
    f.hdr.size = size;
    for (unsigned i = 0; i < nfds; i++) f.fds[f.num_fds++].reset(::eventfd(0, EFD_CLOEXEC));
    return f;
}

bool ok(int32_t cmd, uint64_t size, unsigned nfds, Role r = Role::Remote) {
    return validate(make(cmd, size, nfds), r).ok();
}

std::string msg(int32_t cmd, uint64_t size, unsigned nfds, Role r = Role::Remote) {
    auto s = validate(make(cmd, size, nfds), r);
    return s.ok() ? "" : s.error().message;
}

}  // namespace

TEST(ProtoValidate, SyncSysmem) {
    EXPECT_TRUE(ok(0, 192, 1));
    EXPECT_TRUE(ok(0, 192, 7));
    EXPECT_FALSE(ok(0, 192, 0));
    EXPECT_FALSE(ok(0, 192, 8));
    EXPECT_FALSE(ok(0, 191, 1));
    EXPECT_EQ(msg(0, 192, 0), "SYNC_SYSMEM: 0 fds, expected 1..7");
}

TEST(ProtoValidate, Config) {
    for (int32_t c : {2, 3}) {
        EXPECT_TRUE(ok(c, 12, 0));
        EXPECT_FALSE(ok(c, 8, 0));
        EXPECT_FALSE(ok(c, 24, 0));
        EXPECT_FALSE(ok(c, 12, 1));
    }
    EXPECT_EQ(msg(3, 8, 0), "PCI_CFGREAD: payload size 8, expected 12");
}

TEST(ProtoValidate, Bar) {
    for (int32_t c : {4, 5}) {
        EXPECT_TRUE(ok(c, 24, 0));
        EXPECT_FALSE(ok(c, 12, 0));
        EXPECT_FALSE(ok(c, 24, 1));
    }
}

TEST(ProtoValidate, SetIrqfd) {
    EXPECT_TRUE(ok(6, 0, 2));
    EXPECT_FALSE(ok(6, 0, 1));
    EXPECT_FALSE(ok(6, 0, 3));
    EXPECT_FALSE(ok(6, 8, 2));
    EXPECT_EQ(msg(6, 0, 1), "SET_IRQFD: 1 fds, expected 2");
}

TEST(ProtoValidate, DeviceResetAndSelect) {
    EXPECT_TRUE(ok(7, 0, 0));
    EXPECT_FALSE(ok(7, 8, 0));
    EXPECT_FALSE(ok(7, 0, 1));
    EXPECT_TRUE(ok(raw(Cmd::SelectDevice), 64, 0));
    EXPECT_FALSE(ok(raw(Cmd::SelectDevice), 63, 0));
}

TEST(ProtoValidate, RetAndUnknownToRemote) {
    EXPECT_FALSE(ok(1, 8, 0));
    EXPECT_EQ(msg(9, 0, 0), "unknown command 9");
    EXPECT_EQ(msg(-1, 0, 0), "unknown command -1");
    EXPECT_FALSE(ok(8, 0, 0));
}

TEST(ProtoValidate, ProxyAcceptsOnlyRet) {
    EXPECT_TRUE(ok(1, 8, 0, Role::Proxy));
    EXPECT_TRUE(ok(1, 0, 0, Role::Proxy));
    EXPECT_FALSE(ok(1, 4, 0, Role::Proxy));
    EXPECT_FALSE(ok(1, 8, 1, Role::Proxy));
    EXPECT_FALSE(ok(3, 12, 0, Role::Proxy));
}

TEST(ProtoValidate, DroppedFdsAndBadSize) {
    Frame f = make(7, 0, 0);
    f.dropped_fds = 9;
    EXPECT_FALSE(validate(f, Role::Remote).ok());
    Frame g = make(3, 500, 0);
    EXPECT_FALSE(validate(g, Role::Remote).ok());
}

TEST(ProtoValidate, IsEventfd) {
    UniqueFd e(::eventfd(0, EFD_CLOEXEC));
    EXPECT_TRUE(is_eventfd(e.get()));
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    EXPECT_FALSE(is_eventfd(a.get()));
    EXPECT_FALSE(is_eventfd(-1));
}
