// qcow2 header parsing and hostile headers: every bad field is refused at
// open with a clear error, never a crash or an oversized allocation.
#include <gtest/gtest.h>

#include "qcow2_test_util.h"

namespace mpq::block::qcow2 {
namespace {

using testing::build_image;
using testing::ImageSpec;
using testing::open_mem;
using testing::store_of;

std::string open_error(std::vector<uint8_t> img, ReadOnly ro = ReadOnly::No) {
    auto d = open_mem(store_of(std::move(img)), ro);
    if (d) return "";
    return d.error().message;
}

std::vector<uint8_t> base() { return build_image(ImageSpec{}); }

TEST(Qcow2Header, ValidV3AndV2Open) {
    auto d = open_mem(store_of(base()));
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ((*d)->header().version, 3u);
    EXPECT_EQ((*d)->length(), 1u << 20);
    EXPECT_EQ((*d)->header().cluster_size(), 65536u);

    ImageSpec v2;
    v2.version = 2;
    auto d2 = open_mem(store_of(build_image(v2)));
    ASSERT_TRUE(d2.ok()) << d2.error().message;
    EXPECT_EQ((*d2)->header().version, 2u);
    EXPECT_EQ((*d2)->header().header_length, 72u);
    EXPECT_EQ((*d2)->header().refcount_order, 4u);
}

TEST(Qcow2Header, BadMagicAndVersion) {
    auto img = base();
    img[0] = 'X';
    EXPECT_NE(open_error(img).find("bad magic"), std::string::npos);
    for (uint32_t v : {0u, 1u, 4u, 0xffffffffu}) {
        img = base();
        put_be32(&img[kHdrVersion], v);
        EXPECT_NE(open_error(img).find("unsupported qcow2 version"), std::string::npos) << v;
    }
    EXPECT_NE(open_error(std::vector<uint8_t>(20, 0)).find("too short"), std::string::npos);
}

TEST(Qcow2Header, ClusterBitsBounds) {
    for (uint32_t b : {0u, 8u, 22u, 63u, 0xffffffffu}) {
        auto img = base();
        put_be32(&img[kHdrClusterBits], b);
        EXPECT_NE(open_error(img).find("cluster size"), std::string::npos) << b;
    }
}

TEST(Qcow2Header, HeaderLength) {
    for (uint32_t l : {0u, 72u, 103u, 105u, 65537u, 0xfffffff8u}) {
        auto img = base();
        put_be32(&img[kHdrHeaderLength], l);
        EXPECT_NE(open_error(img).find("header length"), std::string::npos) << l;
    }
}

TEST(Qcow2Header, UnknownIncompatibleFeatureRefused) {
    auto img = base();
    put_be64(&img[kHdrIncompat], 1ull << 5);
    EXPECT_NE(open_error(img).find("bit 5"), std::string::npos);
    // With a feature name table the error names the feature.
    img = base();
    put_be64(&img[kHdrIncompat], 1ull << 7);
    put_be32(&img[112], kExtFeatureTable);
    put_be32(&img[116], 48);
    img[120] = 0;
    img[121] = 7;
    std::memcpy(&img[122], "shiny feature", 13);
    EXPECT_NE(open_error(img).find("'shiny feature' (bit 7)"), std::string::npos) << open_error(img);
    img = base();
    put_be64(&img[kHdrIncompat], kIncompatDataFile);
    EXPECT_NE(open_error(img).find("external data file"), std::string::npos);
    img = base();
    put_be64(&img[kHdrIncompat], kIncompatExtL2);
    EXPECT_NE(open_error(img).find("extended L2"), std::string::npos);
}

TEST(Qcow2Header, DataFileExtensionRefused) {
    auto img = base();
    put_be32(&img[112], kExtDataFile);
    put_be32(&img[116], 4);
    std::memcpy(&img[120], "data", 4);
    EXPECT_NE(open_error(img).find("external data file"), std::string::npos);
}

TEST(Qcow2Header, CompatibleAndAutoclearTolerated_AutoclearClearedOnWrite) {
    auto img = base();
    put_be64(&img[kHdrCompat], 1ull << 40);
    put_be64(&img[kHdrAutoclear], (1ull << 0) | (1ull << 33));
    auto s = store_of(img);
    {
        auto ro = open_mem(s, ReadOnly::Yes);
        ASSERT_TRUE(ro.ok()) << ro.error().message;
    }
    EXPECT_EQ(be64(&s->data[kHdrAutoclear]), (1ull << 0) | (1ull << 33)) << "read-only open must not write";
    {
        auto rw = open_mem(s);
        ASSERT_TRUE(rw.ok()) << rw.error().message;
    }
    EXPECT_EQ(be64(&s->data[kHdrAutoclear]), 0u);
    EXPECT_EQ(be64(&s->data[kHdrCompat]), 1ull << 40);
}

TEST(Qcow2Header, CompressionType) {
    auto img = base();
    img[kHdrCompressionType] = 2;
    put_be64(&img[kHdrIncompat], kIncompatCompression);
    EXPECT_NE(open_error(img).find("unknown compression type"), std::string::npos);
    img = base();
    img[kHdrCompressionType] = kCompressionZstd;
    EXPECT_NE(open_error(img).find("without its incompatible feature bit"), std::string::npos);
    put_be64(&img[kHdrIncompat], kIncompatCompression);
    EXPECT_EQ(open_error(img), "");
}

TEST(Qcow2Header, EncryptionAndRefcountOrder) {
    auto img = base();
    put_be32(&img[kHdrCryptMethod], 1);
    EXPECT_NE(open_error(img).find("encrypted"), std::string::npos);
    img = base();
    put_be32(&img[kHdrRefcountOrder], 7);
    EXPECT_NE(open_error(img).find("refcount order"), std::string::npos);
}

TEST(Qcow2Header, AbsurdSizes) {
    auto img = base();
    put_be64(&img[kHdrSize], 1ull << 62);
    EXPECT_NE(open_error(img).find("virtual size"), std::string::npos);
    img = base();
    put_be64(&img[kHdrSize], 1ull << 40);  // L1 has a single entry
    EXPECT_NE(open_error(img).find("L1 table too small"), std::string::npos);
    img = base();
    put_be32(&img[kHdrL1Size], 0xffffffffu);
    EXPECT_NE(open_error(img).find("L1 table too large"), std::string::npos);
    img = base();
    put_be32(&img[kHdrL1Size], 100000);  // 800 KB: fits the limit, not the file
    EXPECT_NE(open_error(img).find("past the end of the file"), std::string::npos);
    img = base();
    put_be32(&img[kHdrReftableClusters], 0);
    EXPECT_NE(open_error(img).find("refcount table is empty"), std::string::npos);
    img = base();
    put_be32(&img[kHdrReftableClusters], 0x10000000);
    EXPECT_NE(open_error(img).find("refcount table too large"), std::string::npos);
    img = base();
    put_be32(&img[kHdrReftableClusters], 100);
    EXPECT_NE(open_error(img).find("past the end of the file"), std::string::npos);
    img = base();
    put_be32(&img[kHdrNbSnapshots], 1u << 20);
    put_be64(&img[kHdrSnapshotsOffset], 65536 * 4);
    EXPECT_NE(open_error(img).find("too many snapshots"), std::string::npos);
}

TEST(Qcow2Header, UnalignedAndOverlappingTables) {
    auto img = base();
    put_be64(&img[kHdrL1Offset], 3 * 65536 + 8);
    EXPECT_NE(open_error(img).find("not cluster aligned"), std::string::npos);
    img = base();
    put_be64(&img[kHdrReftableOffset], 65536 + 512);
    EXPECT_NE(open_error(img).find("not cluster aligned"), std::string::npos);
    img = base();
    put_be64(&img[kHdrL1Offset], 65536);  // on top of the refcount table
    EXPECT_NE(open_error(img).find("overlaps"), std::string::npos);
    img = base();
    put_be64(&img[kHdrL1Offset], 0);
    EXPECT_NE(open_error(img).find("overlaps the header"), std::string::npos);
    img = base();
    put_be64(&img[kHdrL1Offset], 1ull << 60);
    EXPECT_NE(open_error(img).find("past the end of the file"), std::string::npos);
    img = base();
    put_be64(&img[kHdrReftableOffset], 0xfffffffffff00000ull);
    EXPECT_NE(open_error(img).find("past the end of the file"), std::string::npos);
}

TEST(Qcow2Header, Extensions) {
    auto img = base();
    put_be32(&img[112], 0x12345678);  // unknown: skipped
    put_be32(&img[116], 5);
    put_be32(&img[128], kExtBackingFormat);
    put_be32(&img[132], 0xfffffff0u);  // runs past the cluster
    EXPECT_NE(open_error(img).find("runs past the first cluster"), std::string::npos);
    img = base();
    put_be32(&img[112], kExtBackingFormat);
    put_be32(&img[116], 40);
    EXPECT_NE(open_error(img).find("backing format name too long"), std::string::npos);
    // Extensions filling the whole first cluster without an end marker.
    img = base();
    for (size_t off = 112; off + 8 <= 65536; off += 8) put_be32(&img[off], 0x11111111);
    EXPECT_EQ(open_error(img), "");
}

TEST(Qcow2Header, BackingName) {
    auto img = base();
    put_be64(&img[kHdrBackingOffset], 4096);
    put_be32(&img[kHdrBackingSize], 5000);
    EXPECT_NE(open_error(img).find("backing file name length"), std::string::npos);
    img = base();
    put_be64(&img[kHdrBackingOffset], 65530);
    put_be32(&img[kHdrBackingSize], 100);
    EXPECT_NE(open_error(img).find("outside the first cluster"), std::string::npos);
    img = base();
    put_be64(&img[kHdrBackingOffset], 4096);
    put_be32(&img[kHdrBackingSize], 12);
    std::memcpy(&img[4096], "/nonexistent", 12);
    EXPECT_NE(open_error(img).find("backing file"), std::string::npos);
    img = base();
    put_be64(&img[kHdrBackingOffset], 4096);
    put_be32(&img[kHdrBackingSize], 8);
    std::memcpy(&img[4096], "json:{}x", 8);
    EXPECT_NE(open_error(img).find("json"), std::string::npos);
}

TEST(Qcow2Header, CorruptBitRefusesWriteOpenOnly) {
    auto img = base();
    put_be64(&img[kHdrIncompat], kIncompatCorrupt);
    EXPECT_NE(open_error(img).find("marked corrupt"), std::string::npos);
    EXPECT_EQ(open_error(img, ReadOnly::Yes), "");
}

TEST(Qcow2Header, SnapshotTableHostile) {
    auto img = base();
    img.resize(5 * 65536, 0);
    put_be32(&img[kHdrNbSnapshots], 1);
    put_be64(&img[kHdrSnapshotsOffset], 4 * 65536);
    uint8_t* e = &img[4 * 65536];
    put_be64(e, 1ull << 50);  // L1 far past the end
    put_be32(e + 8, 16);
    EXPECT_NE(open_error(img).find("invalid L1 table"), std::string::npos);
    put_be64(e, 0);
    put_be32(e + 8, 0);
    put_be32(e + 36, 1 << 20);  // extra data
    EXPECT_NE(open_error(img).find("extra data too large"), std::string::npos);
    put_be32(e + 36, 0);
    put_be32(&img[kHdrNbSnapshots], 60000);  // entries run past the file
    EXPECT_NE(open_error(img).find("past the end"), std::string::npos);
    put_be32(&img[kHdrNbSnapshots], 1);
    put_be16(e + 14, 2);
    std::memcpy(e + 40, "s1", 2);
    auto d = open_mem(store_of(img), ReadOnly::Yes);
    ASSERT_TRUE(d.ok()) << d.error().message;
    ASSERT_EQ((*d)->snapshots().size(), 1u);
    EXPECT_EQ((*d)->snapshots()[0].name, "s1");
}

TEST(Qcow2Header, ParserOnTruncatedBuffersNeverReadsPast) {
    auto img = base();
    for (size_t n = 0; n < 200; n++) {
        std::vector<uint8_t> part(img.begin(), img.begin() + n);
        auto h = parse_header(part, part.size());
        (void)h;  // any result is fine; ASan/UBSan catch overreads
    }
    SUCCEED();
}

}  // namespace
}  // namespace mpq::block::qcow2
