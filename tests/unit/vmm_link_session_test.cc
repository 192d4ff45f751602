// The proxy's protocol core (vmm/proxy_link_session.h) without a socket:
// negotiation, device selection, what a reply is worth, posted-write
// accounting and the RAM table.
#include <sys/eventfd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "vmm/proxy_link_session.h"

using namespace mpq;
using namespace mpq::proto;
using mpq::vmm::LinkSession;

namespace {

Frame ret(uint64_t v) {
    Frame f;
    f.hdr.cmd = raw(Cmd::Ret);
    f.hdr.size = sizeof v;
    std::memcpy(f.payload.data(), &v, sizeof v);
    return f;
}

Frame empty_ret() {
    Frame f;
    f.hdr.cmd = raw(Cmd::Ret);
    return f;
}

const int kDevA = 0, kDevB = 1;  // two devices of ours, by address

}  // namespace

TEST(LinkSession, StockRemoteAnswersTheProbeWithAllOnes) {
    LinkSession s;
    BarAccess p = s.probe();
    EXPECT_EQ(p.addr, kExtProbeAddr);
    EXPECT_EQ(p.size, 0u);  // invalid for a stock remote, which survives it
    EXPECT_EQ(p.val, kSupportedFeatures);
    s.probe_answered(kAllOnes);
    EXPECT_FALSE(s.negotiated());
    EXPECT_EQ(s.features(), 0u);
    EXPECT_FALSE(s.posts_writes());
    EXPECT_FALSE(s.select_for(&kDevA, "a"));  // plain 7.2: never SELECT_DEVICE
}

TEST(LinkSession, GrantedFeaturesAreWhatWeOffered) {
    LinkSession s(kFeatMultiDev | kFeatRegMirror);
    EXPECT_EQ(s.probe().val, kFeatMultiDev | kFeatRegMirror);
    // A remote granting more than offered gets only the offer.
    s.probe_answered(kExtReplyMagic | kFeatMultiDev | kFeatPostedWrites | kFeatRegMirror);
    EXPECT_TRUE(s.negotiated());
    EXPECT_EQ(s.features(), kFeatMultiDev | kFeatRegMirror);
    EXPECT_FALSE(s.posts_writes());
}

TEST(LinkSession, SelectsOnlyWhenTheDeviceChanges) {
    LinkSession s;
    s.probe_answered(kExtReplyMagic | kFeatMultiDev);
    auto sel = s.select_for(&kDevA, "lsi0");
    ASSERT_TRUE(sel);
    EXPECT_STREQ(sel->id, "lsi0");
    ASSERT_TRUE(s.select_answered(&kDevA, "lsi0", 0).ok());
    EXPECT_FALSE(s.select_for(&kDevA, "lsi0"));
    EXPECT_TRUE(s.select_for(&kDevB, "lsi1"));
    // Refused: nothing is selected, the next frame selects again.
    EXPECT_FALSE(s.select_answered(&kDevB, "lsi1", kAllOnes).ok());
    EXPECT_TRUE(s.select_for(&kDevA, "lsi0"));
    ASSERT_TRUE(s.select_answered(&kDevA, "lsi0", 0).ok());
    s.forget(&kDevA);
    EXPECT_TRUE(s.select_for(&kDevA, "lsi0"));
    // An id of 64 bytes fills the field without a NUL.
    std::string longid(64, 'x');
    auto l = s.select_for(&kDevB, longid);
    ASSERT_TRUE(l);
    EXPECT_EQ(std::string(l->id, sizeof l->id), longid);
}

TEST(LinkSession, RepliesAreCheckedAgainstTheTable) {
    LinkSession s;
    auto v = s.reply(Cmd::PciCfgRead, ret(0x1234));
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, 0x1234u);
    // Empty only after DEVICE_RESET (a u64 is accepted there too).
    EXPECT_TRUE(s.reply(Cmd::DeviceReset, empty_ret()).ok());
    EXPECT_TRUE(s.reply(Cmd::DeviceReset, ret(0)).ok());
    auto e = s.reply(Cmd::PciCfgRead, empty_ret());
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().message, "empty RET for PCI_CFGREAD");
    // Not a RET, or a RET with fds: the link is out of protocol.
    Frame notret = ret(0);
    notret.hdr.cmd = raw(Cmd::BarRead);
    EXPECT_FALSE(s.reply(Cmd::BarRead, notret).ok());
    Frame withfd = ret(0);
    withfd.fds[withfd.num_fds++].reset(::eventfd(0, EFD_CLOEXEC));
    auto f = s.reply(Cmd::BarRead, withfd);
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.error().message.find("invalid reply to BAR_READ"), std::string::npos);
}

TEST(LinkSession, PostedWritesAreFencedByAnyReply) {
    LinkSession s;
    EXPECT_FALSE(s.posted_pending());
    s.posted_write_sent();
    s.posted_write_sent();
    EXPECT_TRUE(s.posted_pending());
    EXPECT_EQ(s.posted_sent(), 2u);
    ASSERT_TRUE(s.reply(Cmd::PciCfgRead, ret(0)).ok());
    EXPECT_FALSE(s.posted_pending());
    EXPECT_EQ(s.posted_sent(), 2u);  // the count goes on (the mirror compares it)
    s.posted_write_sent();
    s.posted_caught_up();
    EXPECT_FALSE(s.posted_pending());
    EXPECT_EQ(LinkSession::fence_request().len, 2);
}

TEST(LinkSession, RamTableIsSentOnlyWhenItChanges) {
    LinkSession s;
    std::vector<vmm::RamRegionInfo> t{{0, 0xa0000, 0}, {0x100000, 0x1000000, 0x100000}};
    auto m = s.sysmem_update(t);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(*m);
    EXPECT_EQ((*m)->gpa[1], 0x100000u);
    EXPECT_EQ((*m)->size[1], 0x1000000u);
    EXPECT_EQ((*m)->offset[1], 0x100000);
    EXPECT_EQ((*m)->size[2], 0u);
    s.sysmem_sent(t);
    auto same = s.sysmem_update(t);
    ASSERT_TRUE(same.ok());
    EXPECT_FALSE(*same);
    t[1].size = 0x2000000;
    auto changed = s.sysmem_update(t);
    ASSERT_TRUE(changed.ok());
    EXPECT_TRUE(*changed);
    std::vector<vmm::RamRegionInfo> many(kMaxFdsAccepted + 1, vmm::RamRegionInfo{0, 4096, 0});
    EXPECT_FALSE(s.sysmem_update(many).ok());
}
