#include "block/qcow2_format.h"

#include <cerrno>

#include <zlib.h>
#include <zstd.h>

namespace mpq::block::qcow2 {
namespace {

Error bad(std::string msg) { return fail_errno(EINVAL, "qcow2: {}", msg); }

bool aligned(uint64_t v, uint64_t cs) { return (v & (cs - 1)) == 0; }

struct Range {
    uint64_t off, len;
    const char* what;
};

bool overlaps(const Range& a, const Range& b) {
    return a.len && b.len && a.off < b.off + b.len && b.off < a.off + a.len;
}

// Table offsets must be cluster aligned and the table must lie inside the
// file: anything else is an attack or a truncated image.
Status check_table(const char* what, uint64_t off, uint64_t bytes, uint64_t cs, uint64_t file_len) {
    if (bytes == 0) return {};
    if (!aligned(off, cs)) return bad(fmt::format("{} offset {:#x} is not cluster aligned", what, off));
    if (off == 0) return bad(fmt::format("{} overlaps the header", what));
    if (off > file_len || bytes > file_len - off)
        return bad(fmt::format("{} ({} bytes at {:#x}) lies past the end of the file ({} bytes)", what,
                               bytes, off, file_len));
    return {};
}

Status parse_extensions(std::span<const uint8_t> c0, uint64_t start, uint64_t cs, Header& h) {
    const uint64_t limit = std::min<uint64_t>(c0.size(), cs);
    uint64_t off = start;
    // Each extension advances by at least 8 bytes, so this ends.
    while (off + 8 <= limit) {
        uint32_t type = be32(&c0[off]);
        uint32_t len = be32(&c0[off + 4]);
        off += 8;
        if (type == kExtEnd) return {};
        if (len > limit - off)
            return bad(fmt::format("header extension {:#x} length {} runs past the first cluster", type, len));
        const uint8_t* d = &c0[off];
        switch (type) {
        case kExtBackingFormat:
            if (len > 16) return bad(fmt::format("backing format name too long ({} bytes)", len));
            h.backing_format.assign(reinterpret_cast<const char*>(d), len);
            if (auto z = h.backing_format.find('\0'); z != std::string::npos) h.backing_format.resize(z);
            break;
        case kExtFeatureTable:
            for (uint32_t i = 0; i + 48 <= len; i += 48) {
                FeatureName f;
                f.type = d[i];
                f.bit = d[i + 1];
                const char* n = reinterpret_cast<const char*>(d + i + 2);
                f.name.assign(n, strnlen(n, 46));
                h.feature_names.push_back(std::move(f));
            }
            break;
        case kExtDataFile:
            h.has_data_file = true;
            break;
        case kExtBitmaps:
            h.has_bitmaps = true;
            break;
        default:
            break;  // unknown extensions are preserved untouched
        }
        off += (uint64_t(len) + 7) & ~uint64_t(7);
    }
    return {};
}

}  // namespace

bool probe(std::span<const uint8_t> data) { return data.size() >= 4 && be32(data.data()) == kMagic; }

std::string feature_list(const Header& h, uint8_t type, uint64_t bits) {
    std::string out;
    for (unsigned b = 0; b < 64; b++) {
        if (!(bits & (1ull << b))) continue;
        std::string name = fmt::format("bit {}", b);
        for (const auto& f : h.feature_names)
            if (f.type == type && f.bit == b && !f.name.empty()) name = fmt::format("'{}' (bit {})", f.name, b);
        if (!out.empty()) out += ", ";
        out += name;
    }
    return out;
}

Result<Header> parse_header(std::span<const uint8_t> c0, uint64_t file_len) {
    if (c0.size() < kHdrV2Length) return bad("image is too short for a qcow2 header");
    if (be32(&c0[kHdrMagic]) != kMagic) return bad("not a qcow2 image (bad magic)");
    Header h;
    h.version = be32(&c0[kHdrVersion]);
    if (h.version != 2 && h.version != 3) return bad(fmt::format("unsupported qcow2 version {}", h.version));
    h.backing_file_offset = be64(&c0[kHdrBackingOffset]);
    h.backing_file_size = be32(&c0[kHdrBackingSize]);
    h.cluster_bits = be32(&c0[kHdrClusterBits]);
    h.size = be64(&c0[kHdrSize]);
    h.crypt_method = be32(&c0[kHdrCryptMethod]);
    h.l1_size = be32(&c0[kHdrL1Size]);
    h.l1_table_offset = be64(&c0[kHdrL1Offset]);
    h.refcount_table_offset = be64(&c0[kHdrReftableOffset]);
    h.refcount_table_clusters = be32(&c0[kHdrReftableClusters]);
    h.nb_snapshots = be32(&c0[kHdrNbSnapshots]);
    h.snapshots_offset = be64(&c0[kHdrSnapshotsOffset]);

    if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
        return bad(fmt::format("unsupported cluster size 2^{} (must be 512 B to 2 MiB)", h.cluster_bits));
    const uint64_t cs = h.cluster_size();

    if (h.version == 2) {
        h.header_length = kHdrV2Length;
    } else {
        if (c0.size() < kHdrV3MinLength) return bad("image is too short for a qcow2 v3 header");
        h.incompatible = be64(&c0[kHdrIncompat]);
        h.compatible = be64(&c0[kHdrCompat]);
        h.autoclear = be64(&c0[kHdrAutoclear]);
        h.refcount_order = be32(&c0[kHdrRefcountOrder]);
        h.header_length = be32(&c0[kHdrHeaderLength]);
        if (h.header_length < kHdrV3MinLength || h.header_length % 8 != 0)
            return bad(fmt::format("invalid header length {}", h.header_length));
        if (h.header_length > cs || h.header_length > c0.size())
            return bad(fmt::format("header length {} exceeds the first cluster", h.header_length));
        if (h.header_length > kHdrCompressionType) h.compression_type = c0[kHdrCompressionType];
    }
    // Extensions first: the feature name table makes errors readable.
    MPQ_TRY(parse_extensions(c0, h.header_length, cs, h));

    if (h.incompatible & kIncompatDataFile || h.has_data_file)
        return bad("external data files are not supported");
    if (h.incompatible & kIncompatExtL2) return bad("extended L2 entries (subclusters) are not supported");
    if (uint64_t unknown = h.incompatible & ~kIncompatSupported)
        return bad(fmt::format("unsupported incompatible feature(s): {}", feature_list(h, 0, unknown)));
    if (h.compression_type != kCompressionZlib && h.compression_type != kCompressionZstd)
        return bad(fmt::format("unknown compression type {}", h.compression_type));
    if (h.compression_type != kCompressionZlib && !(h.incompatible & kIncompatCompression))
        return bad("compression type set without its incompatible feature bit");
    if (h.compression_type == kCompressionZlib && (h.incompatible & kIncompatCompression))
        return bad("compression type feature bit set for zlib");
    if (h.crypt_method != 0) return bad("encrypted images are not supported");
    if (h.refcount_order > 6) return bad(fmt::format("invalid refcount order {}", h.refcount_order));

    if (h.size > kMaxVirtualSize) return bad(fmt::format("virtual size {} is too large", h.size));
    if (uint64_t(h.l1_size) * 8 > kMaxL1Bytes) return bad(fmt::format("L1 table too large ({} entries)", h.l1_size));
    const uint64_t l2_entries = cs / 8;
    const uint64_t bytes_per_l1 = cs * l2_entries;
    const uint64_t needed_l1 = (h.size + bytes_per_l1 - 1) / bytes_per_l1;
    if (h.l1_size < needed_l1)
        return bad(fmt::format("L1 table too small ({} entries) for virtual size {}", h.l1_size, h.size));
    MPQ_TRY(check_table("L1 table", h.l1_table_offset, uint64_t(h.l1_size) * 8, cs, file_len));

    if (h.refcount_table_clusters == 0) return bad("refcount table is empty");
    if (uint64_t(h.refcount_table_clusters) * cs > kMaxReftableBytes)
        return bad(fmt::format("refcount table too large ({} clusters)", h.refcount_table_clusters));
    MPQ_TRY(check_table("refcount table", h.refcount_table_offset, uint64_t(h.refcount_table_clusters) * cs, cs,
                        file_len));

    if (h.nb_snapshots > kMaxSnapshots) return bad(fmt::format("too many snapshots ({})", h.nb_snapshots));
    if (h.nb_snapshots) MPQ_TRY(check_table("snapshot table", h.snapshots_offset, 40, cs, file_len));

    const Range ranges[] = {
        {0, cs, "header"},
        {h.l1_table_offset, uint64_t(h.l1_size) * 8, "L1 table"},
        {h.refcount_table_offset, uint64_t(h.refcount_table_clusters) * cs, "refcount table"},
        {h.snapshots_offset, h.nb_snapshots ? 40u : 0u, "snapshot table"},
    };
    for (size_t i = 0; i < std::size(ranges); i++)
        for (size_t j = i + 1; j < std::size(ranges); j++)
            if (overlaps(ranges[i], ranges[j]))
                return bad(fmt::format("{} overlaps {}", ranges[i].what, ranges[j].what));

    if (h.backing_file_offset) {
        if (h.backing_file_size == 0 || h.backing_file_size > kMaxBackingName)
            return bad(fmt::format("invalid backing file name length {}", h.backing_file_size));
        if (h.backing_file_offset >= cs || h.backing_file_size > cs - h.backing_file_offset ||
            h.backing_file_offset + h.backing_file_size > c0.size())
            return bad("backing file name lies outside the first cluster");
        h.backing_file.assign(reinterpret_cast<const char*>(&c0[h.backing_file_offset]), h.backing_file_size);
        if (h.backing_file.find('\0') != std::string::npos) return bad("backing file name contains NUL");
    }
    return h;
}

Result<SnapshotFixed> parse_snapshot_fixed(std::span<const uint8_t> e, uint32_t version) {
    (void)version;
    if (e.size() < 40) return bad("snapshot table truncated");
    SnapshotFixed s;
    s.snap.l1_table_offset = be64(&e[0]);
    s.snap.l1_size = be32(&e[8]);
    s.id_size = be16(&e[12]);
    s.name_size = be16(&e[14]);
    s.snap.date_sec = be32(&e[16]);
    s.snap.vm_clock_nsec = be64(&e[24]);
    s.snap.vm_state_size = be32(&e[32]);
    s.extra_size = be32(&e[36]);
    if (s.extra_size > kMaxSnapshotExtra) return bad(fmt::format("snapshot extra data too large ({})", s.extra_size));
    if (uint64_t(s.snap.l1_size) * 8 > kMaxL1Bytes)
        return bad(fmt::format("snapshot L1 table too large ({} entries)", s.snap.l1_size));
    uint64_t total = 40 + uint64_t(s.extra_size) + s.id_size + s.name_size;
    s.total = (total + 7) & ~uint64_t(7);
    return s;
}

CompressedRef decode_compressed(uint64_t e, uint32_t cluster_bits) {
    const uint32_t shift = 62 - (cluster_bits - 8);
    const uint64_t mask = (1ull << (cluster_bits - 8)) - 1;
    CompressedRef r;
    r.offset = e & ((1ull << shift) - 1);
    uint64_t sectors = ((e >> shift) & mask) + 1;
    r.size = sectors * 512 - (r.offset & 511);
    return r;
}

Status decompress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out) {
    if (type == kCompressionZlib) {
        z_stream z{};
        if (inflateInit2(&z, -15) != Z_OK) return fail_errno(ENOMEM, "qcow2: inflateInit failed");
        z.next_in = const_cast<uint8_t*>(in.data());
        z.avail_in = uInt(in.size());
        z.next_out = out.data();
        z.avail_out = uInt(out.size());
        int ret = inflate(&z, Z_FINISH);
        bool full = z.avail_out == 0;
        inflateEnd(&z);
        if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && full) return {};
        return fail_errno(EIO, "qcow2: corrupt deflate-compressed cluster");
    }
    if (type == kCompressionZstd) {
        ZSTD_DCtx* dctx = ZSTD_createDCtx();
        if (!dctx) return fail_errno(ENOMEM, "qcow2: ZSTD_createDCtx failed");
        ZSTD_inBuffer ib{in.data(), in.size(), 0};
        ZSTD_outBuffer ob{out.data(), out.size(), 0};
        Status st = fail_errno(EIO, "qcow2: corrupt zstd-compressed cluster");
        // Each round consumes input or produces output, else it stops.
        while (ob.pos < ob.size) {
            size_t in0 = ib.pos, out0 = ob.pos;
            size_t r = ZSTD_decompressStream(dctx, &ob, &ib);
            if (ZSTD_isError(r)) break;
            if (ib.pos == in0 && ob.pos == out0) break;
        }
        if (ob.pos == ob.size) st = {};
        ZSTD_freeDCtx(dctx);
        return st;
    }
    return fail_errno(EIO, "qcow2: unknown compression type {}", type);
}

}  // namespace mpq::block::qcow2
