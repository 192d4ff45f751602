// Predicted reads in the register mirror: when the proxy may answer a
// read-to-clear byte from the page (proto::mirror_predict), what it lays
// over later reads until the remote has carried the read out
// (proto::mirror_read with an overlay), and the remote's test of whether
// the device is still as it published it (RegMirror::unchanged_since).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "pci/pci_device.h"
#include "proto/reg_mirror.h"
#include "remote/irq_line.h"
#include "remote/reg_mirror.h"
#include "util/event_loop.h"

using namespace mpq;
using proto::MirrorPage;

namespace {

// A settled page: seq 2, BARs 0 and 1, 5 posted frames done, byte 3 not
// pure and predicted (reads 0x44; leaves byte 0x10 at 0 and the line down).
struct Page {
    Page() {
        page = new (mem) MirrorPage{};
        page->seq.store(2);
        page->bars.store(0b11);
        page->posted_done.store(5);
        page->irq_level.store(1);
        for (auto& w : page->pure) w.store(~uint64_t{0});
        page->pure[0].store(~uint64_t{0} & ~(uint64_t{1} << 3));
        for (unsigned i = 0; i < proto::kMirrorWindow / 8; i++) page->image[i].store(0x0101010101010101ull * (i + 1));
        proto::Prediction p;
        p.offset = 3;
        p.value = 0x44;
        p.level_after = false;
        p.changes = 1;
        p.change_offset[0] = 0x10;
        p.change_value[0] = 0x00;
        page->predicted[1].head.store(proto::pack_head(p));
        page->predicted[1].changes.store(proto::pack_changes(p));
    }
    alignas(MirrorPage) unsigned char mem[sizeof(MirrorPage)];
    MirrorPage* page;
};

TEST(MirrorPredict, OnlyAOneByteReadOfAPredictedByteOnASettledPage) {
    Page pg;
    auto ov = proto::mirror_predict(*pg.page, 1, 3, 1, 5);
    ASSERT_TRUE(ov);
    EXPECT_EQ(ov->seq, 2u);
    EXPECT_EQ(ov->posted_done, 5u);
    EXPECT_EQ(ov->prediction.value, 0x44);
    EXPECT_FALSE(ov->prediction.level_after);
    EXPECT_FALSE(proto::mirror_predict(*pg.page, 1, 3, 2, 5)) << "wider than a byte";
    EXPECT_FALSE(proto::mirror_predict(*pg.page, 2, 3, 1, 5)) << "a BAR outside the window";
    EXPECT_FALSE(proto::mirror_predict(*pg.page, 1, 4, 1, 5)) << "no prediction for that byte";
    EXPECT_FALSE(proto::mirror_predict(*pg.page, 1, 3, 1, 6)) << "a posted frame not carried out yet";
    EXPECT_FALSE(proto::mirror_predict(*pg.page, -1, 3, 1, 5));
    EXPECT_FALSE(proto::mirror_predict(*pg.page, 1, 300, 1, 5));
    pg.page->seq.store(3);
    EXPECT_FALSE(proto::mirror_predict(*pg.page, 1, 3, 1, 5)) << "the remote is in a round";
    pg.page->seq.store(2);
    // A slot claiming more changes than it can hold is no prediction.
    pg.page->predicted[1].head.store(pg.page->predicted[1].head.load() | (uint64_t{9} << 24));
    EXPECT_FALSE(proto::mirror_predict(*pg.page, 1, 3, 1, 5));
}

TEST(MirrorPredict, OverlayUntilTheRemoteCarriedTheReadOut) {
    Page pg;
    auto ov = proto::mirror_predict(*pg.page, 1, 3, 1, 5);
    ASSERT_TRUE(ov);
    // The proxy posted the read: 6 sent, 5 done.
    auto m = proto::mirror_read(*pg.page, 0, 0x10, 1, 6, &*ov);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->value, 0u) << "the predicted change";
    EXPECT_FALSE(m->irq_level) << "the predicted level";
    m = proto::mirror_read(*pg.page, 0, 0x11, 1, 6, &*ov);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->value, 0x03u) << "other bytes from the image";
    EXPECT_FALSE(proto::mirror_read(*pg.page, 0, 3, 1, 6, &*ov)) << "the predicted byte itself goes over the socket";
    EXPECT_FALSE(proto::mirror_read(*pg.page, 0, 0x10, 1, 6)) << "no overlay: behind the posted read";
    EXPECT_FALSE(proto::mirror_read(*pg.page, 0, 0x10, 1, 7, &*ov)) << "something else posted since";
    pg.page->seq.store(4);
    EXPECT_FALSE(proto::mirror_read(*pg.page, 0, 0x10, 1, 6, &*ov)) << "published again, read not done";
    // The remote carried it out and published: the page is the truth again.
    pg.page->posted_done.store(6);
    m = proto::mirror_read(*pg.page, 0, 0x10, 1, 6, &*ov);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->value, 0x03u) << "the image, not the overlay";
    EXPECT_TRUE(m->irq_level);
}

TEST(MirrorPredict, PackedPredictionsRoundTrip) {
    proto::Prediction p;
    p.offset = 0x42;
    p.value = 0xa5;
    p.level_after = true;
    p.changes = 4;
    for (unsigned i = 0; i < 4; i++) {
        p.change_offset[i] = static_cast<uint8_t>(0x10 + i);
        p.change_value[i] = static_cast<uint8_t>(0xf0 + i);
    }
    auto q = proto::unpack_prediction(proto::pack_head(p), proto::pack_changes(p));
    ASSERT_TRUE(q);
    EXPECT_EQ(q->offset, 0x42);
    EXPECT_EQ(q->value, 0xa5);
    EXPECT_TRUE(q->level_after);
    ASSERT_EQ(q->changes, 4);
    for (unsigned i = 0; i < 4; i++) {
        EXPECT_EQ(q->change_offset[i], 0x10 + i);
        EXPECT_EQ(q->change_value[i], 0xf0 + i);
    }
    EXPECT_FALSE(proto::unpack_prediction(0, 0)) << "an empty slot";
}

pci::PciIdentity ident() {
    pci::PciIdentity id;
    id.vendor = 0x1234;
    id.device = 0x5678;
    id.bars[1] = {pci::BarKind::Mem32, 4096};
    return id;
}

// Byte 3 clears when read, and the line follows it.
class StatusDev : public pci::PciDevice {
public:
    StatusDev() : PciDevice(ident()) {}
    uint64_t bar_read(int, uint64_t off, unsigned) override {
        uint8_t v = regs[off & 0xff];
        if ((off & 0xff) == 3) {
            regs[3] = 0;
            set_irq(false);
        }
        return v;
    }
    void bar_write(int, uint64_t off, uint64_t val, unsigned) override { regs[off & 0xff] = static_cast<uint8_t>(val); }
    void device_reset() override {}
    pci::RegWindow reg_window() const override {
        pci::RegWindow w;
        w.bars = 0b10;
        w.pure.set();
        w.pure.reset(3);
        return w;
    }
    void reg_window_fill(std::span<uint8_t, pci::kRegWindowSize> image) override {
        for (unsigned i = 0; i < image.size(); ++i)
            if (i != 3) image[i] = regs[i];
    }
    unsigned predict_reads(std::span<ReadPrediction, kMaxReadPredictions> out) const override {
        out[0].offset = 3;
        out[0].value = regs[3];
        out[0].irq_level_after = false;
        return 1;
    }
    void raise(uint8_t status) {
        regs[3] |= status;
        set_irq(true);
    }
    std::array<uint8_t, 256> regs{};
};

UniqueFd sealed_page() {
    UniqueFd fd(::memfd_create("predict-test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    EXPECT_EQ(::ftruncate(fd.get(), proto::kMirrorPageSize), 0);
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    return fd;
}

TEST(MirrorPredict, RemoteTellsWhetherTheDeviceRanOnSinceAPublication) {
    EventLoop loop;
    remote::EventfdIrqLine line(loop);
    StatusDev dev;
    dev.attach_irq(&line);
    dev.config_write(0x04, 0x0002, 2);
    UniqueFd fd = sealed_page();
    int keep = ::dup(fd.get());
    auto m = remote::RegMirror::attach(std::move(fd), dev, &line);
    ASSERT_TRUE(m.ok()) << m.error().message;
    void* p = ::mmap(nullptr, proto::kMirrorPageSize, PROT_READ, MAP_SHARED, keep, 0);
    ASSERT_NE(p, MAP_FAILED);
    auto* page = static_cast<const MirrorPage*>(p);

    dev.raise(0x04);
    (*m)->publish(0);
    uint32_t s = page->seq.load();
    auto ov = proto::mirror_predict(*page, 1, 3, 1, 0);
    ASSERT_TRUE(ov);
    EXPECT_EQ(ov->prediction.value, 0x04);
    EXPECT_FALSE(ov->prediction.level_after);
    EXPECT_TRUE((*m)->unchanged_since(s));
    (*m)->begin();  // the round that will carry the read out
    EXPECT_TRUE((*m)->unchanged_since(s));
    EXPECT_FALSE((*m)->unchanged_since(s - 2)) << "an older publication";
    dev.regs[0x20] = 9;  // a pure byte changed in this round
    EXPECT_FALSE((*m)->unchanged_since(s));
    dev.regs[0x20] = 0;
    dev.raise(0x08);  // only the read-to-clear byte changed: its prediction tells
    EXPECT_FALSE((*m)->unchanged_since(s));
    (*m)->publish(0);
    EXPECT_FALSE((*m)->unchanged_since(s)) << "published since";
    EXPECT_TRUE((*m)->unchanged_since(page->seq.load()));

    // Without an irq line nothing is predicted (the level after is unknown).
    UniqueFd fd2 = sealed_page();
    int keep2 = ::dup(fd2.get());
    auto m2 = remote::RegMirror::attach(std::move(fd2), dev, nullptr);
    ASSERT_TRUE(m2.ok());
    (*m2)->publish(0);
    void* p2 = ::mmap(nullptr, proto::kMirrorPageSize, PROT_READ, MAP_SHARED, keep2, 0);
    ASSERT_NE(p2, MAP_FAILED);
    EXPECT_FALSE(proto::mirror_predict(*static_cast<const MirrorPage*>(p2), 1, 3, 1, 0));
    ::munmap(p, proto::kMirrorPageSize);
    ::munmap(p2, proto::kMirrorPageSize);
    ::close(keep);
    ::close(keep2);
}

}  // namespace
