// The remote's protocol core (remote/wire_session.h) without a socket:
// frames made in memory go in, the encoded replies and the device's state
// are checked.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "pci/pci_device.h"
#include "proto/reg_mirror.h"
#include "remote/wire_session.h"
#include "util/event_loop.h"

using namespace mpq;
using namespace mpq::proto;

namespace {

pci::PciIdentity ident() {
    pci::PciIdentity id;
    id.vendor = 0x1234;
    id.device = 0x5678;
    id.bars[0] = {pci::BarKind::Io, 16};
    id.bars[1] = {pci::BarKind::Mem32, 4096};
    return id;
}

class FakeDev : public pci::PciDevice {
public:
    FakeDev() : PciDevice(ident()) {}
    uint64_t bar_read(int bar, uint64_t off, unsigned) override { return 0x1100 + uint64_t(bar) * 0x100 + off; }
    void bar_write(int bar, uint64_t off, uint64_t val, unsigned size) override {
        writes++;
        last_bar = bar;
        last_off = off;
        last_val = val;
        last_size = size;
        if (bar == 1 && off == 0) set_irq(val != 0);
    }
    void device_reset() override { resets++; }
    int writes = 0, resets = 0, last_bar = -1;
    uint64_t last_off = 0, last_val = 0;
    unsigned last_size = 0;
};

template <typename T>
Frame frame(Cmd c, const T& body, unsigned nfds = 0) {
    Frame f;
    f.hdr.cmd = raw(c);
    f.hdr.size = sizeof(T);
    std::memcpy(f.payload.data(), &body, sizeof(T));
    for (unsigned i = 0; i < nfds; i++) f.fds[f.num_fds++].reset(::eventfd(0, EFD_CLOEXEC));
    return f;
}

Frame bare(Cmd c, unsigned nfds = 0) {
    Frame f;
    f.hdr.cmd = raw(c);
    for (unsigned i = 0; i < nfds; i++) f.fds[f.num_fds++].reset(::eventfd(0, EFD_CLOEXEC));
    return f;
}

struct Reply {
    int32_t cmd;
    uint64_t size;
    uint64_t value;
};

// The replies encoded in `out`, consumed.
std::vector<Reply> replies(std::vector<uint8_t>& out) {
    std::vector<Reply> r;
    size_t at = 0;
    while (out.size() - at >= sizeof(Header)) {
        Header h;
        std::memcpy(&h, out.data() + at, sizeof h);
        at += sizeof h;
        uint64_t v = 0;
        if (h.size == 8 && out.size() - at >= 8) std::memcpy(&v, out.data() + at, 8);
        at += h.size;
        r.push_back({h.cmd, h.size, v});
    }
    EXPECT_EQ(at, out.size());
    out.clear();
    return r;
}

struct Session : ::testing::Test {
    EventLoop loop;  // the irq lines' resample watch; nothing here waits on it
    GuestMemory mem;
    FakeDev a, b;
    remote::EventfdIrqLine irq_a{loop}, irq_b{loop};
    remote::ServerStats stats;
    remote::WireSession s{"test", {{"a", &a, &irq_a}, {"b", &b, &irq_b}}, mem, stats};
    std::vector<uint8_t> out;

    void SetUp() override {
        a.attach_irq(&irq_a);
        b.attach_irq(&irq_b);
        for (FakeDev* d : {&a, &b}) {
            d->config_write(pci::kBar0 + 4, 0xfebf0000, 4);  // BAR1 (memory)
            d->config_write(pci::kCommand, pci::kCmdMem, 2);
        }
    }
    uint64_t one(Frame f) {
        s.handle(f, out);
        auto r = replies(out);
        EXPECT_EQ(r.size(), 1u);
        if (r.size() != 1) return 0xdead;
        EXPECT_EQ(r[0].cmd, raw(Cmd::Ret));
        return r[0].value;
    }
    void none(Frame f) {
        s.handle(f, out);
        EXPECT_TRUE(out.empty());
        out.clear();
    }
    uint64_t negotiate(uint64_t want) { return one(frame(Cmd::BarRead, BarAccess{kExtProbeAddr, want, 0, 0, {}})); }
};

}  // namespace

TEST_F(Session, ConfigAndBarAccessesAnswerWithOneRet) {
    EXPECT_EQ(one(frame(Cmd::PciCfgRead, PciConf{0, 0, 4})), 0x56781234u);
    EXPECT_EQ(one(frame(Cmd::BarRead, BarAccess{0xfebf0010, 0, 4, 1, {}})), 0x1210u);
    EXPECT_EQ(one(frame(Cmd::BarWrite, BarAccess{0xfebf0020, 0xabcd, 2, 1, {}})), 0u);
    EXPECT_EQ(a.last_bar, 1);
    EXPECT_EQ(a.last_off, 0x20u);
    EXPECT_EQ(a.last_val, 0xabcdu);
    // The encoding is QEMU's: a 16-byte header with cmd 1, then the u64.
    Frame f = frame(Cmd::PciCfgRead, PciConf{0, 0, 2});
    s.handle(f, out);
    ASSERT_EQ(out.size(), 24u);
    Header h;
    std::memcpy(&h, out.data(), sizeof h);
    EXPECT_EQ(h.cmd, 1);
    EXPECT_EQ(h.pad, 0u);
    EXPECT_EQ(h.size, 8u);
    out.clear();
    EXPECT_EQ(stats.frames, 4u);
}

TEST_F(Session, InvalidRequestsStillGetTheirAllOnesRet) {
    // Every row that is answered: wrong size, then out-of-range contents.
    for (const Message& m : kMessages) {
        if (!reply_due(m.cmd)) continue;
        SCOPED_TRACE(m.name);
        Frame f = bare(m.cmd);
        f.hdr.size = m.payload_size + 1;
        EXPECT_EQ(one(std::move(f)), kAllOnes);
    }
    EXPECT_EQ(one(frame(Cmd::PciCfgRead, PciConf{254, 0, 4})), kAllOnes);
    EXPECT_EQ(one(frame(Cmd::BarRead, BarAccess{0xfebf0010, 0, 3, 1, {}})), kAllOnes);
    EXPECT_EQ(one(frame(Cmd::BarWrite, BarAccess{0x10000000, 1, 4, 1, {}})), kAllOnes);
    EXPECT_EQ(a.writes, 0);
    // Unknown commands, replies sent to us and unanswered frames: nothing back.
    none(bare(static_cast<Cmd>(9)));
    none(frame(Cmd::Ret, uint64_t{0}));
    none(bare(Cmd::SetIrqfd, 1));
    EXPECT_GT(stats.bad_frames, 0u);
    EXPECT_GT(s.bad_frames(), 0u);
}

TEST_F(Session, ExtensionsNeedTheirFeature) {
    SelectDevice sel{};
    std::memcpy(sel.id, "b", 1);
    EXPECT_EQ(one(frame(Cmd::SelectDevice, sel)), kAllOnes);
    none(frame(Cmd::BarWritePosted, BarAccess{0xfebf0000, 1, 4, 1, {}}));
    EXPECT_EQ(a.writes, 0);  // ignored, not carried out
    EXPECT_EQ(s.selected(), 0u);

    // Granted: what was offered, of what we support.
    EXPECT_EQ(negotiate(kFeatMultiDev | kFeatPostedWrites | (1ull << 40)),
              kExtReplyMagic | kFeatMultiDev | kFeatPostedWrites);
    EXPECT_EQ(s.features(), kFeatMultiDev | kFeatPostedWrites);
    EXPECT_EQ(one(frame(Cmd::SelectDevice, sel)), 0u);
    EXPECT_EQ(s.selected(), 1u);
    none(frame(Cmd::BarWritePosted, BarAccess{0xfebf0000, 1, 4, 1, {}}));
    EXPECT_EQ(b.writes, 1);
    EXPECT_EQ(a.writes, 0);
    EXPECT_TRUE(irq_b.asserted());

    std::memcpy(sel.id, "zz", 2);
    EXPECT_EQ(one(frame(Cmd::SelectDevice, sel)), kAllOnes);
    EXPECT_EQ(s.selected(), 1u);  // unchanged
    // No mirror without REG_MIRROR, whatever the page.
    int fd = ::memfd_create("page", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_GE(fd, 0);
    Frame m = frame(Cmd::MirrorSetup, MirrorSetup{kMirrorPageSize});
    m.fds[m.num_fds++].reset(fd);
    EXPECT_EQ(one(std::move(m)), kAllOnes);
    EXPECT_FALSE(s.has_mirrors());
}

TEST_F(Session, ResetIsAnsweredEmptyAndIrqfdsAreTaken) {
    Frame reset = bare(Cmd::DeviceReset);
    s.handle(reset, out);
    auto r = replies(out);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].cmd, raw(Cmd::Ret));
    EXPECT_EQ(r[0].size, 0u);
    EXPECT_EQ(a.resets, 1);
    EXPECT_EQ(stats.resets, 1u);

    Frame f = bare(Cmd::SetIrqfd, 2);
    s.handle(f, out);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(f.num_fds, 2u);
    EXPECT_FALSE(f.fds[0].valid());  // the line keeps them
    EXPECT_TRUE(irq_a.connected());
    // Asserting the line now signals the eventfd the session handed over.
    EXPECT_EQ(one(frame(Cmd::BarWrite, BarAccess{0xfebf0000, 1, 4, 1, {}})), 0u);
    EXPECT_TRUE(irq_a.asserted());
    EXPECT_EQ(irq_a.signals(), 1u);
}

TEST_F(Session, SyncSysmemMapsGuestRam) {
    int fd = ::memfd_create("ram", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 8192), 0);
    ASSERT_EQ(::pwrite(fd, "hello", 5, 4096), 5);
    SyncSysmem m{};
    m.gpa[0] = 0x100000;
    m.size[0] = 8192;
    m.offset[0] = 0;
    Frame f = frame(Cmd::SyncSysmem, m);
    f.fds[f.num_fds++].reset(fd);
    s.handle(f, out);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(stats.sysmem_updates, 1u);
    uint8_t buf[5] = {};
    ASSERT_TRUE(mem.read(0x101000, std::span<uint8_t>(buf, 5)).ok());
    EXPECT_EQ(std::memcmp(buf, "hello", 5), 0);
}
