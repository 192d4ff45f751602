// Builds qcow2 images in memory for the qcow2 unit tests.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "block/qcow2.h"
#include "block/qcow2_memfile.h"

namespace mpq::block::qcow2::testing {

struct ImageSpec {
    uint32_t version = 3;
    uint32_t cluster_bits = 16;
    uint64_t size = 1 << 20;
    uint32_t refcount_order = 4;
    uint64_t compat = 0;
};

// Layout: header | refcount table | refcount block | L1 table.
constexpr uint64_t kReftableCluster = 1, kRefblockCluster = 2, kL1Cluster = 3;

inline std::vector<uint8_t> build_image(const ImageSpec& s) {
    const uint64_t cs = 1ull << s.cluster_bits;
    const uint64_t per_l1 = cs * (cs / 8);
    const uint32_t l1_size = uint32_t((s.size + per_l1 - 1) / per_l1);
    const uint64_t l1_clusters = (uint64_t(l1_size) * 8 + cs - 1) / cs;
    const uint64_t used = kL1Cluster + std::max<uint64_t>(l1_clusters, 1);
    std::vector<uint8_t> img(used * cs, 0);
    uint8_t* h = img.data();
    put_be32(h + kHdrMagic, kMagic);
    put_be32(h + kHdrVersion, s.version);
    put_be32(h + kHdrClusterBits, s.cluster_bits);
    put_be64(h + kHdrSize, s.size);
    put_be32(h + kHdrL1Size, l1_size);
    put_be64(h + kHdrL1Offset, kL1Cluster * cs);
    put_be64(h + kHdrReftableOffset, kReftableCluster * cs);
    put_be32(h + kHdrReftableClusters, 1);
    if (s.version == 3) {
        put_be64(h + kHdrCompat, s.compat);
        put_be32(h + kHdrRefcountOrder, s.refcount_order);
        put_be32(h + kHdrHeaderLength, 112);
    }
    put_be64(img.data() + kReftableCluster * cs, kRefblockCluster * cs);
    uint8_t* rb = img.data() + kRefblockCluster * cs;
    const uint32_t order = s.version == 3 ? s.refcount_order : 4;
    for (uint64_t c = 0; c < used; c++) {
        const uint32_t bits = 1u << order;
        if (bits < 8) {
            rb[c * bits / 8] |= uint8_t(1u << ((c % (8 / bits)) * bits));
        } else {
            rb[c * bits / 8 + bits / 8 - 1] = 1;  // big-endian 1
        }
    }
    return img;
}

inline std::shared_ptr<MemStore> store_of(std::vector<uint8_t> img) {
    auto s = std::make_shared<MemStore>();
    s->data = std::move(img);
    s->durable = s->data;
    return s;
}

inline Result<std::unique_ptr<Qcow2Driver>> open_mem(std::shared_ptr<MemStore> s, ReadOnly ro = ReadOnly::No,
                                                     uint64_t l2_cache = 0) {
    DriveOptions o;
    o.file = "mem.qcow2";
    o.format = "qcow2";
    o.read_only = ro;
    o.l2_cache_size = l2_cache;
    ChainState chain;
    return Qcow2Driver::open(make_memory_file(std::move(s)), o, chain);
}

}  // namespace mpq::block::qcow2::testing
