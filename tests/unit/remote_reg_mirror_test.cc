// MPQEXT REG_MIRROR: the page layout and its reader (proto/reg_mirror.h), the
// remote's publisher (remote/reg_mirror.h) and MIRROR_SETUP served by the
// DeviceServer in both loop modes.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "pci/pci_device.h"
#include "proto/channel.h"
#include "proto/reg_mirror.h"
#include "remote/device_server.h"
#include "remote/irq_line.h"
#include "remote/reg_mirror.h"
#include "util/event_loop.h"

using namespace mpq;
using proto::MirrorPage;

namespace {

pci::PciIdentity ident() {
    pci::PciIdentity id;
    id.vendor = 0x1234;
    id.device = 0x5678;
    id.bars[0] = {pci::BarKind::Io, 256};
    id.bars[1] = {pci::BarKind::Mem32, 4096};
    return id;
}

// A register file of 256 bytes behind BAR0 and BAR1; byte 3 is read-to-clear.
class WindowDev : public pci::PciDevice {
public:
    WindowDev() : PciDevice(ident()) {
        for (unsigned i = 0; i < regs.size(); ++i) regs[i] = static_cast<uint8_t>(i * 7);
    }
    uint64_t bar_read(int, uint64_t off, unsigned size) override {
        uint64_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint64_t{regs[(off + i) & 0xff]} << (8 * i);
        if (off <= 3 && off + size > 3) regs[3] = 0;
        return v;
    }
    void bar_write(int, uint64_t off, uint64_t val, unsigned size) override {
        for (unsigned i = 0; i < size; ++i) regs[(off + i) & 0xff] = static_cast<uint8_t>(val >> (8 * i));
        if (off == 0x10) set_irq(val != 0);
    }
    void device_reset() override {}
    pci::RegWindow reg_window() const override {
        pci::RegWindow w;
        w.bars = 0b11;
        w.pure.set();
        w.pure.reset(3);
        return w;
    }
    void reg_window_fill(std::span<uint8_t, pci::kRegWindowSize> image) override {
        fills++;
        for (unsigned i = 0; i < image.size(); ++i)
            if (i != 3) image[i] = regs[i];
    }
    std::array<uint8_t, 256> regs{};
    int fills = 0;
};

class NoWindowDev : public WindowDev {
public:
    pci::RegWindow reg_window() const override { return {}; }
};

UniqueFd page_fd(unsigned seals, off_t size = proto::kMirrorPageSize) {
    UniqueFd fd(::memfd_create("mirror-test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(::ftruncate(fd.get(), size), 0);
    if (seals) {
        EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, seals), 0);
    }
    return fd;
}

// The proxy's read-only view of a page.
struct View {
    const MirrorPage* p = nullptr;
    explicit View(int fd) {
        void* m = ::mmap(nullptr, proto::kMirrorPageSize, PROT_READ, MAP_SHARED, fd, 0);
        EXPECT_NE(m, MAP_FAILED);
        p = static_cast<const MirrorPage*>(m);
    }
    ~View() { ::munmap(const_cast<MirrorPage*>(p), proto::kMirrorPageSize); }
};

// ---- the reader, on a page built by hand ----

struct ReaderTest : ::testing::Test {
    MirrorPage page{};
    void SetUp() override {
        page.seq.store(2);
        page.bars.store(0b10);
        for (auto& w : page.pure) w.store(~uint64_t{0});
        for (unsigned i = 0; i < proto::kMirrorWindow / 8; ++i) {
            uint64_t v = 0;
            for (unsigned b = 0; b < 8; ++b) v |= uint64_t{(i * 8 + b) & 0xff} << (8 * b);
            page.image[i].store(v);
        }
    }
};

TEST_F(ReaderTest, AssemblesLittleEndianAcrossWords) {
    auto v = proto::mirror_read(page, 1, 6, 4, 0);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->value, 0x09080706u);
    EXPECT_EQ(proto::mirror_read(page, 1, 0xf8, 8, 0)->value, 0xfffefdfcfbfaf9f8ull);
    EXPECT_FALSE(v->irq_level);
}

TEST_F(ReaderTest, MissesWhateverIsNotCertain) {
    EXPECT_FALSE(proto::mirror_read(page, 0, 0, 4, 0)) << "BAR not in the window";
    EXPECT_FALSE(proto::mirror_read(page, -1, 0, 4, 0));
    EXPECT_FALSE(proto::mirror_read(page, 40, 0, 4, 0));
    EXPECT_FALSE(proto::mirror_read(page, 1, 0xfe, 4, 0)) << "past the window";
    EXPECT_FALSE(proto::mirror_read(page, 1, 0x100, 1, 0));
    EXPECT_FALSE(proto::mirror_read(page, 1, ~uint64_t{0}, 4, 0)) << "offset + size wraps";
    EXPECT_FALSE(proto::mirror_read(page, 1, 0, 0, 0));
    EXPECT_FALSE(proto::mirror_read(page, 1, 0, 16, 0));
    EXPECT_FALSE(proto::mirror_read(page, 1, 0, 4, 1)) << "a posted write not carried out";
    page.pure[1].store(~(uint64_t{1} << 2));  // byte 66
    EXPECT_FALSE(proto::mirror_read(page, 1, 64, 4, 0)) << "one impure byte";
    EXPECT_TRUE(proto::mirror_read(page, 1, 60, 4, 0));
    page.seq.store(3);
    EXPECT_FALSE(proto::mirror_read(page, 1, 0, 4, 0)) << "the remote is in a round";
    EXPECT_FALSE(proto::mirror_posted_done(page));
    page.seq.store(4);
    page.posted_done.store(9);
    EXPECT_EQ(proto::mirror_posted_done(page), 9u);
    EXPECT_TRUE(proto::mirror_read(page, 1, 0, 4, 9));
}

// ---- the publisher ----

TEST(RegMirror, RefusesPagesItCouldFaultOn) {
    WindowDev dev;
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    ::close(p[1]);
    auto r = remote::RegMirror::attach(UniqueFd(p[0]), dev, nullptr);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("not a memfd"), std::string::npos);
    r = remote::RegMirror::attach(page_fd(0), dev, nullptr);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("F_SEAL_SHRINK"), std::string::npos);
    r = remote::RegMirror::attach(page_fd(F_SEAL_SHRINK, 100), dev, nullptr);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("smaller"), std::string::npos);
    NoWindowDev plain;
    r = remote::RegMirror::attach(page_fd(F_SEAL_SHRINK), plain, nullptr);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("no register window"), std::string::npos);
}

TEST(RegMirror, PublishesTheWindowBetweenRounds) {
    EventLoop loop;
    WindowDev dev;
    remote::EventfdIrqLine irq(loop);
    dev.attach_irq(&irq);
    UniqueFd fd = page_fd(F_SEAL_SHRINK | F_SEAL_GROW);
    View view(fd.get());
    // Garbage left in the page by its creator is never taken for a window.
    auto m = remote::RegMirror::attach(UniqueFd(::dup(fd.get())), dev, &irq);
    ASSERT_TRUE(m.ok()) << m.error().message;
    EXPECT_FALSE(proto::mirror_read(*view.p, 1, 0, 4, 0)) << "nothing published yet";
    (*m)->publish(0);
    EXPECT_EQ(proto::mirror_read(*view.p, 1, 0x20, 4, 0)->value, 0xf5eee7e0u);
    EXPECT_EQ(proto::mirror_read(*view.p, 0, 0x20, 1, 0)->value, 0xe0u);
    EXPECT_FALSE(proto::mirror_read(*view.p, 1, 2, 2, 0)) << "byte 3 is read-to-clear";
    EXPECT_FALSE(proto::mirror_read(*view.p, 2, 0, 1, 0));

    (*m)->begin();
    dev.bar_write(1, 0x20, 0xaabbccdd, 4);
    dev.bar_write(1, 0x10, 1, 1);  // raises INTx
    EXPECT_FALSE(proto::mirror_read(*view.p, 1, 0x20, 4, 0)) << "in a round: ask the device";
    (*m)->publish(7);
    EXPECT_FALSE(proto::mirror_read(*view.p, 1, 0x20, 4, 6)) << "a posted write still on its way";
    auto v = proto::mirror_read(*view.p, 1, 0x20, 4, 7);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->value, 0xaabbccddu);
    EXPECT_TRUE(v->irq_level);
    // publish() outside a round and a second begin() change nothing.
    int fills = dev.fills;
    (*m)->publish(7);
    EXPECT_EQ(dev.fills, fills);
    m->reset();
    EXPECT_FALSE(proto::mirror_read(*view.p, 1, 0x20, 4, 7)) << "gone: the page says ask the device";
}

// Byte 3 (read-to-clear) predicted: it reads as it is and leaves the line
// down.
class PredictingDev : public WindowDev {
public:
    unsigned predict_reads(std::span<ReadPrediction, kMaxReadPredictions> out) const override {
        out[0].offset = 3;
        out[0].value = regs[3];
        out[0].irq_level_after = false;
        return 1;
    }
};

TEST(RegMirror, TellsWhetherTheDeviceRanOnSinceAPublication) {
    EventLoop loop;
    remote::EventfdIrqLine irq(loop);
    PredictingDev dev;
    dev.attach_irq(&irq);
    UniqueFd fd = page_fd(F_SEAL_SHRINK | F_SEAL_GROW);
    View view(fd.get());
    auto m = remote::RegMirror::attach(UniqueFd(::dup(fd.get())), dev, &irq);
    ASSERT_TRUE(m.ok()) << m.error().message;
    EXPECT_FALSE((*m)->unchanged_since(0)) << "nothing published yet";

    dev.regs[3] = 0x04;
    (*m)->publish(0);
    uint32_t s = view.p->seq.load();
    auto ov = proto::mirror_predict(*view.p, 1, 3, 1, 0);
    ASSERT_TRUE(ov);
    EXPECT_EQ(ov->prediction.value, 0x04);
    EXPECT_FALSE(ov->prediction.level_after);
    EXPECT_TRUE((*m)->unchanged_since(s));
    (*m)->begin();  // the round that carries the read out
    EXPECT_TRUE((*m)->unchanged_since(s));
    EXPECT_FALSE((*m)->unchanged_since(s - 2)) << "an older publication";
    dev.regs[0x20] ^= 0xff;  // a pure byte changed in this round
    EXPECT_FALSE((*m)->unchanged_since(s));
    dev.regs[0x20] ^= 0xff;
    EXPECT_TRUE((*m)->unchanged_since(s));
    dev.regs[3] |= 0x08;  // only the read-to-clear byte: its prediction tells
    EXPECT_FALSE((*m)->unchanged_since(s));
    dev.regs[3] = 0x04;
    dev.bar_write(1, 0x10, 1, 1);  // the line
    EXPECT_FALSE((*m)->unchanged_since(s));
    (*m)->publish(0);
    EXPECT_FALSE((*m)->unchanged_since(s)) << "published since";
    EXPECT_TRUE((*m)->unchanged_since(view.p->seq.load()));
    EXPECT_TRUE(proto::mirror_predict(*view.p, 0, 3, 1, 0)->prediction.value == 0x04);

    // Without an irq line nothing is predicted: the level after is unknown.
    UniqueFd fd2 = page_fd(F_SEAL_SHRINK | F_SEAL_GROW);
    View view2(fd2.get());
    auto m2 = remote::RegMirror::attach(UniqueFd(::dup(fd2.get())), dev, nullptr);
    ASSERT_TRUE(m2.ok());
    (*m2)->publish(0);
    EXPECT_FALSE(proto::mirror_predict(*view2.p, 1, 3, 1, 0));
}

// ---- MIRROR_SETUP through the server ----

enum class LoopMode { Epoll, Ring };

struct ServerTest : ::testing::TestWithParam<LoopMode> {
    EventLoop loop;
    GuestMemory mem;
    WindowDev dev;
    remote::EventfdIrqLine irq{loop};
    remote::DeviceServer server{loop, mem, [](bool) {}};
    proto::Channel proxy;

    void SetUp() override {
        if (GetParam() == LoopMode::Ring) {
            ASSERT_TRUE(loop.enable_ring());
        }
        int sv[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        proxy = proto::Channel(UniqueFd(sv[0]));
        dev.attach_irq(&irq);
        ASSERT_TRUE(server.add_connection(UniqueFd(sv[1]), {{"dev0", &dev, &irq}}).ok());
        dev.config_write(0x10, 0xc001, 4);
        dev.config_write(0x14, 0xfe000000, 4);
        dev.config_write(0x04, 0x3, 2);
    }
    uint64_t call(proto::Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds = {}) {
        EXPECT_TRUE(proxy.send(cmd, payload, fds).ok());
        for (int i = 0; i < 200; ++i) {
            loop.run_once(10);
            pollfd pf{proxy.fd(), POLLIN, 0};
            if (::poll(&pf, 1, 0) == 1) break;
        }
        proto::Frame f;
        auto r = proxy.recv(f);
        EXPECT_TRUE(r.ok());
        return f.size() == 8 ? f.as<uint64_t>() : 0;
    }
    uint64_t setup(int fd, uint64_t size = proto::kMirrorPageSize) {
        proto::MirrorSetup s{size};
        return call(proto::Cmd::MirrorSetup, std::span(reinterpret_cast<const uint8_t*>(&s), sizeof s),
                    std::span<const int>(&fd, 1));
    }
    void negotiate(uint64_t features) {
        proto::BarAccess b{proto::kExtProbeAddr, features, 0, 0, {}};
        call(proto::Cmd::BarRead, std::span(reinterpret_cast<const uint8_t*>(&b), sizeof b));
    }
    void post(uint64_t addr, uint64_t val) {
        proto::BarAccess b{addr, val, 4, 1, {}};
        ASSERT_TRUE(proxy.send(proto::Cmd::BarWritePosted, std::span(reinterpret_cast<const uint8_t*>(&b), sizeof b))
                        .ok());
    }
    uint64_t read(uint64_t addr) {
        proto::BarAccess b{addr, 0, 4, 1, {}};
        return call(proto::Cmd::BarRead, std::span(reinterpret_cast<const uint8_t*>(&b), sizeof b));
    }
};

TEST_P(ServerTest, SetupOnlyAfterNegotiationAndPublishedAfterEachRound) {
    UniqueFd fd = page_fd(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    View view(fd.get());
    EXPECT_EQ(setup(fd.get()), proto::kAllOnes) << "REG_MIRROR not negotiated";
    negotiate(proto::kFeatPostedWrites | proto::kFeatRegMirror);
    EXPECT_EQ(setup(fd.get(), 8192), proto::kAllOnes) << "wrong page size";
    UniqueFd loose = page_fd(0);
    EXPECT_EQ(setup(loose.get()), proto::kAllOnes) << "unsealed page";
    EXPECT_EQ(setup(fd.get()), 0u);
    // Posted writes are counted, even one the server refuses (bad address).
    post(0xfe000040, 0x01020304);
    post(0x12345678, 0);
    EXPECT_EQ(read(0xfe000040), 0x01020304u);
    loop.run_once(0);  // the epoll loop sends the reply inside the round
    auto v = proto::mirror_read(*view.p, 1, 0x40, 4, 2);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->value, 0x01020304u);
    EXPECT_EQ(proto::mirror_posted_done(*view.p), 2u);
}

INSTANTIATE_TEST_SUITE_P(Loops, ServerTest, ::testing::Values(LoopMode::Epoll, LoopMode::Ring),
                         [](const auto& info) { return info.param == LoopMode::Ring ? "Ring" : "Epoll"; });

}  // namespace
