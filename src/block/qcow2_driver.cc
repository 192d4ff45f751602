// qcow2: open, mapping lookups and the guest read/write/discard paths.
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "block/qcow2.h"
#include "util/log.h"

namespace mpq::block::qcow2 {
namespace {

constexpr size_t kMaxPendingFrees = 4096;
constexpr uint64_t kDefaultL2CacheMax = 32ull << 20;

Error corrupt(std::string msg) { return fail_errno(EIO, "qcow2: {}", msg); }

Result<std::string> canonical(const std::string& path) {
    char buf[PATH_MAX];
    if (!::realpath(path.c_str(), buf)) return fail_errno(errno, "'{}': {}", path, std::strerror(errno));
    return std::string(buf);
}

std::string resolve_backing(const std::string& image, const std::string& name) {
    if (!name.empty() && name[0] == '/') return name;
    auto slash = image.rfind('/');
    if (slash == std::string::npos) return name;
    return image.substr(0, slash + 1) + name;
}

}  // namespace

Result<std::unique_ptr<Qcow2Driver>> Qcow2Driver::open(std::unique_ptr<BlockDriver> file, const DriveOptions& opts,
                                                       ChainState& chain) {
    std::unique_ptr<Qcow2Driver> d(new Qcow2Driver);
    d->file_ = std::move(file);
    d->read_only_ = opts.read_only == ReadOnly::Yes;
    d->sync_file_ = opts.cache == CacheMode::Writethrough || opts.cache == CacheMode::Directsync;
    d->closed_ = true;  // nothing to write back if open fails
    if (auto st = d->load(opts, chain); !st) {
        auto e = st.take_error();
        return fail_errno(e.err ? e.err : EINVAL, "'{}': {}", opts.file, e.message);
    }
    d->closed_ = false;
    return d;
}

Status Qcow2Driver::load(const DriveOptions& opts, ChainState& chain) {
    path_ = opts.file;
    file_size_ = file_->length();
    if (file_size_ < kHdrV2Length) return fail_errno(EINVAL, "qcow2: image is too short ({} bytes)", file_size_);
    std::vector<uint8_t> probe_buf(std::min<uint64_t>(file_size_, kHeaderProbeBytes));
    MPQ_TRY(file_->pread(0, probe_buf));
    if (!probe(probe_buf)) return fail_errno(EINVAL, "qcow2: not a qcow2 image (bad magic)");
    uint32_t bits = be32(&probe_buf[kHdrClusterBits]);
    if (bits < kMinClusterBits || bits > kMaxClusterBits)
        return fail_errno(EINVAL, "qcow2: unsupported cluster size 2^{} (must be 512 B to 2 MiB)", bits);
    std::vector<uint8_t> c0(std::min<uint64_t>(file_size_, 1ull << bits));
    MPQ_TRY(file_->pread(0, c0));
    auto h = parse_header(c0, file_size_);
    if (!h) return h.take_error();
    hdr_ = std::move(*h);

    cb_ = hdr_.cluster_bits;
    cs_ = hdr_.cluster_size();
    l2_bits_ = cb_ - 3;
    refcount_bits_ = 1u << hdr_.refcount_order;
    refcount_max_ = refcount_bits_ == 64 ? UINT64_MAX : (1ull << refcount_bits_) - 1;
    rb_bits_ = cb_ + 3 - hdr_.refcount_order;

    std::vector<uint8_t> raw(uint64_t(hdr_.l1_size) * 8);
    if (!raw.empty()) MPQ_TRY(file_->pread(hdr_.l1_table_offset, raw));
    l1_.resize(hdr_.l1_size);
    for (size_t i = 0; i < l1_.size(); i++) l1_[i] = be64(&raw[i * 8]);

    raw.assign(uint64_t(hdr_.refcount_table_clusters) * cs_, 0);
    MPQ_TRY(file_->pread(hdr_.refcount_table_offset, raw));
    reftable_.resize(raw.size() / 8);
    for (size_t i = 0; i < reftable_.size(); i++) reftable_[i] = be64(&raw[i * 8]);

    MPQ_TRY(load_snapshots());

    // Default: enough L2 tables to map the whole disk, up to 32 MiB.
    uint64_t l2_bytes = opts.l2_cache_size;
    if (l2_bytes == 0) {
        uint64_t tables = (hdr_.size + (cs_ << l2_bits_) - 1) >> (cb_ + l2_bits_);
        l2_bytes = std::min<uint64_t>(tables * cs_, kDefaultL2CacheMax);
    }
    size_t l2_cap = std::max<uint64_t>(2, l2_bytes / cs_);
    l2_cache_ = std::make_unique<TableCache>(l2_cap, cs_);
    rb_cache_ = std::make_unique<TableCache>(std::max<size_t>(4, l2_cap / 4), cs_);

    if (!hdr_.backing_file.empty()) {
        if (hdr_.backing_file.rfind("json:", 0) == 0)
            return fail_errno(EINVAL, "qcow2: json: backing file names are not supported");
        std::string bpath = resolve_backing(path_, hdr_.backing_file);
        auto b = open_backing_image(bpath, hdr_.backing_format, chain);
        if (!b) {
            auto e = b.take_error();
            return fail_errno(e.err ? e.err : EINVAL, "backing file: {}", e.message);
        }
        backing_ = std::move(*b);
    }
    if (!read_only_) MPQ_TRY(open_for_write());
    durable_size_ = file_size_;
    return {};
}

Status Qcow2Driver::load_snapshots() {
    uint64_t off = hdr_.snapshots_offset;
    uint64_t total = 0;
    for (uint32_t i = 0; i < hdr_.nb_snapshots; i++) {
        if (off > file_size_ || file_size_ - off < 40) return corrupt("snapshot table runs past the end of the file");
        uint8_t fixed[40];
        MPQ_TRY(file_->pread(off, fixed));
        auto f = parse_snapshot_fixed(fixed, hdr_.version);
        if (!f) return f.take_error();
        // The last entry's padding may be missing at the end of the file.
        const uint64_t unpadded = 40 + uint64_t(f->extra_size) + f->id_size + f->name_size;
        if (unpadded > file_size_ - off) return corrupt("snapshot table runs past the end of the file");
        total += f->total;
        if (total > kMaxSnapshotTableBytes) return corrupt("snapshot table too large");
        std::vector<uint8_t> rest(unpadded - 40);
        MPQ_TRY(file_->pread(off + 40, rest));
        Snapshot s = f->snap;
        const uint8_t* p = rest.data();
        if (f->extra_size >= 8) s.vm_state_size = be64(p);  // vm_state_size_large
        p += f->extra_size;
        s.id.assign(reinterpret_cast<const char*>(p), f->id_size);
        s.name.assign(reinterpret_cast<const char*>(p + f->id_size), f->name_size);
        uint64_t l1_bytes = uint64_t(s.l1_size) * 8;
        if (l1_bytes && ((s.l1_table_offset & (cs_ - 1)) || s.l1_table_offset == 0 ||
                         s.l1_table_offset > file_size_ || l1_bytes > file_size_ - s.l1_table_offset))
            return corrupt(fmt::format("snapshot '{}' has an invalid L1 table ({} entries at {:#x})", s.name,
                                       s.l1_size, s.l1_table_offset));
        snapshots_.push_back(std::move(s));
        off += f->total;
    }
    // Checked before it joins the metadata ranges it is checked against.
    if (total) MPQ_TRY(check_not_metadata(hdr_.snapshots_offset, total, "snapshot table"));
    snapshot_table_bytes_ = total;
    return {};
}

Status Qcow2Driver::open_for_write() {
    if (hdr_.incompatible & kIncompatCorrupt)
        return fail_errno(EIO, "qcow2: image is marked corrupt; only read-only access is possible "
                               "(repair it with 'qemu-img check -r all')");
    if (hdr_.version >= 3) {
        if (hdr_.incompatible & kIncompatDirty) {
            log::warn("'{}': image was not closed cleanly, rebuilding refcounts", path_);
            MPQ_TRY(rebuild_refcounts());
            rebuilt_ = true;
            MPQ_TRY(set_incompat(hdr_.incompatible & ~kIncompatDirty));
            MPQ_TRY(file_->flush());
        }
        if (hdr_.autoclear) {
            // We do not maintain what autoclear features describe (bitmaps).
            uint8_t zero[8] = {};
            MPQ_TRY(write_header_field(kHdrAutoclear, zero));
            hdr_.autoclear = 0;
            MPQ_TRY(file_->flush());
        }
        if (hdr_.compatible & kCompatLazyRefcounts) {
            MPQ_TRY(set_incompat(hdr_.incompatible | kIncompatDirty));
            MPQ_TRY(file_->flush());
            dirty_bit_set_ = true;
            lazy_refcounts_ = true;
        }
    }
    return {};
}

Qcow2Driver::~Qcow2Driver() {
    if (auto st = close(); !st) log::error("'{}': {}", path_, st.error().message);
}

Status Qcow2Driver::close() {
    if (closed_) return {};
    closed_ = true;
    if (read_only_ || broken_) return {};
    const bool was_dirty = dirty_bit_set_;
    lazy_refcounts_ = false;  // flush_metadata clears the bit now
    MPQ_TRY(flush_metadata());
    // A clean header on the disk spares the next opener a rebuild.
    if (was_dirty) MPQ_TRY(file_->flush());
    return {};
}

CacheStats Qcow2Driver::cache_stats() const {
    CacheStats s;
    s.l2_capacity = l2_cache_->capacity();
    s.l2_entries = l2_cache_->size();
    s.l2_peak = l2_peak_;
    s.rb_capacity = rb_cache_->capacity();
    s.rb_entries = rb_cache_->size();
    s.l2_loads = l2_loads_;
    return s;
}

Result<uint64_t> Qcow2Driver::refcount(uint64_t host_off) { return get_refcount(host_off >> cb_); }

Status Qcow2Driver::check_not_metadata(uint64_t host, uint64_t len, const char* what) const {
    auto round = [&](uint64_t v) { return (v + cs_ - 1) & ~(cs_ - 1); };
    struct R {
        uint64_t off, len;
        const char* name;
    } rs[] = {
        {0, cs_, "image header"},
        {hdr_.l1_table_offset, round(uint64_t(hdr_.l1_size) * 8), "L1 table"},
        {hdr_.refcount_table_offset, uint64_t(hdr_.refcount_table_clusters) * cs_, "refcount table"},
        {hdr_.snapshots_offset, round(snapshot_table_bytes_), "snapshot table"},
    };
    for (const auto& r : rs) {
        if (r.len == 0) continue;
        if (host < r.off + r.len && r.off < host + len)
            return corrupt(fmt::format("{} at {:#x} overlaps the {}", what, host, r.name));
    }
    return {};
}

Status Qcow2Driver::check_writable() const {
    if (read_only_) return fail_errno(EROFS, "qcow2: image is read-only");
    if (broken_) return fail_errno(EIO, "qcow2: image metadata is inconsistent; writes refused");
    return {};
}

// ---- mapping ----

Result<TableCache::Entry*> Qcow2Driver::get_l2(uint64_t off) {
    if (auto* e = l2_cache_->find(off)) return e;
    if (off & (cs_ - 1)) return corrupt(fmt::format("L2 table offset {:#x} is not cluster aligned", off));
    MPQ_TRY(check_not_metadata(off, cs_, "L2 table"));
    if (off > file_size_ || file_size_ - off < cs_)
        return corrupt(fmt::format("L2 table at {:#x} lies past the end of the file", off));
    std::vector<uint8_t> data(cs_);
    MPQ_TRY(file_->pread(off, data));
    if (l2_cache_->full()) MPQ_TRY(evict_l2());
    l2_loads_++;
    auto& e = l2_cache_->insert(off, std::move(data), false);
    l2_peak_ = std::max(l2_peak_, l2_cache_->size());
    return &e;
}

Result<Mapping> Qcow2Driver::lookup(uint64_t g) {
    Mapping m;
    uint64_t l1i = g >> l2_bits_;
    if (l1i >= l1_.size()) return m;
    uint64_t l2off = l1_[l1i] & kL1OffsetMask;
    if (!l2off) return m;
    auto e = get_l2(l2off);
    if (!e) return e.take_error();
    m.entry = be64(&(*e)->data[(g & ((1ull << l2_bits_) - 1)) * 8]);
    if (m.entry & kFlagCompressed) {
        m.kind = Kind::Compressed;
        return m;
    }
    m.host = m.entry & kL2OffsetMask;
    if (hdr_.version >= 3 && (m.entry & kFlagZero)) {
        m.kind = Kind::Zero;
    } else if (m.host) {
        m.kind = Kind::Normal;
    } else {
        return m;
    }
    if (m.host & (cs_ - 1)) return corrupt(fmt::format("data cluster offset {:#x} is not cluster aligned", m.host));
    return m;
}

// ---- reads ----

Status Qcow2Driver::read_host(uint64_t host, std::span<uint8_t> buf) {
    // Data clusters may end past EOF (the tail was never written): zeros.
    uint64_t n = host >= file_size_ ? 0 : std::min<uint64_t>(buf.size(), file_size_ - host);
    if (n) MPQ_TRY(file_->pread(host, buf.first(n)));
    if (n < buf.size()) std::memset(buf.data() + n, 0, buf.size() - n);
    return {};
}

Status Qcow2Driver::read_backing(uint64_t off, std::span<uint8_t> buf) {
    uint64_t n = 0;
    if (backing_) {
        uint64_t blen = backing_->length();
        n = off >= blen ? 0 : std::min<uint64_t>(buf.size(), blen - off);
        if (n) MPQ_TRY(backing_->pread(off, buf.first(n)));
    }
    if (n < buf.size()) std::memset(buf.data() + n, 0, buf.size() - n);
    return {};
}

Status Qcow2Driver::read_compressed(uint64_t entry, std::span<uint8_t> out) {
    if (zcache_entry_ != entry || zcache_.size() != cs_) {
        auto ref = decode_compressed(entry, cb_);
        if (ref.offset == 0 || ref.offset >= file_size_)
            return corrupt(fmt::format("compressed cluster at {:#x} lies outside the file", ref.offset));
        MPQ_TRY(check_not_metadata(ref.offset, ref.size, "compressed cluster"));
        std::vector<uint8_t> in(std::min<uint64_t>(ref.size, file_size_ - ref.offset));
        MPQ_TRY(file_->pread(ref.offset, in));
        zcache_.resize(cs_);
        zcache_entry_ = 0;
        MPQ_TRY(decompress_cluster(hdr_.compression_type, in, zcache_));
        zcache_entry_ = entry;
    }
    std::memcpy(out.data(), zcache_.data(), out.size());
    return {};
}

Status Qcow2Driver::read_cluster_content(const Mapping& m, uint64_t g, std::span<uint8_t> out) {
    switch (m.kind) {
    case Kind::Normal: return read_host(m.host, out);
    case Kind::Zero: std::memset(out.data(), 0, out.size()); return {};
    case Kind::Compressed: return read_compressed(m.entry, out);
    case Kind::Unallocated: return read_backing(g << cb_, out);
    }
    return {};
}

Status Qcow2Driver::pread(uint64_t off, std::span<uint8_t> buf) {
    if (off > hdr_.size || buf.size() > hdr_.size - off)
        return fail_errno(EINVAL, "qcow2: read past the end of the disk");
    uint64_t run_host = 0, run_len = 0;
    uint8_t* run_buf = nullptr;
    auto flush_run = [&]() -> Status {
        if (run_len) MPQ_TRY(read_host(run_host, {run_buf, run_len}));
        run_len = 0;
        return {};
    };
    uint64_t pos = 0;
    while (pos < buf.size()) {
        uint64_t g = (off + pos) >> cb_;
        uint64_t coff = (off + pos) & (cs_ - 1);
        uint64_t n = std::min<uint64_t>(cs_ - coff, buf.size() - pos);
        uint8_t* dst = buf.data() + pos;
        auto m = lookup(g);
        if (!m) return m.take_error();
        if (m->kind == Kind::Normal) {
            uint64_t h = m->host + coff;
            if (run_len && run_host + run_len == h && run_buf + run_len == dst) {
                run_len += n;
            } else {
                MPQ_TRY(flush_run());
                run_host = h;
                run_buf = dst;
                run_len = n;
            }
        } else {
            MPQ_TRY(flush_run());
            switch (m->kind) {
            case Kind::Zero: std::memset(dst, 0, n); break;
            case Kind::Unallocated: MPQ_TRY(read_backing(off + pos, {dst, n})); break;
            case Kind::Compressed:
                if (zcache_entry_ != m->entry || zcache_.size() != cs_) {
                    std::vector<uint8_t> tmp(cs_);
                    MPQ_TRY(read_compressed(m->entry, tmp));
                }
                std::memcpy(dst, zcache_.data() + coff, n);
                break;
            default: break;
            }
        }
        pos += n;
    }
    return flush_run();
}

// ---- writes ----

Status Qcow2Driver::write_host(uint64_t host, std::span<const uint8_t> buf) {
    if (auto st = file_->pwrite(host, buf); !st) {
        // What reached the file is then uncertain: back to barriers on
        // every request, the way that needs no dirty bit to be right.
        write_failed_ = true;
        return st;
    }
    file_size_ = std::max(file_size_, host + buf.size());
    return {};
}

Result<TableCache::Entry*> Qcow2Driver::l2_for_write(uint64_t l1i) {
    uint64_t l1e = l1_[l1i];
    uint64_t old = l1e & kL1OffsetMask;
    if (old && (l1e & kFlagCopied)) return get_l2(old);
    // New table, or a private copy of a table shared with a snapshot.
    std::vector<uint8_t> content(cs_, 0);
    if (old) {
        auto e = get_l2(old);
        if (!e) return e.take_error();
        content = (*e)->data;
    }
    auto off = alloc_cluster();
    if (!off) return off.take_error();
    // Refcounts claim a live table is free: a hostile or damaged image. The
    // cache must never hold two entries for one offset.
    if (l2_cache_->find(*off)) return corrupt("refcount of an L2 table in use is zero");
    // Write the new table at once: the file must own its space before a
    // guest write that lands in it is acknowledged. Left to the cache, an
    // ENOSPC at write-back would lose writes the guest saw complete; failing
    // here only leaks the cluster.
    MPQ_TRY(write_host(*off, content));
    if (old) l2_cache_->drop(old);
    if (l2_cache_->full()) MPQ_TRY(evict_l2());
    auto& e = l2_cache_->insert(*off, std::move(content), true);
    l2_peak_ = std::max(l2_peak_, l2_cache_->size());
    l1_[l1i] = *off | kFlagCopied;
    l1_dirty_lo_ = std::min(l1_dirty_lo_, l1i);
    l1_dirty_hi_ = std::max(l1_dirty_hi_, l1i);
    meta_dirty_ = true;
    if (old) pending_frees_.push_back(old >> cb_);
    return &e;
}

void Qcow2Driver::release(const Mapping& m) {
    if (m.kind == Kind::Compressed) {
        auto ref = decode_compressed(m.entry, cb_);
        if (ref.offset == 0) return;
        uint64_t start = ref.offset & ~uint64_t(511);
        uint64_t end = ref.offset + ref.size;  // sector aligned end
        for (uint64_t c = start >> cb_; c <= (end - 1) >> cb_; c++) pending_frees_.push_back(c);
        if (zcache_entry_ == m.entry) zcache_entry_ = 0;
    } else if ((m.kind == Kind::Normal || m.kind == Kind::Zero) && m.host) {
        pending_frees_.push_back(m.host >> cb_);
    }
}

Status Qcow2Driver::write_in_cluster(uint64_t g, uint64_t coff, std::span<const uint8_t> data) {
    const uint64_t l1i = g >> l2_bits_;
    const uint64_t idx = g & ((1ull << l2_bits_) - 1);
    if (l1i >= l1_.size()) return corrupt("write past the L1 table");
    auto e = l2_for_write(l1i);
    if (!e) return e.take_error();
    const uint64_t l2off = (*e)->offset;
    Mapping m;
    m.entry = be64(&(*e)->data[idx * 8]);
    if (m.entry & kFlagCompressed) {
        m.kind = Kind::Compressed;
    } else {
        m.host = m.entry & kL2OffsetMask;
        if (hdr_.version >= 3 && (m.entry & kFlagZero))
            m.kind = Kind::Zero;
        else if (m.host)
            m.kind = Kind::Normal;
        if (m.host & (cs_ - 1))
            return corrupt(fmt::format("data cluster offset {:#x} is not cluster aligned", m.host));
    }
    const bool owned = (m.entry & kFlagCopied) && m.host;
    if (owned && m.kind == Kind::Normal) {
        MPQ_TRY(check_not_metadata(m.host, cs_, "data cluster"));
        return write_host(m.host + coff, data);
    }
    if (!cow_buf_) {
        cow_buf_.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, std::max<uint64_t>(cs_, 4096))));
        if (!cow_buf_) return fail_errno(ENOMEM, "qcow2: no memory for a cluster buffer");
    }
    std::span<uint8_t> buf(cow_buf_.get(), cs_);
    const bool whole = coff == 0 && data.size() == cs_;
    if (owned && m.kind == Kind::Zero) {
        // Preallocated zero cluster: fill it in place, then drop the flag.
        MPQ_TRY(check_not_metadata(m.host, cs_, "data cluster"));
        std::memset(buf.data(), 0, cs_);
        std::memcpy(buf.data() + coff, data.data(), data.size());
        MPQ_TRY(write_host(m.host, buf));
        auto* t = l2_cache_->find(l2off);
        if (!t) {
            auto r = get_l2(l2off);
            if (!r) return r.take_error();
            t = *r;
        }
        put_be64(&t->data[idx * 8], m.host | kFlagCopied);
        t->dirty = true;
        meta_dirty_ = true;
        return {};
    }
    if (!whole) MPQ_TRY(read_cluster_content(m, g, buf));
    std::memcpy(buf.data() + coff, data.data(), data.size());
    auto host = alloc_cluster();
    if (!host) return host.take_error();
    MPQ_TRY(write_host(*host, buf));
    auto* t = l2_cache_->find(l2off);
    if (!t) {
        auto r = get_l2(l2off);
        if (!r) return r.take_error();
        t = *r;
    }
    put_be64(&t->data[idx * 8], *host | kFlagCopied);
    t->dirty = true;
    meta_dirty_ = true;
    release(m);
    if (pending_frees_.size() > kMaxPendingFrees) MPQ_TRY(flush_metadata());
    return {};
}

Status Qcow2Driver::pwrite(uint64_t off, std::span<const uint8_t> buf) {
    MPQ_TRY(check_writable());
    if (off > hdr_.size || buf.size() > hdr_.size - off)
        return fail_errno(EINVAL, "qcow2: write past the end of the disk");
    uint64_t run_host = 0, run_len = 0;
    const uint8_t* run_buf = nullptr;
    auto flush_run = [&]() -> Status {
        if (run_len) MPQ_TRY(write_host(run_host, {run_buf, run_len}));
        run_len = 0;
        return {};
    };
    uint64_t pos = 0;
    while (pos < buf.size()) {
        uint64_t g = (off + pos) >> cb_;
        uint64_t coff = (off + pos) & (cs_ - 1);
        uint64_t n = std::min<uint64_t>(cs_ - coff, buf.size() - pos);
        const uint8_t* src = buf.data() + pos;
        // Clusters we own are overwritten in place, in as few writes as possible.
        uint64_t l1i = g >> l2_bits_;
        bool in_place = false;
        Mapping m;
        if (l1i < l1_.size() && (l1_[l1i] & kFlagCopied)) {
            auto r = lookup(g);
            if (!r) return r.take_error();
            m = *r;
            in_place = m.kind == Kind::Normal && (m.entry & kFlagCopied);
        }
        if (in_place) {
            MPQ_TRY(check_not_metadata(m.host, cs_, "data cluster"));
            uint64_t h = m.host + coff;
            if (run_len && run_host + run_len == h && run_buf + run_len == src) {
                run_len += n;
            } else {
                MPQ_TRY(flush_run());
                run_host = h;
                run_buf = src;
                run_len = n;
            }
        } else {
            MPQ_TRY(flush_run());
            MPQ_TRY(write_in_cluster(g, coff, {src, n}));
        }
        pos += n;
    }
    MPQ_TRY(flush_run());
    return updated();
}

Status Qcow2Driver::drop_cluster(uint64_t g, Drop how) {
    const uint64_t l1i = g >> l2_bits_;
    if (l1i >= l1_.size()) return {};
    auto cur = lookup(g);
    if (!cur) return cur.take_error();
    uint64_t target = 0;
    if (hdr_.version >= 3 && (backing_ || how == Drop::Zero)) target = kFlagZero;
    if (cur->kind == Kind::Unallocated && target == 0) return {};
    if (cur->kind == Kind::Zero && !cur->host && target == kFlagZero) return {};
    auto e = l2_for_write(l1i);
    if (!e) return e.take_error();
    put_be64(&(*e)->data[(g & ((1ull << l2_bits_) - 1)) * 8], target);
    (*e)->dirty = true;
    meta_dirty_ = true;
    release(*cur);
    if (pending_frees_.size() > kMaxPendingFrees) MPQ_TRY(flush_metadata());
    return {};
}

Status Qcow2Driver::discard(uint64_t off, uint64_t len) {
    MPQ_TRY(check_writable());
    if (off > hdr_.size || len > hdr_.size - off) return fail_errno(EINVAL, "qcow2: discard past the end of the disk");
    // Only whole clusters are dropped (the last one may end at the disk end).
    uint64_t first = (off + cs_ - 1) >> cb_;
    uint64_t end = off + len;
    uint64_t last = end == hdr_.size ? (end + cs_ - 1) >> cb_ : end >> cb_;
    for (uint64_t g = first; g < last; g++) {
        // Without an L2 table there is nothing to drop in the whole range it maps.
        uint64_t l1i = g >> l2_bits_;
        if (l1i < l1_.size() && !(l1_[l1i] & kL1OffsetMask) && !(hdr_.version >= 3 && backing_)) {
            g = ((l1i + 1) << l2_bits_) - 1;
            continue;
        }
        MPQ_TRY(drop_cluster(g, Drop::Discard));
    }
    // A discard the guest saw complete must not come back: it may rely on
    // the range reading as zeroes.
    return updated();
}

Status Qcow2Driver::write_zeroes(uint64_t off, uint64_t len) {
    MPQ_TRY(check_writable());
    if (off > hdr_.size || len > hdr_.size - off)
        return fail_errno(EINVAL, "qcow2: write past the end of the disk");
    if (zero_cluster_.size() != cs_) zero_cluster_.assign(cs_, 0);
    uint64_t pos = 0;
    while (pos < len) {
        uint64_t g = (off + pos) >> cb_;
        uint64_t coff = (off + pos) & (cs_ - 1);
        uint64_t n = std::min<uint64_t>(cs_ - coff, len - pos);
        bool whole = coff == 0 && (n == cs_ || off + pos + n == hdr_.size);
        uint64_t l1i = g >> l2_bits_;
        if (!backing_ && l1i < l1_.size() && !(l1_[l1i] & kL1OffsetMask)) {
            // No L2 table and no backing file: the whole range it maps reads as zeroes.
            uint64_t next = (l1i + 1) << (l2_bits_ + cb_);
            pos = std::min(len, next - off);
            continue;
        }
        if (whole && (hdr_.version >= 3 || !backing_)) {
            MPQ_TRY(drop_cluster(g, Drop::Zero));
        } else {
            auto m = lookup(g);
            if (!m) return m.take_error();
            bool reads_zero = m->kind == Kind::Zero || (m->kind == Kind::Unallocated && !backing_);
            if (!reads_zero) MPQ_TRY(write_in_cluster(g, coff, {zero_cluster_.data(), n}));
        }
        pos += n;
    }
    return updated();
}

Status Qcow2Driver::flush() {
    if (read_only_) return {};
    MPQ_TRY(check_writable());
    return flush_metadata();
}

// ---- chain ----

Result<std::unique_ptr<BlockDriver>> open_backing_image(const std::string& path, const std::string& format,
                                                        ChainState& chain) {
    auto canon = chain.open_file ? Result<std::string>(path) : canonical(path);
    if (!canon) return canon.take_error();
    for (const auto& s : chain.seen)
        if (s == *canon) return fail_errno(ELOOP, "backing chain loop: '{}' is already in the chain", path);
    if (++chain.depth > kMaxChainDepth)
        return fail_errno(ELOOP, "backing chain deeper than {} images", kMaxChainDepth);
    chain.seen.push_back(*canon);
    auto f = chain.open_file ? chain.open_file(path) : open_host_file(path, ReadOnly::Yes, chain.cache);
    if (!f) return f.take_error();
    std::string fmt = format;
    if (fmt.empty()) {
        uint8_t magic[4] = {};
        if ((*f)->length() >= 4) MPQ_TRY((*f)->pread(0, magic));
        fmt = probe(magic) ? "qcow2" : "raw";
    }
    if (fmt == "raw") return std::move(*f);
    if (fmt != "qcow2") return fail_errno(EINVAL, "'{}': unsupported backing format '{}'", path, fmt);
    DriveOptions o;
    o.file = path;
    o.format = "qcow2";
    o.read_only = ReadOnly::Yes;
    o.cache = chain.cache;
    auto q = Qcow2Driver::open(std::move(*f), o, chain);
    if (!q) return q.take_error();
    return std::unique_ptr<BlockDriver>(std::move(*q));
}

}  // namespace mpq::block::qcow2

namespace mpq::block {

Result<std::unique_ptr<BlockDriver>> open_qcow2(std::unique_ptr<BlockDriver> file, const DriveOptions& opts) {
    qcow2::ChainState chain;
    chain.cache = opts.cache;
    char buf[PATH_MAX];
    if (!opts.file.empty() && ::realpath(opts.file.c_str(), buf)) chain.seen.push_back(buf);
    auto q = qcow2::Qcow2Driver::open(std::move(file), opts, chain);
    if (!q) return q.take_error();
    return std::unique_ptr<BlockDriver>(std::move(*q));
}

}  // namespace mpq::block
