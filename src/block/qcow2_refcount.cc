// qcow2: refcounts, cluster allocation, metadata write-back order, rebuild.
#include <cerrno>
#include <cstring>

#include "block/qcow2.h"
#include "util/log.h"

namespace mpq::block::qcow2 {
namespace {

Error corrupt(std::string msg) { return fail_errno(EIO, "qcow2: {}", msg); }

// Refcount entries narrower than a byte are packed from the low bits up;
// wider ones are big-endian.
uint64_t rc_get(const uint8_t* d, uint64_t i, uint32_t order) {
    switch (order) {
    case 0: case 1: case 2: {
        uint32_t bits = 1u << order, per = 8 / bits;
        return (d[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
    }
    case 3: return d[i];
    case 4: return be16(d + i * 2);
    case 5: return be32(d + i * 4);
    default: return be64(d + i * 8);
    }
}

void rc_set(uint8_t* d, uint64_t i, uint32_t order, uint64_t v) {
    switch (order) {
    case 0: case 1: case 2: {
        uint32_t bits = 1u << order, per = 8 / bits, shift = (i % per) * bits;
        uint8_t mask = uint8_t(((1u << bits) - 1) << shift);
        d[i / per] = uint8_t((d[i / per] & ~mask) | ((v << shift) & mask));
        break;
    }
    case 3: d[i] = uint8_t(v); break;
    case 4: put_be16(d + i * 2, uint16_t(v)); break;
    case 5: put_be32(d + i * 4, uint32_t(v)); break;
    default: put_be64(d + i * 8, v); break;
    }
}

}  // namespace

Result<TableCache::Entry*> Qcow2Driver::get_refblock(uint64_t bi) {
    uint64_t off = reftable_[bi] & kReftableOffsetMask;
    if (auto* e = rb_cache_->find(off)) return e;
    if (off & (cs_ - 1)) return corrupt(fmt::format("refcount block offset {:#x} is not cluster aligned", off));
    MPQ_TRY(check_not_metadata(off, cs_, "refcount block"));
    if (off > file_size_ || file_size_ - off < cs_)
        return corrupt(fmt::format("refcount block at {:#x} lies past the end of the file", off));
    std::vector<uint8_t> data(cs_);
    MPQ_TRY(file_->pread(off, data));
    if (rb_cache_->full()) {
        auto& v = rb_cache_->lru();
        if (v.dirty) MPQ_TRY(write_host(v.offset, v.data));
        rb_cache_->erase_lru();
    }
    return &rb_cache_->insert(off, std::move(data), false);
}

Result<uint64_t> Qcow2Driver::get_refcount(uint64_t c) {
    uint64_t bi = c >> rb_bits_;
    if (bi >= reftable_.size() || !(reftable_[bi] & kReftableOffsetMask)) return uint64_t(0);
    auto e = get_refblock(bi);
    if (!e) return e.take_error();
    return rc_get((*e)->data.data(), c & ((1ull << rb_bits_) - 1), hdr_.refcount_order);
}

Status Qcow2Driver::set_refcount(uint64_t c, uint64_t v) {
    if (v > refcount_max_) return corrupt(fmt::format("refcount overflow for cluster {:#x}", c << cb_));
    uint64_t bi = c >> rb_bits_;
    if (bi >= reftable_.size() || !(reftable_[bi] & kReftableOffsetMask))
        return corrupt(fmt::format("no refcount block for cluster {:#x}", c << cb_));
    auto e = get_refblock(bi);
    if (!e) return e.take_error();
    rc_set((*e)->data.data(), c & ((1ull << rb_bits_) - 1), hdr_.refcount_order, v);
    (*e)->dirty = true;
    meta_dirty_ = true;
    return {};
}

Result<uint64_t> Qcow2Driver::find_free() {
    uint64_t c = free_hint_;
    const uint64_t per = 1ull << rb_bits_;
    // Nothing past the file and past our own allocations is in use, so the
    // scan stops there however large a hostile refcount table is.
    const uint64_t end = std::max((file_size_ + cs_ - 1) >> cb_, alloc_end_);
    for (;;) {
        if (c >= end) return c;
        uint64_t bi = c >> rb_bits_;
        if (bi >= reftable_.size() || !(reftable_[bi] & kReftableOffsetMask)) return c;
        auto e = get_refblock(bi);
        if (!e) return e.take_error();
        const uint8_t* d = (*e)->data.data();
        const uint64_t stop = std::min(per, end - (bi << rb_bits_));
        for (uint64_t i = c & (per - 1); i < stop; i++)
            if (rc_get(d, i, hdr_.refcount_order) == 0) return (bi << rb_bits_) + i;
        c = (bi << rb_bits_) + stop;
    }
}

Result<uint64_t> Qcow2Driver::alloc_cluster() {
    for (int attempt = 0; attempt < 8; attempt++) {
        auto c = find_free();
        if (!c) return c.take_error();
        uint64_t bi = *c >> rb_bits_;
        if ((*c << cb_) >> cb_ != *c || (*c << cb_) >= (1ull << 56))
            return fail_errno(ENOSPC, "qcow2: image file would exceed the format's size limit");
        if (bi >= reftable_.size()) {
            MPQ_TRY(grow_reftable(bi));
            continue;
        }
        if (!(reftable_[bi] & kReftableOffsetMask)) {
            MPQ_TRY(create_refblock(bi));
            continue;
        }
        MPQ_TRY(check_not_metadata(*c << cb_, cs_, "free cluster"));
        MPQ_TRY(set_refcount(*c, 1));
        free_hint_ = *c + 1;
        alloc_end_ = std::max(alloc_end_, *c + 1);
        return *c << cb_;
    }
    return corrupt("cannot allocate a cluster (refcount structures inconsistent)");
}

Status Qcow2Driver::create_refblock(uint64_t bi) {
    // No refcount block means every cluster it would describe is free; the
    // block takes the first of them and so describes itself.
    uint64_t off = (bi << rb_bits_) << cb_;
    MPQ_TRY(check_not_metadata(off, cs_, "new refcount block"));
    std::vector<uint8_t> data(cs_, 0);
    rc_set(data.data(), 0, hdr_.refcount_order, 1);
    MPQ_TRY(write_host(off, data));
    MPQ_TRY(file_->flush());
    uint8_t ent[8];
    put_be64(ent, off);
    MPQ_TRY(write_host(hdr_.refcount_table_offset + bi * 8, ent));
    reftable_[bi] = off;
    alloc_end_ = std::max(alloc_end_, (off >> cb_) + 1);
    if (rb_cache_->full()) {
        auto& v = rb_cache_->lru();
        if (v.dirty) MPQ_TRY(write_host(v.offset, v.data));
        rb_cache_->erase_lru();
    }
    rb_cache_->insert(off, std::move(data), false);
    return {};
}

Status Qcow2Driver::grow_reftable(uint64_t min_block) {
    // The new table and the refcount blocks describing it go past
    // everything in use; the header switches to it in one sector write.
    const uint64_t old_n = reftable_.size();
    const uint64_t file_clusters = (file_size_ + cs_ - 1) >> cb_;
    const uint64_t a = std::max({file_clusters, alloc_end_, old_n << rb_bits_});
    uint64_t r = 1, t = 1;
    uint64_t first_block = a >> rb_bits_, last_block = 0, entries = 0;
    for (int i = 0; i < 32; i++) {
        last_block = (a + r + t - 1) >> rb_bits_;
        uint64_t r2 = last_block - first_block + 1;
        entries = std::max(min_block + 1, last_block + 1);
        entries += entries / 2;
        uint64_t t2 = (entries * 8 + cs_ - 1) >> cb_;
        if (r2 <= r && t2 <= t) break;
        r = std::max(r, r2);
        t = std::max(t, t2);
    }
    last_block = (a + r + t - 1) >> rb_bits_;
    entries = (t << cb_) / 8;
    if (entries < last_block + 1 || entries < min_block + 1) return corrupt("refcount table growth did not converge");
    if ((t << cb_) > kMaxReftableBytes)
        return fail_errno(ENOSPC, "qcow2: refcount table would exceed {} bytes", kMaxReftableBytes);

    std::vector<uint64_t> table(entries, 0);
    std::copy(reftable_.begin(), reftable_.end(), table.begin());
    std::vector<uint8_t> block(cs_);
    for (uint64_t j = 0; j < r; j++) {
        uint64_t b = first_block + j;
        std::fill(block.begin(), block.end(), 0);
        for (uint64_t c = std::max(a, b << rb_bits_); c < a + r + t && (c >> rb_bits_) == b; c++)
            rc_set(block.data(), c & ((1ull << rb_bits_) - 1), hdr_.refcount_order, 1);
        table[b] = (a + j) << cb_;
        MPQ_TRY(write_host((a + j) << cb_, block));
    }
    std::vector<uint8_t> raw(t << cb_, 0);
    for (uint64_t i = 0; i < entries; i++) put_be64(&raw[i * 8], table[i]);
    const uint64_t table_off = (a + r) << cb_;
    MPQ_TRY(write_host(table_off, raw));
    MPQ_TRY(file_->flush());
    uint8_t hdr[12];
    put_be64(hdr, table_off);
    put_be32(hdr + 8, uint32_t(t));
    MPQ_TRY(write_header_field(kHdrReftableOffset, hdr));
    MPQ_TRY(file_->flush());
    uint64_t old_off = hdr_.refcount_table_offset, old_clusters = hdr_.refcount_table_clusters;
    hdr_.refcount_table_offset = table_off;
    hdr_.refcount_table_clusters = uint32_t(t);
    reftable_ = std::move(table);
    alloc_end_ = std::max(alloc_end_, a + r + t);
    for (uint64_t i = 0; i < old_clusters; i++) pending_frees_.push_back((old_off >> cb_) + i);
    return {};
}

Status Qcow2Driver::evict_l2() {
    auto& v = l2_cache_->lru();
    if (v.dirty) {
        // Refcounts and data must be durable before an L2 entry points at
        // them, or the dirty bit must say that they may not be.
        if (unordered_until_flush()) {
            MPQ_TRY(mark_dirty());
            MPQ_TRY(durable_length());
        }
        MPQ_TRY(write_dirty_refblocks());
        if (!unordered_until_flush()) MPQ_TRY(file_->flush());
        MPQ_TRY(write_host(v.offset, v.data));
    }
    l2_cache_->erase_lru();
    return {};
}

Status Qcow2Driver::write_dirty_refblocks() {
    Status st;
    rb_cache_->for_each([&](TableCache::Entry& e) {
        if (!st || !e.dirty) return;
        st = write_host(e.offset, e.data);
        if (st) e.dirty = false;
    });
    return st;
}

Status Qcow2Driver::write_l1() {
    if (l1_dirty_lo_ > l1_dirty_hi_) return {};
    uint64_t n = l1_dirty_hi_ - l1_dirty_lo_ + 1;
    std::vector<uint8_t> raw(n * 8);
    for (uint64_t i = 0; i < n; i++) put_be64(&raw[i * 8], l1_[l1_dirty_lo_ + i]);
    MPQ_TRY(write_host(hdr_.l1_table_offset + l1_dirty_lo_ * 8, raw));
    l1_dirty_lo_ = UINT64_MAX;
    l1_dirty_hi_ = 0;
    return {};
}

Status Qcow2Driver::apply_pending_frees() {
    zcache_entry_ = 0;
    std::vector<uint64_t> frees;
    frees.swap(pending_frees_);
    for (uint64_t c : frees) {
        auto rc = get_refcount(c);
        if (!rc) return rc.take_error();
        if (*rc == 0) {
            log::warn("'{}': refcount underflow for cluster {:#x} (ignored)", path_, c << cb_);
            continue;
        }
        MPQ_TRY(set_refcount(c, *rc - 1));
        if (*rc == 1 && c < free_hint_) free_hint_ = c;
    }
    return {};
}

Status Qcow2Driver::flush_metadata() {
    const bool l2_dirty = l2_cache_->any_dirty();
    const bool l1_dirty = l1_dirty_lo_ <= l1_dirty_hi_;
    const bool frees = !pending_frees_.empty();
    MPQ_TRY(write_dirty_refblocks());
    if (l2_dirty || l1_dirty || frees) MPQ_TRY(file_->flush());
    if (l2_dirty) {
        Status st;
        l2_cache_->for_each([&](TableCache::Entry& e) {
            if (!st || !e.dirty) return;
            st = write_host(e.offset, e.data);
            if (st) e.dirty = false;
        });
        MPQ_TRY(std::move(st));
        if (l1_dirty || frees) MPQ_TRY(file_->flush());
    }
    if (l1_dirty) {
        MPQ_TRY(write_l1());
        if (frees) MPQ_TRY(file_->flush());
    }
    if (frees) {
        // Only now are the dropped references gone from the disk.
        MPQ_TRY(apply_pending_frees());
        MPQ_TRY(write_dirty_refblocks());
    }
    MPQ_TRY(file_->flush());
    meta_dirty_ = false;
    durable_size_ = file_size_;
    if (dirty_bit_set_ && !lazy_refcounts_) {
        // Everything is durable and in order now. The cleared bit need not
        // be durable at once: left set by a power failure it only costs a
        // rebuild, and the next unordered write sets it durably again.
        MPQ_TRY(set_incompat(hdr_.incompatible & ~kIncompatDirty));
        dirty_bit_set_ = false;
    }
    return {};
}

Status Qcow2Driver::mark_dirty() {
    if (dirty_bit_set_) return {};
    // Durable before any table written under it can be, and after the data
    // and tables written so far (which the flush also makes durable).
    MPQ_TRY(set_incompat(hdr_.incompatible | kIncompatDirty));
    MPQ_TRY(file_->flush());
    dirty_bit_set_ = true;
    return {};
}

Status Qcow2Driver::durable_length() {
    if (file_size_ <= durable_size_) return {};
    // Clusters are allocated from the lowest free one, so the ones ahead
    // are taken before the file grows again: one barrier per few MiB of
    // new clusters instead of one per request. The area ahead reads as
    // zeroes, holds no reference and is not a leak.
    const uint64_t ahead = std::max<uint64_t>(cs_ * 16, 4ull << 20);
    const uint64_t end = ((file_size_ + ahead + cs_ - 1) >> cb_) << cb_;
    std::vector<uint8_t> last(cs_, 0);
    MPQ_TRY(write_host(end - cs_, last));
    MPQ_TRY(file_->flush());
    durable_size_ = file_size_;
    return {};
}

Status Qcow2Driver::updated() {
    return metadata_writes_ == MetadataWrites::PerRequest ? commit_metadata() : Status{};
}

Status Qcow2Driver::commit_metadata() {
    if (!meta_dirty_ || read_only_) return {};
    // Step 3 of the write-back order without the queued decrements: new
    // refcounts, L2 tables, the L1 entries. A process killed between any
    // two of these writes leaves at worst a leaked cluster. For a power
    // failure, version 2 puts a barrier between them (data written before
    // the first one is durable before an L2 entry points at it); version 3
    // sets the dirty bit instead, once until the next flush (see qcow2.h),
    // and keeps only the barrier before an L1 entry: a new L2 table must be
    // durable before L1 points at it, or a power failure would leave L1
    // pointing at whatever the cluster held before (a rebuild of the
    // refcounts cannot repair that). It costs one fdatasync per new L2
    // table, not per request.
    // A file opened O_DSYNC is durable write by write: no barrier needed.
    const bool l2_dirty = l2_cache_->any_dirty();
    const bool l1_dirty = l1_dirty_lo_ <= l1_dirty_hi_;
    const bool barriers = !sync_file_ && !unordered_until_flush();
    if (unordered_until_flush()) MPQ_TRY(mark_dirty());
    MPQ_TRY(write_dirty_refblocks());
    if (l2_dirty) {
        if (unordered_until_flush()) MPQ_TRY(durable_length());
        if (barriers) MPQ_TRY(file_->flush());
        Status st;
        l2_cache_->for_each([&](TableCache::Entry& e) {
            if (!st || !e.dirty) return;
            st = write_host(e.offset, e.data);
            if (st) e.dirty = false;
        });
        MPQ_TRY(std::move(st));
    }
    if (l1_dirty) {
        if (!sync_file_) MPQ_TRY(file_->flush());
        MPQ_TRY(write_l1());
    }
    meta_dirty_ = false;
    return {};
}

Status Qcow2Driver::write_header_field(size_t off, std::span<const uint8_t> bytes) { return write_host(off, bytes); }

Status Qcow2Driver::set_incompat(uint64_t bits) {
    uint8_t raw[8];
    put_be64(raw, bits);
    MPQ_TRY(write_header_field(kHdrIncompat, raw));
    hdr_.incompatible = bits;
    return {};
}

Result<std::vector<uint32_t>> Qcow2Driver::count_references() {
    constexpr uint64_t kMaxRebuildClusters = 1ull << 25;
    const uint64_t nb = (file_size_ + cs_ - 1) >> cb_;
    if (nb > kMaxRebuildClusters)
        return fail_errno(EFBIG, "qcow2: image too large to count its references ({} clusters); "
                                 "run 'qemu-img check -r all' on it", nb);
    std::vector<uint32_t> rc(nb, 0);  // 4 bytes a cluster: 128 MiB at the limit
    auto ref = [&](uint64_t off, uint64_t len, const char* what) -> Status {
        if (len == 0) return {};
        if (off >= file_size_ || len > (nb << cb_) - off)
            return corrupt(fmt::format("{} at {:#x} lies past the end of the file", what, off));
        for (uint64_t c = off >> cb_; c <= (off + len - 1) >> cb_; c++)
            if (rc[c] != UINT32_MAX) rc[c]++;  // saturates: far past any refcount a width allows
        return {};
    };
    std::vector<uint8_t> l2(cs_);
    auto walk = [&](const std::vector<uint64_t>& l1) -> Status {
        for (uint64_t e : l1) {
            uint64_t l2off = e & kL1OffsetMask;
            if (!l2off) continue;
            if (l2off & (cs_ - 1)) return corrupt(fmt::format("L2 table offset {:#x} is not cluster aligned", l2off));
            MPQ_TRY(ref(l2off, cs_, "L2 table"));
            if (auto* c = l2_cache_->find(l2off))
                l2 = c->data;
            else
                MPQ_TRY(file_->pread(l2off, l2));
            for (uint64_t i = 0; i < (cs_ >> 3); i++) {
                uint64_t d = be64(&l2[i * 8]);
                if (d & kFlagCompressed) {
                    auto c = decode_compressed(d, cb_);
                    uint64_t start = c.offset & ~uint64_t(511);
                    MPQ_TRY(ref(start, c.offset + c.size - start, "compressed cluster"));
                } else if (uint64_t h = d & kL2OffsetMask) {
                    if (h & (cs_ - 1)) return corrupt(fmt::format("data cluster offset {:#x} is not aligned", h));
                    MPQ_TRY(ref(h, cs_, "data cluster"));
                }
            }
        }
        return {};
    };
    MPQ_TRY(ref(0, cs_, "header"));
    MPQ_TRY(ref(hdr_.l1_table_offset, uint64_t(hdr_.l1_size) * 8, "L1 table"));
    MPQ_TRY(walk(l1_));
    MPQ_TRY(ref(hdr_.snapshots_offset, snapshot_table_bytes_, "snapshot table"));
    for (const auto& s : snapshots_) {
        MPQ_TRY(ref(s.l1_table_offset, uint64_t(s.l1_size) * 8, "snapshot L1 table"));
        std::vector<uint8_t> raw(uint64_t(s.l1_size) * 8);
        if (!raw.empty()) MPQ_TRY(file_->pread(s.l1_table_offset, raw));
        std::vector<uint64_t> l1(s.l1_size);
        for (size_t i = 0; i < l1.size(); i++) l1[i] = be64(&raw[i * 8]);
        MPQ_TRY(walk(l1));
    }
    return rc;
}

Result<CheckReport> Qcow2Driver::check() {
    if (!read_only_ && !broken_) MPQ_TRY(flush_metadata());
    auto refs = count_references();
    if (!refs) return refs.take_error();
    std::vector<uint32_t>& rc = *refs;
    CheckReport r;
    // The refcount structures count too (ones past the end are corrupt).
    auto add = [&](uint64_t off, uint64_t len) {
        for (uint64_t c = off >> cb_; len && c <= (off + len - 1) >> cb_; c++) {
            if (c >= rc.size()) {
                r.corruptions++;
                return;
            }
            rc[c]++;
        }
    };
    add(hdr_.refcount_table_offset, uint64_t(hdr_.refcount_table_clusters) * cs_);
    for (uint64_t e : reftable_)
        if (uint64_t off = e & kReftableOffsetMask) add(off, cs_);
    // Stored refcounts past the end of the file can only be leaks.
    const uint64_t end = rc.size();
    for (uint64_t c = 0; c < end; c++) {
        uint64_t want = c < rc.size() ? rc[c] : 0;
        uint64_t bi = c >> rb_bits_;
        if (want == 0 && (bi >= reftable_.size() || !(reftable_[bi] & kReftableOffsetMask))) {
            c = ((bi + 1) << rb_bits_) - 1;  // nothing stored, nothing referenced in this block
            continue;
        }
        auto have = get_refcount(c);
        if (!have) return have.take_error();
        if (*have < want) r.corruptions++;
        else if (*have > want) r.leaks++;
    }
    // Only the active tables must carry exact COPIED flags.
    for (uint64_t e : l1_) {
        uint64_t l2off = e & kL1OffsetMask;
        if (!l2off) continue;
        if (((e & kFlagCopied) != 0) != ((l2off >> cb_) < rc.size() && rc[l2off >> cb_] == 1)) r.copied_errors++;
        auto t = get_l2(l2off);
        if (!t) return t.take_error();
        for (uint64_t i = 0; i < (cs_ >> 3); i++) {
            uint64_t d = be64(&(*t)->data[i * 8]);
            uint64_t h = d & kL2OffsetMask;
            if ((d & kFlagCompressed) || !h) continue;
            if (((d & kFlagCopied) != 0) != ((h >> cb_) < rc.size() && rc[h >> cb_] == 1)) r.copied_errors++;
        }
    }
    return r;
}

Status Qcow2Driver::rebuild_refcounts() {
    auto refs = count_references();
    if (!refs) return refs.take_error();
    std::vector<uint32_t>& rc = *refs;
    const uint64_t nb = rc.size();
    for (uint64_t c = 0; c < nb; c++)
        if (rc[c] > refcount_max_)
            return corrupt(fmt::format("refcount overflow for cluster {:#x} ({} references, {}-bit refcounts)",
                                       c << cb_, rc[c], refcount_bits_));

    // New refcount blocks and table go after the end of the file.
    const uint64_t per = 1ull << rb_bits_;
    uint64_t r = 1, t = 1;
    for (int i = 0; i < 32; i++) {
        uint64_t total = nb + r + t;
        uint64_t r2 = (total + per - 1) / per;
        uint64_t t2 = (r2 * 8 + cs_ - 1) >> cb_;
        if (r2 <= r && t2 <= t) break;
        r = std::max(r, r2);
        t = std::max(t, t2);
    }
    if ((t << cb_) > kMaxReftableBytes) return fail_errno(EFBIG, "qcow2: rebuilt refcount table would be too large");
    rc.resize(nb + r + t, 0);
    for (uint64_t c = nb; c < nb + r + t; c++) rc[c] = 1;
    std::vector<uint64_t> table((t << cb_) / 8, 0);
    std::vector<uint8_t> block(cs_);
    for (uint64_t j = 0; j < r; j++) {
        std::fill(block.begin(), block.end(), 0);
        for (uint64_t i = 0; i < per && j * per + i < rc.size(); i++)
            rc_set(block.data(), i, hdr_.refcount_order, rc[j * per + i]);
        table[j] = (nb + j) << cb_;
        MPQ_TRY(write_host((nb + j) << cb_, block));
    }
    std::vector<uint8_t> raw(t << cb_, 0);
    for (size_t i = 0; i < table.size(); i++) put_be64(&raw[i * 8], table[i]);
    const uint64_t table_off = (nb + r) << cb_;
    MPQ_TRY(write_host(table_off, raw));
    MPQ_TRY(file_->flush());
    uint8_t hdr[12];
    put_be64(hdr, table_off);
    put_be32(hdr + 8, uint32_t(t));
    MPQ_TRY(write_header_field(kHdrReftableOffset, hdr));
    MPQ_TRY(file_->flush());
    hdr_.refcount_table_offset = table_off;
    hdr_.refcount_table_clusters = uint32_t(t);
    reftable_ = std::move(table);
    rb_cache_->clear();
    free_hint_ = 0;
    return {};
}

}  // namespace mpq::block::qcow2
