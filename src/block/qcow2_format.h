// qcow2 on-disk format: constants, the parsed header, and the pure parsers
// for the header, its extensions and the snapshot table. Everything here
// treats the image as hostile: every size is checked before it is used.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "util/result.h"

namespace mpq::block::qcow2 {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"

// Header field offsets (big-endian on disk).
constexpr size_t kHdrMagic = 0;            // u32 magic
constexpr size_t kHdrVersion = 4;          // u32 2 or 3
constexpr size_t kHdrBackingOffset = 8;    // u64 backing file name offset
constexpr size_t kHdrBackingSize = 16;     // u32 backing file name length
constexpr size_t kHdrClusterBits = 20;     // u32 log2(cluster size)
constexpr size_t kHdrSize = 24;            // u64 virtual size
constexpr size_t kHdrCryptMethod = 32;     // u32 0 = none
constexpr size_t kHdrL1Size = 36;          // u32 L1 entries
constexpr size_t kHdrL1Offset = 40;        // u64 L1 table offset
constexpr size_t kHdrReftableOffset = 48;  // u64 refcount table offset
constexpr size_t kHdrReftableClusters = 56;  // u32 refcount table clusters
constexpr size_t kHdrNbSnapshots = 60;     // u32 snapshot count
constexpr size_t kHdrSnapshotsOffset = 64; // u64 snapshot table offset
constexpr size_t kHdrV2Length = 72;        // end of the v2 header
constexpr size_t kHdrIncompat = 72;        // u64 incompatible features (v3)
constexpr size_t kHdrCompat = 80;          // u64 compatible features (v3)
constexpr size_t kHdrAutoclear = 88;       // u64 autoclear features (v3)
constexpr size_t kHdrRefcountOrder = 96;   // u32 log2(refcount bits) (v3)
constexpr size_t kHdrHeaderLength = 100;   // u32 header length (v3)
constexpr size_t kHdrCompressionType = 104;  // u8 compression type (v3, optional)
constexpr size_t kHdrV3MinLength = 104;

constexpr uint64_t kIncompatDirty = 1ull << 0;        // refcounts may be stale
constexpr uint64_t kIncompatCorrupt = 1ull << 1;      // metadata known corrupt
constexpr uint64_t kIncompatDataFile = 1ull << 2;     // external data file
constexpr uint64_t kIncompatCompression = 1ull << 3;  // compression_type field valid
constexpr uint64_t kIncompatExtL2 = 1ull << 4;        // subclusters
constexpr uint64_t kIncompatSupported = kIncompatDirty | kIncompatCorrupt | kIncompatCompression;
constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;

constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xe2792aca;
constexpr uint32_t kExtFeatureTable = 0x6803f857;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtCrypto = 0x0537be77;
constexpr uint32_t kExtDataFile = 0x44415441;

constexpr uint64_t kL1OffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kL2OffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kReftableOffsetMask = 0xfffffffffffffe00ull;
constexpr uint64_t kFlagCopied = 1ull << 63;      // refcount is exactly 1
constexpr uint64_t kFlagCompressed = 1ull << 62;  // compressed cluster descriptor
constexpr uint64_t kFlagZero = 1ull << 0;         // reads as zeros (v3)

constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
constexpr uint64_t kMaxL1Bytes = 32ull << 20;        // as QEMU: 32 MiB of L1
constexpr uint64_t kMaxReftableBytes = 8ull << 20;   // as QEMU: 8 MiB of refcount table
constexpr uint32_t kMaxSnapshots = 65536;
constexpr uint64_t kMaxSnapshotTableBytes = 64ull << 20;
constexpr uint32_t kMaxSnapshotExtra = 1024;
constexpr uint64_t kMaxVirtualSize = 1ull << 61;
constexpr uint32_t kMaxBackingName = 1023;

constexpr uint8_t kCompressionZlib = 0;
constexpr uint8_t kCompressionZstd = 1;

inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}
inline uint64_t be64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}
inline void put_be16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void put_be32(uint8_t* p, uint32_t v) {
    v = __builtin_bswap32(v);
    std::memcpy(p, &v, 4);
}
inline void put_be64(uint8_t* p, uint64_t v) {
    v = __builtin_bswap64(v);
    std::memcpy(p, &v, 8);
}

struct FeatureName {
    uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
    uint8_t bit = 0;
    std::string name;
};

struct Header {
    uint32_t version = 0;
    uint64_t backing_file_offset = 0;
    uint32_t backing_file_size = 0;
    uint32_t cluster_bits = 0;
    uint64_t size = 0;
    uint32_t crypt_method = 0;
    uint32_t l1_size = 0;
    uint64_t l1_table_offset = 0;
    uint64_t refcount_table_offset = 0;
    uint32_t refcount_table_clusters = 0;
    uint32_t nb_snapshots = 0;
    uint64_t snapshots_offset = 0;
    uint64_t incompatible = 0;
    uint64_t compatible = 0;
    uint64_t autoclear = 0;
    uint32_t refcount_order = 4;
    uint32_t header_length = 0;
    uint8_t compression_type = kCompressionZlib;

    // From the header extensions and the backing file name field.
    std::string backing_file;
    std::string backing_format;
    bool has_data_file = false;
    bool has_bitmaps = false;
    std::vector<FeatureName> feature_names;

    uint64_t cluster_size() const { return 1ull << cluster_bits; }
};

// A snapshot table entry (only what the driver uses or lists).
struct Snapshot {
    uint64_t l1_table_offset = 0;
    uint32_t l1_size = 0;
    std::string id;
    std::string name;
    uint32_t date_sec = 0;
    uint64_t vm_clock_nsec = 0;
    uint64_t vm_state_size = 0;
};

// True if `data` starts with the qcow2 magic.
bool probe(std::span<const uint8_t> data);

// Parses and validates the header found in the first cluster (`cluster0` is
// the first min(cluster size, file length) bytes; at least 72 are needed).
// `file_len` bounds every table offset.
Result<Header> parse_header(std::span<const uint8_t> cluster0, uint64_t file_len);

// Bytes of the header to read first (enough to know the cluster size).
constexpr size_t kHeaderProbeBytes = 112;

// Validates one snapshot table entry's fixed part and returns its total
// length (8-byte aligned) once `avail` holds at least 40 bytes.
struct SnapshotFixed {
    Snapshot snap;
    uint32_t extra_size = 0;
    uint16_t id_size = 0;
    uint16_t name_size = 0;
    uint64_t total = 0;
};
Result<SnapshotFixed> parse_snapshot_fixed(std::span<const uint8_t> entry, uint32_t version);

// Compressed cluster descriptor decoding.
struct CompressedRef {
    uint64_t offset = 0;  // host byte offset of the compressed stream
    uint64_t size = 0;    // bytes that may belong to the stream
};
CompressedRef decode_compressed(uint64_t l2_entry, uint32_t cluster_bits);

// Decompresses one cluster. `out` must be exactly the cluster size.
Status decompress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out);

// Names of the feature bits set in `bits` of `type`, using the image's
// feature name table when it has one.
std::string feature_list(const Header& h, uint8_t type, uint64_t bits);

}  // namespace mpq::block::qcow2
