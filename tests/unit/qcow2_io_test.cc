// qcow2 data path: cluster sizes, refcount widths, discard, zero clusters,
// the L2 cache bound, power failures at any point, hostile tables touched
// by I/O, dirty images and backing chains.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "qcow2_test_util.h"

namespace mpq::block::qcow2 {
namespace {

using testing::build_image;
using testing::ImageSpec;
using testing::open_mem;
using testing::store_of;

void expect_clean(Qcow2Driver& d, bool allow_leaks = false) {
    auto r = d.check();
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->corruptions, 0u);
    EXPECT_EQ(r->copied_errors, 0u);
    if (!allow_leaks) {
        EXPECT_EQ(r->leaks, 0u);
    }
}

std::vector<uint8_t> read_all(BlockDriver& d) {
    std::vector<uint8_t> out(d.length());
    auto st = d.pread(0, out);
    EXPECT_TRUE(st.ok()) << st.error().message;
    return out;
}

// Random writes/discards/zeroes applied to the driver and a model.
void random_io(BlockDriver& d, std::vector<uint8_t>& model, std::mt19937_64& rng, int ops, uint64_t cs) {
    const uint64_t size = model.size();
    for (int i = 0; i < ops; i++) {
        int kind = int(rng() % 10);
        uint64_t len = 1 + rng() % std::min<uint64_t>(size, 3 * cs + 1000);
        uint64_t off = rng() % (size - len + 1);
        if (kind < 6) {
            std::vector<uint8_t> buf(len, uint8_t(1 + rng() % 255));
            auto st = d.pwrite(off, buf);
            ASSERT_TRUE(st.ok()) << st.error().message;
            std::copy(buf.begin(), buf.end(), model.begin() + off);
        } else if (kind < 8) {
            auto st = d.write_zeroes(off, len);
            ASSERT_TRUE(st.ok()) << st.error().message;
            std::fill(model.begin() + off, model.begin() + off + len, 0);
        } else {
            auto st = d.discard(off, len);
            ASSERT_TRUE(st.ok()) << st.error().message;
            uint64_t first = (off + cs - 1) / cs * cs, end = off + len;
            end = end == size ? size : end / cs * cs;
            if (end > first) std::fill(model.begin() + first, model.begin() + end, 0);
        }
    }
}

struct Geometry {
    uint32_t cluster_bits;
    uint32_t refcount_order;
};

class Qcow2Geometry : public ::testing::TestWithParam<Geometry> {};

TEST_P(Qcow2Geometry, WritesReadBackAcrossReopenAndStayConsistent) {
    ImageSpec spec;
    spec.cluster_bits = GetParam().cluster_bits;
    spec.refcount_order = GetParam().refcount_order;
    spec.size = spec.cluster_bits >= 20 ? (16u << 20) : (3u << 20);
    const uint64_t cs = 1ull << spec.cluster_bits;
    auto store = store_of(build_image(spec));
    std::vector<uint8_t> model(spec.size, 0);
    std::mt19937_64 rng(spec.cluster_bits * 100 + spec.refcount_order);
    {
        auto d = open_mem(store);
        ASSERT_TRUE(d.ok()) << d.error().message;
        random_io(**d, model, rng, spec.cluster_bits >= 20 ? 12 : 300, cs);
        // Fill most of the disk so small clusters need more refcount blocks
        // and, for wide refcounts, a bigger refcount table.
        std::vector<uint8_t> big(spec.size / 2, 0x77);
        ASSERT_TRUE((*d)->pwrite(spec.size / 4, big).ok());
        std::copy(big.begin(), big.end(), model.begin() + spec.size / 4);
        EXPECT_EQ(read_all(**d), model);
        expect_clean(**d);
        ASSERT_TRUE((*d)->close().ok());
    }
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(read_all(**d), model);
    expect_clean(**d);
}

INSTANTIATE_TEST_SUITE_P(All, Qcow2Geometry,
                         ::testing::Values(Geometry{9, 0}, Geometry{9, 1}, Geometry{9, 2}, Geometry{9, 3},
                                           Geometry{9, 4}, Geometry{9, 5}, Geometry{9, 6}, Geometry{12, 0},
                                           Geometry{12, 6}, Geometry{16, 4}, Geometry{16, 0}, Geometry{16, 6},
                                           Geometry{21, 4}, Geometry{21, 0}));

TEST(Qcow2Io, RefcountsFollowAllocationAndDiscard) {
    ImageSpec spec;
    spec.cluster_bits = 12;
    auto store = store_of(build_image(spec));
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok());
    std::vector<uint8_t> buf(256 * 1024, 0xab);
    ASSERT_TRUE((*d)->pwrite(0, buf).ok());
    ASSERT_TRUE((*d)->flush().ok());
    const uint64_t size_after_write = store->data.size();
    // Header, reftable, refblock, L1, one L2 and 64 data clusters (the file
    // may extend past them: it is lengthened ahead of new clusters).
    const uint64_t used = 5 + 64;
    ASSERT_GE(size_after_write / 4096, used);
    for (uint64_t c = 0; c < used; c++) {
        auto rc = (*d)->refcount(c * 4096);
        ASSERT_TRUE(rc.ok());
        EXPECT_EQ(*rc, 1u) << c;
    }
    ASSERT_TRUE((*d)->discard(0, buf.size()).ok());
    ASSERT_TRUE((*d)->flush().ok());
    for (uint64_t c = 5; c < size_after_write / 4096; c++) EXPECT_EQ(*(*d)->refcount(c * 4096), 0u) << c;
    EXPECT_EQ(*(*d)->refcount(used * 4096), 0u) << "past the used clusters";
    std::vector<uint8_t> back(buf.size(), 1);
    ASSERT_TRUE((*d)->pread(0, back).ok());
    EXPECT_EQ(back, std::vector<uint8_t>(buf.size(), 0));
    // Freed clusters are reused: the file does not grow.
    ASSERT_TRUE((*d)->pwrite(512 * 1024, buf).ok());
    ASSERT_TRUE((*d)->flush().ok());
    EXPECT_EQ(store->data.size(), size_after_write);
    expect_clean(**d);
}

TEST(Qcow2Io, WriteZeroesUsesZeroClustersAndFreesData) {
    ImageSpec spec;
    spec.cluster_bits = 12;
    auto store = store_of(build_image(spec));
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok());
    std::vector<uint8_t> buf(64 * 1024, 0x42);
    ASSERT_TRUE((*d)->pwrite(0, buf).ok());
    ASSERT_TRUE((*d)->flush().ok());
    const uint64_t sz = store->data.size();
    ASSERT_TRUE((*d)->write_zeroes(4096, 32768).ok());
    ASSERT_TRUE((*d)->write_zeroes(100, 50).ok());  // partial: real zeroes
    ASSERT_TRUE((*d)->flush().ok());
    EXPECT_EQ(store->data.size(), sz);
    std::vector<uint8_t> back(buf.size());
    ASSERT_TRUE((*d)->pread(0, back).ok());
    std::fill(buf.begin() + 4096, buf.begin() + 4096 + 32768, 0);
    std::fill(buf.begin() + 100, buf.begin() + 150, 0);
    EXPECT_EQ(back, buf);
    expect_clean(**d);
    // The L2 table now holds zero-flagged entries for clusters 1..8.
    uint64_t l2 = be64(&store->data[testing::kL1Cluster * 4096]) & kL1OffsetMask;
    ASSERT_NE(l2, 0u);
    for (int i = 1; i <= 8; i++) EXPECT_EQ(be64(&store->data[l2 + i * 8]), kFlagZero) << i;
}

TEST(Qcow2Io, V2ZeroWritesWithoutZeroFlag) {
    ImageSpec spec;
    spec.version = 2;
    spec.cluster_bits = 12;
    auto store = store_of(build_image(spec));
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok());
    std::vector<uint8_t> model(spec.size, 0);
    std::mt19937_64 rng(7);
    random_io(**d, model, rng, 300, 4096);
    EXPECT_EQ(read_all(**d), model);
    expect_clean(**d);
    uint64_t l2 = be64(&store->data[testing::kL1Cluster * 4096]) & kL1OffsetMask;
    for (int i = 0; l2 && i < 512; i++) EXPECT_EQ(be64(&store->data[l2 + i * 8]) & kFlagZero, 0u);
}

TEST(Qcow2Io, L2CacheStaysWithinBound) {
    ImageSpec spec;
    spec.cluster_bits = 9;  // one L2 table maps 32 KiB
    spec.size = 4 << 20;
    auto store = store_of(build_image(spec));
    std::vector<uint8_t> model(spec.size, 0);
    {
        auto d = open_mem(store, ReadOnly::No, 3 * 512);
        ASSERT_TRUE(d.ok());
        EXPECT_EQ((*d)->cache_stats().l2_capacity, 3u);
        for (uint64_t off = 0; off < spec.size; off += 32768 + 512) {
            uint8_t b = uint8_t(off / 32768 + 1);
            ASSERT_TRUE((*d)->pwrite(off, {&b, 1}).ok());
            model[off] = b;
        }
        EXPECT_EQ(read_all(**d), model);
        auto s = (*d)->cache_stats();
        EXPECT_LE(s.l2_peak, 3u);
        EXPECT_LE(s.rb_entries, s.rb_capacity);
        EXPECT_GT(s.l2_loads, 100u);  // tables were evicted and reloaded
        expect_clean(**d);
    }
    auto d = open_mem(store, ReadOnly::Yes);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(read_all(**d), model);
    // Default: enough tables for the whole disk (128 tables here).
    EXPECT_EQ((*d)->cache_stats().l2_capacity, 128u);
}

void power_failure_rounds(uint64_t compat, bool inject_errors) {
    ImageSpec spec;
    spec.cluster_bits = 9;  // many small L2 tables and refcount blocks
    spec.size = 2 << 20;
    spec.compat = compat;
    auto store = store_of(build_image(spec));
    std::mt19937_64 rng(compat * 31 + inject_errors);
    std::vector<uint8_t> flushed(spec.size, 0), model(spec.size, 0);
    for (int round = 0; round < 25; round++) {
        store->track_durability = true;
        store->durable = store->data;
        store->unflushed.clear();
        std::vector<uint8_t> crashed;
        std::vector<bool> dirty(spec.size, false);
        {
            // A two-table L2 cache makes evictions (and their ordering) common.
            auto d = open_mem(store, ReadOnly::No, 2 * 512);
            ASSERT_TRUE(d.ok()) << round << ": " << d.error().message;
            if (inject_errors) store->fail_write_at = int64_t(store->writes + rng() % 60);
            store->has_crashed = false;
            store->crash_at_write = int64_t(store->writes + rng() % 150);
            store->rng.seed(rng());
            for (int op = 0; op < 40 && !store->has_crashed; op++) {
                uint64_t len = 1 + rng() % 20000, off = rng() % (spec.size - len);
                Status st;
                int kind = int(rng() % 8);
                if (kind < 7)
                    for (uint64_t i = off; i < off + len; i++) dirty[i] = true;
                if (kind < 5) {
                    std::vector<uint8_t> buf(len, uint8_t(rng()));
                    st = (*d)->pwrite(off, buf);
                } else if (kind < 6) {
                    st = (*d)->write_zeroes(off, len);
                } else if (kind < 7) {
                    st = (*d)->discard(off, len);
                } else {
                    st = (*d)->flush();
                    // A flush interrupted by the power failure did not complete.
                    if (st && !store->has_crashed) {
                        flushed = read_all(**d);
                        std::fill(dirty.begin(), dirty.end(), false);
                    }
                }
                if (!st) {
                    ASSERT_EQ(st.error().err, EIO) << st.error().message;
                }
            }
            crashed = store->has_crashed ? store->crashed : store->crash_image(rng);
            store->fail_write_at = -1;
            store->crash_at_write = -1;
        }
        store = store_of(crashed);
        auto d = open_mem(store);
        ASSERT_TRUE(d.ok()) << round << ": " << d.error().message;
        auto now = read_all(**d);
        for (uint64_t i = 0; i < spec.size; i++)
            if (!dirty[i] && now[i] != flushed[i]) {
                ADD_FAILURE() << "round " << round << ": flushed byte " << i << " lost";
                break;
            }
        expect_clean(**d, true);
        flushed = now;
    }
}

TEST(Qcow2Crash, PowerFailureLeavesConsistentImage) { power_failure_rounds(0, false); }
TEST(Qcow2Crash, PowerFailureWithLazyRefcountsRebuilds) { power_failure_rounds(kCompatLazyRefcounts, false); }
TEST(Qcow2Crash, WriteErrorsThenPowerFailure) { power_failure_rounds(0, true); }

// ---- hostile tables touched by I/O ----

struct Hostile {
    std::shared_ptr<MemStore> store;
    std::unique_ptr<Qcow2Driver> drv;
};

std::vector<uint8_t> image_with_l2(uint64_t l2_entry_0) {
    ImageSpec spec;  // 64 KiB clusters
    auto img = build_image(spec);
    img.resize(6 * 65536, 0);
    put_be64(&img[testing::kL1Cluster * 65536], 4 * 65536 | kFlagCopied);
    put_be64(&img[4 * 65536], l2_entry_0);
    return img;
}

enum class Others : uint8_t { Readable, Unknown };

void expect_eio_read(std::vector<uint8_t> img, const char* what, Others others = Others::Readable) {
    auto d = open_mem(store_of(std::move(img)));
    ASSERT_TRUE(d.ok()) << d.error().message;
    std::vector<uint8_t> buf(4096);
    auto st = (*d)->pread(0, buf);
    ASSERT_FALSE(st.ok()) << what;
    EXPECT_EQ(st.error().err, EIO) << st.error().message;
    // Other clusters stay readable.
    if (others == Others::Readable) {
        EXPECT_TRUE((*d)->pread(65536 * 2, buf).ok());
    }
}

TEST(Qcow2Hostile, BadL2Offsets) {
    ImageSpec spec;
    auto img = build_image(spec);
    put_be64(&img[testing::kL1Cluster * 65536], 4 * 65536 + 512);
    expect_eio_read(img, "unaligned L2", Others::Unknown);
    put_be64(&img[testing::kL1Cluster * 65536], 1ull << 50);
    expect_eio_read(img, "L2 past EOF", Others::Unknown);
    put_be64(&img[testing::kL1Cluster * 65536], testing::kReftableCluster * 65536);
    expect_eio_read(img, "L2 on the refcount table", Others::Unknown);
    put_be64(&img[testing::kL1Cluster * 65536], testing::kL1Cluster * 65536);
    expect_eio_read(img, "L2 on the L1 table", Others::Unknown);
}

TEST(Qcow2Hostile, BadDataOffsets) {
    expect_eio_read(image_with_l2((5 * 65536 + 512) | kFlagCopied), "unaligned data");
    expect_eio_read(image_with_l2(kFlagCompressed | 5 * 65536), "garbage compressed");
    expect_eio_read(image_with_l2(kFlagCompressed | (1ull << 45)), "compressed past EOF");
    expect_eio_read(image_with_l2(kFlagCompressed | 65536), "compressed over the refcount table");
    // Data past EOF was never written: zeroes.
    auto d = open_mem(store_of(image_with_l2((1ull << 40) | kFlagCopied)));
    ASSERT_TRUE(d.ok());
    std::vector<uint8_t> buf(4096, 1);
    ASSERT_TRUE((*d)->pread(0, buf).ok());
    EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0));
    // Writing into a data cluster that is really the L1 table is refused.
    auto d2 = open_mem(store_of(image_with_l2(testing::kL1Cluster * 65536 | kFlagCopied)));
    ASSERT_TRUE(d2.ok());
    auto st = (*d2)->pwrite(0, buf);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EIO);
}

TEST(Qcow2Hostile, RefcountStructures) {
    ImageSpec spec;
    auto img = build_image(spec);
    put_be64(&img[testing::kReftableCluster * 65536], testing::kRefblockCluster * 65536 + 4096);
    auto d = open_mem(store_of(img));
    ASSERT_TRUE(d.ok());
    std::vector<uint8_t> buf(4096, 9);
    auto st = (*d)->pwrite(0, buf);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EIO);

    // Refcounts claiming the L1 table is free: allocation must not hand it out.
    img = build_image(spec);
    img[testing::kRefblockCluster * 65536 + testing::kL1Cluster * 2 + 1] = 0;
    d = open_mem(store_of(img));
    ASSERT_TRUE(d.ok());
    st = (*d)->pwrite(0, buf);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("overlaps the L1 table"), std::string::npos) << st.error().message;
}

TEST(Qcow2Hostile, RefcountOverflowOnRebuild) {
    ImageSpec spec;
    spec.refcount_order = 0;  // 1-bit refcounts
    auto img = build_image(spec);
    img.resize(6 * 65536, 0);
    put_be64(&img[testing::kL1Cluster * 65536], 4 * 65536 | kFlagCopied);
    put_be64(&img[4 * 65536], 5 * 65536);
    put_be64(&img[4 * 65536 + 8], 5 * 65536);  // two references, 1-bit refcount
    put_be64(&img[kHdrIncompat], kIncompatDirty);
    auto d = open_mem(store_of(img));
    ASSERT_FALSE(d.ok());
    EXPECT_NE(d.error().message.find("refcount overflow"), std::string::npos) << d.error().message;
    auto ro = open_mem(store_of(img), ReadOnly::Yes);  // reads need no refcounts
    EXPECT_TRUE(ro.ok());
}

TEST(Qcow2Io, DirtyImageRefcountsRebuilt) {
    ImageSpec spec;
    spec.cluster_bits = 12;
    auto store = store_of(build_image(spec));
    std::vector<uint8_t> model(spec.size, 0);
    std::mt19937_64 rng(3);
    {
        auto d = open_mem(store);
        ASSERT_TRUE(d.ok());
        random_io(**d, model, rng, 200, 4096);
    }
    // Lose every refcount and mark the image dirty.
    std::fill(store->data.begin() + testing::kRefblockCluster * 4096,
              store->data.begin() + (testing::kRefblockCluster + 1) * 4096, 0);
    put_be64(&store->data[kHdrIncompat], kIncompatDirty);
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_TRUE((*d)->rebuilt_refcounts());
    EXPECT_EQ(be64(&store->data[kHdrIncompat]) & kIncompatDirty, 0u);
    EXPECT_EQ(read_all(**d), model);
    expect_clean(**d, true);  // the old refcount structures are now leaked... or reused
    random_io(**d, model, rng, 100, 4096);
    EXPECT_EQ(read_all(**d), model);
    expect_clean(**d, true);
}

TEST(Qcow2Io, LazyRefcountsSetDirtyBitWhileOpen) {
    ImageSpec spec;
    spec.compat = kCompatLazyRefcounts;
    auto store = store_of(build_image(spec));
    {
        auto d = open_mem(store);
        ASSERT_TRUE(d.ok());
        EXPECT_EQ(be64(&store->data[kHdrIncompat]) & kIncompatDirty, kIncompatDirty);
        std::vector<uint8_t> buf(1000, 3);
        ASSERT_TRUE((*d)->pwrite(70000, buf).ok());
    }
    EXPECT_EQ(be64(&store->data[kHdrIncompat]) & kIncompatDirty, 0u);
}

TEST(Qcow2Io, ReadOnlyRefusesWrites) {
    auto d = open_mem(store_of(build_image(ImageSpec{})), ReadOnly::Yes);
    ASSERT_TRUE(d.ok());
    uint8_t b = 1;
    auto st = (*d)->pwrite(0, {&b, 1});
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EROFS);
    EXPECT_FALSE((*d)->pread((1 << 20) - 1, {&b, 2}).ok());  // past the end
}

// ---- backing files (real files: names are resolved on the host) ----

class Qcow2Backing : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/qcow2-backing-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::string write_qcow2(const std::string& name, const std::string& backing, uint64_t size = 1 << 20,
                            const std::string& fmt = "") {
        ImageSpec spec;
        spec.size = size;
        auto img = build_image(spec);
        if (!backing.empty()) {
            put_be64(&img[kHdrBackingOffset], 1024);
            put_be32(&img[kHdrBackingSize], uint32_t(backing.size()));
            std::memcpy(&img[1024], backing.data(), backing.size());
        }
        if (!fmt.empty()) {
            put_be32(&img[112], kExtBackingFormat);
            put_be32(&img[116], uint32_t(fmt.size()));
            std::memcpy(&img[120], fmt.data(), fmt.size());
        }
        std::string path = dir_ + "/" + name;
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(img.data()), img.size());
        return path;
    }
    Result<std::unique_ptr<BlockDriver>> open(const std::string& path) {
        auto f = open_host_file(path, ReadOnly::No);
        if (!f) return f.take_error();
        DriveOptions o;
        o.file = path;
        return open_qcow2(std::move(*f), o);
    }
    std::string dir_;
};

// A backing file opened through ChainState::open_file: no host file is
// looked at, the name reaches the opener as written in the image, reads of
// unallocated clusters come from it, and a loop by name is still refused.
TEST(Qcow2BackingOpener, BackingServedFromMemory) {
    ImageSpec spec;
    spec.size = 1 << 20;
    auto img = build_image(spec);
    const std::string name = "no-such-dir/base.raw";
    put_be64(&img[kHdrBackingOffset], 1024);
    put_be32(&img[kHdrBackingSize], uint32_t(name.size()));
    std::memcpy(&img[1024], name.data(), name.size());
    std::vector<std::string> asked;
    ChainState chain;
    chain.open_file = [&](const std::string& path) -> Result<std::unique_ptr<BlockDriver>> {
        asked.push_back(path);
        auto base = std::make_shared<MemStore>();
        base->data.assign(256 * 1024, 0x5b);
        return make_memory_file(base);
    };
    DriveOptions o;
    o.file = "top.qcow2";
    o.read_only = ReadOnly::Yes;
    auto d = Qcow2Driver::open(make_memory_file(store_of(img)), o, chain);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(asked, std::vector<std::string>({name}));
    std::vector<uint8_t> buf(4096, 0);
    ASSERT_TRUE((*d)->pread(65536, buf).ok());
    EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0x5b));
    ASSERT_TRUE((*d)->pread(256 * 1024, buf).ok());  // past the backing file's end
    EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0));

    // The opener hands back this same image under the same name: a loop.
    ChainState loop_chain;
    loop_chain.open_file = [&](const std::string&) -> Result<std::unique_ptr<BlockDriver>> {
        return make_memory_file(store_of(img));
    };
    auto looped = Qcow2Driver::open(make_memory_file(store_of(img)), o, loop_chain);
    ASSERT_FALSE(looped.ok());
    EXPECT_EQ(looped.error().err, ELOOP);
}

TEST_F(Qcow2Backing, LoopsAndDepthRefused) {
    write_qcow2("a.qcow2", "b.qcow2");
    write_qcow2("b.qcow2", "a.qcow2");
    auto r = open(dir_ + "/a.qcow2");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("loop"), std::string::npos) << r.error().message;
    write_qcow2("self.qcow2", "self.qcow2");
    r = open(dir_ + "/self.qcow2");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("loop"), std::string::npos) << r.error().message;
    for (int i = 0; i < 20; i++)
        write_qcow2(fmt::format("c{}.qcow2", i), i == 19 ? "" : fmt::format("c{}.qcow2", i + 1));
    r = open(dir_ + "/c0.qcow2");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("deeper"), std::string::npos) << r.error().message;
    write_qcow2("fmt.qcow2", "a.qcow2", 1 << 20, "vmdk");
    r = open(dir_ + "/fmt.qcow2");
    ASSERT_FALSE(r.ok());
}

TEST_F(Qcow2Backing, RawBackingReadsAndCopyOnWrite) {
    std::vector<uint8_t> base(600000);
    std::mt19937_64 rng(5);
    for (auto& b : base) b = uint8_t(rng());
    std::ofstream(dir_ + "/base.raw", std::ios::binary).write(reinterpret_cast<const char*>(base.data()), base.size());
    write_qcow2("top.qcow2", "base.raw", 1 << 20, "raw");
    std::vector<uint8_t> model(1 << 20, 0);
    std::copy(base.begin(), base.end(), model.begin());
    {
        auto d = open(dir_ + "/top.qcow2");
        ASSERT_TRUE(d.ok()) << d.error().message;
        EXPECT_EQ(read_all(**d), model);
        std::vector<uint8_t> w(1000, 0xee);
        ASSERT_TRUE((*d)->pwrite(70000, w).ok());  // partial cluster: rest comes from the backing file
        std::copy(w.begin(), w.end(), model.begin() + 70000);
        ASSERT_TRUE((*d)->discard(0, 65536).ok());  // v3 with backing: zero cluster
        std::fill(model.begin(), model.begin() + 65536, 0);
        EXPECT_EQ(read_all(**d), model);
    }
    auto d = open(dir_ + "/top.qcow2");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(read_all(**d), model);
}

}  // namespace
}  // namespace mpq::block::qcow2

namespace mpq::block::qcow2 {
namespace {

TEST(Qcow2Check, DetectsMissingRefcountAndLeak) {
    ImageSpec spec;
    spec.cluster_bits = 12;
    auto store = store_of(build_image(spec));
    {
        auto d = open_mem(store);
        ASSERT_TRUE(d.ok());
        std::vector<uint8_t> buf(8192, 1);
        ASSERT_TRUE((*d)->pwrite(0, buf).ok());
    }
    // Clusters 4 (L2), 5 and 6 (data): drop 6's refcount, leak cluster 9.
    uint8_t* rb = &store->data[testing::kRefblockCluster * 4096];
    ASSERT_EQ(be16(rb + 6 * 2), 1u);
    put_be16(rb + 6 * 2, 0);
    put_be16(rb + 9 * 2, 1);
    store->data.resize(12 * 4096);  // cluster 9 inside the file: a leak, not noise past EOF
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok());
    auto r = (*d)->check();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->corruptions, 1u);
    EXPECT_EQ(r->leaks, 1u);
    EXPECT_EQ(r->copied_errors, 0u);
}

}  // namespace
}  // namespace mpq::block::qcow2
