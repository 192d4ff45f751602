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
                const bool commit = kc.writes == BlockDriver::MetadataWrites::PerRequest || rng() % 4 == 0;
                if (commit) {
                    ASSERT_TRUE((*d)->commit_metadata().ok());
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
        store = killed;
        acked = got;
    }
}

const KillCase kCases[] = {
    {"512B clusters, 2-table L2 cache", 9, 2 * 512, 0, BlockDriver::MetadataWrites::PerRequest},
    {"512B clusters, default cache", 9, 0, 0, BlockDriver::MetadataWrites::PerRequest},
    {"4k clusters, batched", 12, 0, 0, BlockDriver::MetadataWrites::Batched},
    {"512B clusters, 2-table cache, batched", 9, 2 * 512, 0, BlockDriver::MetadataWrites::Batched},
    {"64k clusters", 16, 0, 0, BlockDriver::MetadataWrites::PerRequest},
    {"4k clusters, lazy refcounts", 12, 0, kCompatLazyRefcounts, BlockDriver::MetadataWrites::PerRequest},
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

}  // namespace
}  // namespace mpq::block::qcow2
