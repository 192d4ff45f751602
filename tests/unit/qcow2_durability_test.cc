// qcow2 durability against the death of the process: a process killed at
// any instant, without a flush or a close, leaves an image that is
// consistent (leaked clusters allowed) and holds every write, write-zeroes
// and discard that was acknowledged. The image a killed process leaves is
// what reads of the file saw at the instant of the kill (the kernel keeps
// every completed write), so the kill is taken before each write to the
// file in turn.
#include <random>

#include <gtest/gtest.h>

#include "qcow2_test_util.h"

namespace mpq::block::qcow2 {
namespace {

using testing::build_image;
using testing::ImageSpec;
using testing::open_mem;
using testing::store_of;

std::vector<uint8_t> read_all(BlockDriver& d) {
    std::vector<uint8_t> out(d.length());
    auto st = d.pread(0, out);
    EXPECT_TRUE(st.ok()) << st.error().message;
    return out;
}

struct KillCase {
    const char* name;
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t l2_cache;  // bytes; 0 = default
    uint64_t compat;
    BlockDriver::MetadataWrites writes;
};

struct Op {
    uint64_t off, len;
    int kind;  // 0 write, 1 write-zeroes, 2 discard
    uint8_t pat;
};

// Applies `op` to a model of the disk.
void model_apply(std::vector<uint8_t>& m, const Op& op, uint64_t cs) {
    if (op.kind == 0) {
        std::fill(m.begin() + op.off, m.begin() + op.off + op.len, op.pat);
    } else if (op.kind == 1) {
        std::fill(m.begin() + op.off, m.begin() + op.off + op.len, 0);
    } else {
        uint64_t first = (op.off + cs - 1) / cs * cs, end = op.off + op.len;
        end = end == m.size() ? end : end / cs * cs;
        if (end > first) std::fill(m.begin() + first, m.begin() + end, 0);
    }
}

void kill_rounds(const KillCase& kc, uint64_t seed, int rounds) {
    ImageSpec spec;
    spec.version = kc.version;
    spec.cluster_bits = kc.cluster_bits;
    spec.size = 2 << 20;
    spec.compat = kc.compat;
    const uint64_t cs = 1ull << spec.cluster_bits;
    auto store = store_of(build_image(spec));
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> acked(spec.size, 0);  // what the disk must hold
    for (int round = 0; round < rounds; round++) {
        SCOPED_TRACE(::testing::Message() << kc.name << " seed " << seed << " round " << round);
        std::vector<uint8_t> image;
        // Bytes an operation not yet acknowledged at the kill may have changed.
        std::vector<bool> maybe(spec.size, false);
        {
            auto d = open_mem(store, ReadOnly::No, kc.l2_cache);
            ASSERT_TRUE(d.ok()) << d.error().message;
            (*d)->set_metadata_writes(kc.writes);
            store->has_killed = false;
            store->kill_at_write = int64_t(store->writes + rng() % 400);
            std::vector<uint8_t> next = acked;  // with the operations not yet committed
            std::vector<Op> pending;
            auto unacked = [&](const Op& op) {
                for (uint64_t i = op.off; i < op.off + op.len; i++) maybe[i] = true;
            };
            for (int n = 0; n < 80 && !store->has_killed; n++) {
                Op op;
                op.len = 1 + rng() % (4 * cs + 3000);
                op.len = std::min<uint64_t>(op.len, spec.size);
                op.off = rng() % (spec.size - op.len + 1);
                op.kind = int(rng() % 10);
                op.kind = op.kind < 6 ? 0 : op.kind < 8 ? 1 : 2;
                op.pat = uint8_t(1 + rng() % 255);
                Status st;
                if (op.kind == 0) {
                    std::vector<uint8_t> buf(op.len, op.pat);
                    st = (*d)->pwrite(op.off, buf);
                } else if (op.kind == 1) {
                    st = (*d)->write_zeroes(op.off, op.len);
                } else {
                    st = (*d)->discard(op.off, op.len);
                }
                ASSERT_TRUE(st.ok()) << st.error().message;
                model_apply(next, op, cs);
                pending.push_back(op);
                // Per request, the operation's return is its acknowledgement
                // (the driver commits by itself); batched, the commit is.
                const bool per_request = kc.writes == BlockDriver::MetadataWrites::PerRequest;
                if (per_request && store->has_killed) break;  // killed before it returned
                if (per_request || rng() % 4 == 0) {
                    if (!per_request) {
                        ASSERT_TRUE((*d)->commit_metadata().ok());
                    }
                    if (store->has_killed) break;  // killed before the acknowledgement
                    acked = next;
                    pending.clear();
                }
            }
            for (const auto& op : pending) unacked(op);
            // Not killed during the operations: killed right after the last one.
            image = store->has_killed ? store->killed : store->data;
            store->kill_at_write = -1;
        }
        auto killed = store_of(image);
        {
            // As the killed process left it, before any repair: a version 3
            // image may carry the dirty bit, but the refcounts written
            // before the tables never fall behind them (leaks only).
            auto ro = open_mem(store_of(image), ReadOnly::Yes);
            ASSERT_TRUE(ro.ok()) << ro.error().message;
            auto r = (*ro)->check();
            ASSERT_TRUE(r.ok()) << r.error().message;
            EXPECT_EQ(r->corruptions, 0u) << "before repair";
            EXPECT_EQ(r->copied_errors, 0u) << "before repair";
            auto got = read_all(**ro);
            for (uint64_t i = 0; i < spec.size; i++)
                if (!maybe[i] && got[i] != acked[i]) {
                    ADD_FAILURE() << "read-only: acknowledged byte " << i << " lost";
                    return;
                }
        }
        auto d = open_mem(killed);
        ASSERT_TRUE(d.ok()) << d.error().message;
        auto r = (*d)->check();
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_EQ(r->corruptions, 0u);
        EXPECT_EQ(r->copied_errors, 0u);
        auto got = read_all(**d);
        for (uint64_t i = 0; i < spec.size; i++)
            if (!maybe[i] && got[i] != acked[i]) {
                ADD_FAILURE() << "acknowledged byte " << i << " lost: " << int(got[i]) << " != " << int(acked[i]);
                return;
            }
        ASSERT_TRUE((*d)->close().ok());
        EXPECT_EQ(be64(&killed->data[kHdrIncompat]) & kIncompatDirty, 0u) << "not clean after close";
        store = killed;
        acked = got;
    }
}

const KillCase kCases[] = {
    {"512B clusters, 2-table L2 cache", 3, 9, 2 * 512, 0, BlockDriver::MetadataWrites::PerRequest},
    {"512B clusters, default cache", 3, 9, 0, 0, BlockDriver::MetadataWrites::PerRequest},
    {"4k clusters, batched", 3, 12, 0, 0, BlockDriver::MetadataWrites::Batched},
    {"512B clusters, 2-table cache, batched", 3, 9, 2 * 512, 0, BlockDriver::MetadataWrites::Batched},
    {"64k clusters", 3, 16, 0, 0, BlockDriver::MetadataWrites::PerRequest},
    {"4k clusters, lazy refcounts", 3, 12, 0, kCompatLazyRefcounts, BlockDriver::MetadataWrites::PerRequest},
    {"v2, 512B clusters, 2-table L2 cache", 2, 9, 2 * 512, 0, BlockDriver::MetadataWrites::PerRequest},
    {"v2, 4k clusters, batched", 2, 12, 0, 0, BlockDriver::MetadataWrites::Batched},
};

TEST(Qcow2Durability, KilledProcessLosesNoAcknowledgedUpdate) {
    for (const auto& kc : kCases)
        for (uint64_t seed = 1; seed <= 4; seed++) {
            kill_rounds(kc, seed * 7919 + kc.cluster_bits, 10);
            if (::testing::Test::HasFailure()) return;
        }
}

// Without a commit, a batched update is not acknowledged: the metadata
// stays in memory, and a kill then loses it (the other side of the test
// above, which shows that the kill point is where the test thinks it is).
TEST(Qcow2Durability, BatchedUpdatesReachTheFileOnlyAtCommit) {
    ImageSpec spec;
    spec.cluster_bits = 12;
    auto store = store_of(build_image(spec));
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok());
    (*d)->set_metadata_writes(BlockDriver::MetadataWrites::Batched);
    std::vector<uint8_t> buf(4096, 0x5a);
    ASSERT_TRUE((*d)->pwrite(8192, buf).ok());
    {
        auto before = open_mem(store_of(store->data), ReadOnly::Yes);
        ASSERT_TRUE(before.ok());
        std::vector<uint8_t> got(4096);
        ASSERT_TRUE((*before)->pread(8192, got).ok());
        EXPECT_EQ(got, std::vector<uint8_t>(4096, 0));  // the L2 entry is not in the file yet
    }
    ASSERT_TRUE((*d)->commit_metadata().ok());
    auto after = open_mem(store_of(store->data), ReadOnly::Yes);
    ASSERT_TRUE(after.ok());
    std::vector<uint8_t> got(4096);
    ASSERT_TRUE((*after)->pread(8192, got).ok());
    EXPECT_EQ(got, buf);
}

bool dirty_in_file(const MemStore& s) { return be64(&s.data[kHdrIncompat]) & kIncompatDirty; }

// Version 3: the first allocating write after open or after a flush sets
// the dirty bit durably (the one fdatasync), the next ones write their
// tables without any, except before the L1 entry of a new L2 table; the
// flush clears the bit. A kill before each write
// of that sequence (between the dirty bit and the tables, between the
// tables) leaves an image with every acknowledged write and no corruption,
// before and after the repair the next open does.
TEST(Qcow2Durability, DirtyBitThenUnorderedMetadataUntilFlush) {
    ImageSpec spec;
    spec.cluster_bits = 12;
    spec.size = 4 << 20;
    const std::vector<uint8_t> a(4096, 0xa1), b(4096, 0xb2), c(4096, 0xc3);
    // The sequence, without a kill: counts the writes and the barriers.
    uint64_t writes_total = 0;
    {
        auto store = store_of(build_image(spec));
        auto d = open_mem(store);
        ASSERT_TRUE(d.ok());
        EXPECT_FALSE(dirty_in_file(*store));
        const uint64_t w0 = store->writes, f0 = store->flushes;
        ASSERT_TRUE((*d)->pwrite(0, a).ok());
        EXPECT_TRUE(dirty_in_file(*store));
        // The dirty bit, the file extended ahead, the new L2 table's L1 entry.
        EXPECT_EQ(store->flushes - f0, 3u);
        const uint64_t f1 = store->flushes;
        ASSERT_TRUE((*d)->pwrite(8192, a).ok());  // a new cluster, same L2 table
        EXPECT_EQ(store->flushes, f1) << "no barrier under the dirty bit";
        ASSERT_TRUE((*d)->pwrite(3 << 20, b).ok());  // a new L2 table too
        EXPECT_EQ(store->flushes - f1, 1u) << "one barrier: the new L2 table before its L1 entry";
        ASSERT_TRUE((*d)->flush().ok());
        EXPECT_FALSE(dirty_in_file(*store));
        const uint64_t f2 = store->flushes;
        ASSERT_TRUE((*d)->pwrite(1 << 20, c).ok());
        EXPECT_TRUE(dirty_in_file(*store));
        EXPECT_EQ(store->flushes - f2, 1u) << "set again after the flush";
        writes_total = store->writes - w0;
    }
    for (uint64_t k = 0; k <= writes_total; k++) {
        SCOPED_TRACE(::testing::Message() << "killed before write " << k);
        auto store = store_of(build_image(spec));
        std::vector<uint8_t> model(spec.size, 0), maybe_new(spec.size, 0);
        {
            auto d = open_mem(store);
            ASSERT_TRUE(d.ok());
            store->kill_at_write = int64_t(store->writes + k);
            auto step = [&](uint64_t off, const std::vector<uint8_t>& buf, bool flush) {
                if (store->has_killed) return;
                std::copy(buf.begin(), buf.end(), maybe_new.begin() + off);
                ASSERT_TRUE((*d)->pwrite(off, buf).ok());
                if (flush) {
                    ASSERT_TRUE((*d)->flush().ok());
                }
                if (!store->has_killed) std::copy(buf.begin(), buf.end(), model.begin() + off);
            };
            step(0, a, false);
            step(8192, a, false);
            step(3 << 20, b, true);
            step(1 << 20, c, false);
        }
        const auto image = store->has_killed ? store->killed : store->data;
        for (auto ro : {ReadOnly::Yes, ReadOnly::No}) {
            auto killed = store_of(image);
            auto d = open_mem(killed, ro);
            ASSERT_TRUE(d.ok()) << d.error().message;
            auto r = (*d)->check();
            ASSERT_TRUE(r.ok());
            EXPECT_EQ(r->corruptions, 0u);
            EXPECT_EQ(r->copied_errors, 0u);
            if (ro == ReadOnly::No) {
                EXPECT_EQ(r->leaks, 0u) << "the repair left leaks";
            }
            auto got = read_all(**d);
            for (uint64_t i = 0; i < spec.size; i++)
                if (got[i] != model[i] && got[i] != maybe_new[i]) {
                    ADD_FAILURE() << "byte " << i << ": " << int(got[i]);
                    return;
                }
        }
    }
}

// Version 2 has no dirty bit: every allocating request keeps its barriers.
TEST(Qcow2Durability, Version2KeepsTheBarriers) {
    ImageSpec spec;
    spec.version = 2;
    spec.cluster_bits = 12;
    auto store = store_of(build_image(spec));
    auto d = open_mem(store);
    ASSERT_TRUE(d.ok());
    const std::vector<uint8_t> a(4096, 0x11);
    for (uint64_t off : {uint64_t(0), uint64_t(8192)}) {
        const uint64_t f0 = store->flushes;
        ASSERT_TRUE((*d)->pwrite(off, a).ok());
        EXPECT_GE(store->flushes - f0, 1u);
    }
}

}  // namespace
}  // namespace mpq::block::qcow2
