// The message table (proto/wire.h) and what is derived from it: names,
// reply rules and the receiver's validator, row by row.
#include <sys/eventfd.h>

#include <set>
#include <string>

#include <gtest/gtest.h>

#include "proto/channel.h"

using namespace mpq;
using namespace mpq::proto;

namespace {

Frame make(Cmd cmd, uint64_t size, unsigned nfds) {
    Frame f;
    f.hdr.cmd = raw(cmd);
    f.hdr.size = size;
    for (unsigned i = 0; i < nfds; i++) f.fds[f.num_fds++].reset(::eventfd(0, EFD_CLOEXEC));
    return f;
}

Role receiver(const Message& m) { return m.dir == Dir::ToRemote ? Role::Remote : Role::Proxy; }

}  // namespace

TEST(ProtoTable, IdsAndNamesAreQemus) {
    // QEMU 7.2's MPQemuCmd values, and ours behind MPQEXT.
    EXPECT_EQ(raw(Cmd::SyncSysmem), 0);
    EXPECT_EQ(raw(Cmd::Ret), 1);
    EXPECT_EQ(raw(Cmd::PciCfgWrite), 2);
    EXPECT_EQ(raw(Cmd::PciCfgRead), 3);
    EXPECT_EQ(raw(Cmd::BarWrite), 4);
    EXPECT_EQ(raw(Cmd::BarRead), 5);
    EXPECT_EQ(raw(Cmd::SetIrqfd), 6);
    EXPECT_EQ(raw(Cmd::DeviceReset), 7);
    EXPECT_EQ(raw(Cmd::SelectDevice), 64);
    EXPECT_EQ(raw(Cmd::BarWritePosted), 65);
    EXPECT_EQ(raw(Cmd::MirrorSetup), 66);
    EXPECT_STREQ(cmd_name(Cmd::PciCfgRead), "PCI_CFGREAD");
    EXPECT_STREQ(cmd_name(Cmd::BarWritePosted), "BAR_WRITE_POSTED");
    EXPECT_STREQ(cmd_name(static_cast<Cmd>(9)), "unknown command");
    EXPECT_EQ(message(static_cast<Cmd>(8)), nullptr);
    std::set<std::string> names;
    for (const Message& m : kMessages) names.insert(m.name);
    EXPECT_EQ(names.size(), std::size(kMessages));
}

TEST(ProtoTable, ReplyRules) {
    for (Cmd c : {Cmd::PciCfgRead, Cmd::PciCfgWrite, Cmd::BarRead, Cmd::BarWrite, Cmd::DeviceReset,
                  Cmd::SelectDevice, Cmd::MirrorSetup})
        EXPECT_TRUE(reply_due(c)) << cmd_name(c);
    for (Cmd c : {Cmd::SyncSysmem, Cmd::SetIrqfd, Cmd::BarWritePosted, Cmd::Ret, static_cast<Cmd>(9)})
        EXPECT_FALSE(reply_due(c)) << cmd_name(c);
    EXPECT_EQ(message_of(Cmd::DeviceReset).answer, Answer::RetEmpty);
    EXPECT_EQ(message_of(Cmd::BarWritePosted).feature, kFeatPostedWrites);
    EXPECT_EQ(message_of(Cmd::BarRead).feature, kStock);
}

TEST(ProtoTable, PayloadTypes) {
    static_assert(std::is_same_v<Payload<Cmd::BarWritePosted>, BarAccess>);
    static_assert(std::is_same_v<Payload<Cmd::SyncSysmem>, SyncSysmem>);
    static_assert(std::is_same_v<Payload<Cmd::Ret>, uint64_t>);
    EXPECT_EQ(message_of(Cmd::SetIrqfd).payload_size, 0u);
    EXPECT_EQ(message_of(Cmd::SelectDevice).payload_size, kDeviceIdLen);
    EXPECT_EQ(message_of(Cmd::MirrorSetup).payload_size, sizeof(MirrorSetup));
}

// Every row: its own size and fd counts pass at its receiver, one byte more
// or less, one fd too many or too few, and the other receiver all fail.
TEST(ProtoTable, ValidatorFollowsEveryRow) {
    for (const Message& m : kMessages) {
        SCOPED_TRACE(m.name);
        Role r = receiver(m);
        Role other = r == Role::Remote ? Role::Proxy : Role::Remote;
        for (unsigned n = m.min_fds; n <= m.max_fds; n++) EXPECT_TRUE(validate(make(m.cmd, m.payload_size, n), r).ok());
        EXPECT_FALSE(validate(make(m.cmd, m.payload_size, m.min_fds), other).ok());
        EXPECT_FALSE(validate(make(m.cmd, m.payload_size + 1, m.min_fds), r).ok());
        if (m.payload_size > 0 && m.answer != Answer::IsReply) {
            EXPECT_FALSE(validate(make(m.cmd, m.payload_size - 1, m.min_fds), r).ok());
        }
        if (m.max_fds < kMaxFdsAccepted) {
            EXPECT_FALSE(validate(make(m.cmd, m.payload_size, m.max_fds + 1), r).ok());
        }
        if (m.min_fds > 0) {
            EXPECT_FALSE(validate(make(m.cmd, m.payload_size, m.min_fds - 1), r).ok());
        }
    }
    // A reply may be empty (after DEVICE_RESET) and nothing in between.
    EXPECT_TRUE(validate(make(Cmd::Ret, 0, 0), Role::Proxy).ok());
    EXPECT_FALSE(validate(make(Cmd::Ret, 4, 0), Role::Proxy).ok());
}
