// Predicted reads in the register mirror, the proxy's side: when it may
// answer a read-to-clear byte from the page (proto::mirror_predict), and
// what it lays over later reads until the remote has carried the read out
// (proto::mirror_read with an overlay). The remote's side is in
// remote_reg_mirror_test.cc.

#include <gtest/gtest.h>

#include "proto/reg_mirror.h"

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

}  // namespace
