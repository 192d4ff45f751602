// The qcow2 format driver (versions 2 and 3) on top of a protocol driver.
//
// Crash consistency: metadata is cached and written back in an order that
// leaves the image consistent, or merely leaking clusters, at every point:
//   1. a new cluster's refcount is raised (refcount block cache);
//   2. guest data goes straight to the new cluster;
//   3. at flush or eviction: refcount blocks are written, then a barrier,
//      then L2 tables, a barrier, then the L1 table;
//   4. refcount decrements (discard, COW of shared clusters) are queued and
//      applied only once the L2/L1 updates that dropped the references are
//      on disk, so a freed cluster is never reused while still referenced.
// Step 3 also runs before every write, write-zeroes or discard returns
// (commit_metadata; the backend may run it once for a batch of requests):
// a process killed after the acknowledgement then leaves the metadata in
// the file, where the kernel keeps it, and the same order keeps the file
// consistent at every instant in between, for a kill as for a power
// failure. Only queued decrements wait for an explicit flush; losing them
// leaks clusters, never data.
// On a version 3 image (and a file not opened O_DSYNC) the barriers of
// step 3 are left to the explicit flush: before the first metadata write
// since open or since the last flush, the header's dirty bit is set and
// made durable (one fdatasync), then each request's tables are written in
// the same order with plain writes, which is all a process death needs (the
// kernel keeps them, in order). Two barriers stay, each amortised: before
// the L1 entry that links a new L2 table (L1 pointing at a stale cluster is
// beyond a refcount rebuild), and, before L2 tables are written, one that
// makes the file's new length durable a few MiB ahead (an L2 entry past the
// end of the file is beyond it too). A power failure may then leave refcounts
// behind the tables, which the dirty bit announces: whoever opens the image
// next (this driver, QEMU, qemu-img) rebuilds the refcounts first. The flush
// writes everything back with its barriers and clears the bit. Version 2
// has no dirty bit and keeps the barriers on every allocating request.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "block/block.h"
#include "block/qcow2_format.h"

namespace mpq::block::qcow2 {

// Cluster-sized metadata tables (L2 tables or refcount blocks), bounded, LRU.
class TableCache {
public:
    struct Entry {
        uint64_t offset = 0;
        std::vector<uint8_t> data;
        bool dirty = false;
    };
    TableCache(size_t capacity, size_t table_size) : capacity_(capacity < 1 ? 1 : capacity), table_size_(table_size) {}

    size_t capacity() const { return capacity_; }
    size_t size() const { return map_.size(); }
    size_t table_size() const { return table_size_; }
    // Returns the cached table and marks it most recently used, or nullptr.
    Entry* find(uint64_t off);
    bool full() const { return map_.size() >= capacity_; }
    // The least recently used entry (the next victim); cache must be non-empty.
    Entry& lru() { return lru_.back(); }
    void erase_lru();
    // Inserts a new table (cache must not be full).
    Entry& insert(uint64_t off, std::vector<uint8_t> data, bool dirty);
    void drop(uint64_t off);
    void clear() { lru_.clear(); map_.clear(); }
    template <typename F>
    void for_each(F f) {
        for (auto& e : lru_) f(e);
    }
    bool any_dirty() const;

private:
    size_t capacity_, table_size_;
    std::list<Entry> lru_;  // front = most recent
    std::unordered_map<uint64_t, std::list<Entry>::iterator> map_;
};

// Per-open state of a backing chain walk (loop and depth detection).
struct ChainState {
    std::vector<std::string> seen;  // canonical paths already in the chain
    unsigned depth = 0;
    CacheMode cache = CacheMode::Writeback;  // backing files follow the top image
    // Opens a backing file's bytes (read-only) by the name the image gives;
    // unset: the host file system. Set where no host file may be touched
    // (the fuzzer serves backing files from memory); the name is then taken
    // as given, not canonicalised.
    std::function<Result<std::unique_ptr<BlockDriver>>(const std::string& path)> open_file;
};
constexpr unsigned kMaxChainDepth = 16;

// What a guest cluster maps to.
enum class Kind : uint8_t { Unallocated, Zero, Normal, Compressed };
struct Mapping {
    Kind kind = Kind::Unallocated;
    uint64_t host = 0;   // Normal: host cluster offset (also preallocated Zero)
    uint64_t entry = 0;  // raw L2 entry
};

struct CheckReport {
    uint64_t corruptions = 0;    // clusters referenced more often than counted
    uint64_t leaks = 0;          // clusters counted more often than referenced
    uint64_t copied_errors = 0;  // COPIED flags not matching refcount == 1
};

struct CacheStats {
    size_t l2_capacity = 0, l2_entries = 0, l2_peak = 0;
    size_t rb_capacity = 0, rb_entries = 0;
    uint64_t l2_loads = 0;
};

class Qcow2Driver final : public BlockDriver {
public:
    static Result<std::unique_ptr<Qcow2Driver>> open(std::unique_ptr<BlockDriver> file, const DriveOptions& opts,
                                                     ChainState& chain);
    ~Qcow2Driver() override;

    std::string format_name() const override { return "qcow2"; }
    uint64_t length() const override { return hdr_.size; }
    Status pread(uint64_t off, std::span<uint8_t> buf) override;
    Status pwrite(uint64_t off, std::span<const uint8_t> buf) override;
    Status flush() override;
    Status discard(uint64_t off, uint64_t len) override;
    Status write_zeroes(uint64_t off, uint64_t len) override;
    bool concurrent_safe() const override { return false; }
    void set_metadata_writes(MetadataWrites w) override { metadata_writes_ = w; }
    Status commit_metadata() override;

    // Flushes everything and clears the dirty bit; the destructor does the
    // same but can only log a failure.
    Status close();

    const Header& header() const { return hdr_; }
    const std::vector<Snapshot>& snapshots() const { return snapshots_; }
    BlockDriver* backing() const { return backing_.get(); }
    CacheStats cache_stats() const;
    // Refcount of the host cluster containing `host_off` (tests, info).
    Result<uint64_t> refcount(uint64_t host_off);
    // Compares the stored refcounts with the references found in the
    // metadata, as `qemu-img check` does (after flushing our caches).
    Result<CheckReport> check();
    // Whether the refcounts were rebuilt at open (dirty image).
    bool rebuilt_refcounts() const { return rebuilt_; }

private:
    Qcow2Driver() = default;
    Status load(const DriveOptions& opts, ChainState& chain);
    Status load_snapshots();
    Status open_for_write();

    // Mapping and tables (qcow2_driver.cc).
    Result<Mapping> lookup(uint64_t guest_cluster);
    Result<TableCache::Entry*> get_l2(uint64_t off);
    Result<TableCache::Entry*> l2_for_write(uint64_t l1_index);
    Status read_host(uint64_t host, std::span<uint8_t> buf);
    Status read_cluster_content(const Mapping& m, uint64_t guest_cluster, std::span<uint8_t> out);
    Status read_backing(uint64_t off, std::span<uint8_t> buf);
    Status read_compressed(uint64_t entry, std::span<uint8_t> out);
    Status write_host(uint64_t host, std::span<const uint8_t> buf);
    Status write_in_cluster(uint64_t guest_cluster, uint64_t coff, std::span<const uint8_t> data);
    enum class Drop : uint8_t { Discard, Zero };
    Status drop_cluster(uint64_t guest_cluster, Drop how);
    void release(const Mapping& m);
    Status check_not_metadata(uint64_t host, uint64_t len, const char* what) const;
    Status check_writable() const;

    // Refcounts, allocation and write-back (qcow2_refcount.cc).
    Result<TableCache::Entry*> get_refblock(uint64_t block_index);
    Result<uint64_t> get_refcount(uint64_t cluster);
    Status set_refcount(uint64_t cluster, uint64_t value);
    Result<uint64_t> find_free();
    Result<uint64_t> alloc_cluster();
    Status create_refblock(uint64_t block_index);
    Status grow_reftable(uint64_t min_block);
    Status evict_l2();
    Status write_dirty_refblocks();
    Status write_l1();
    Status apply_pending_frees();
    Status flush_metadata();
    // Makes the dirty bit durable unless it already is (see the top).
    Status mark_dirty();
    // Under the dirty bit, before L2 tables are written: an L2 entry must
    // not outlive a power failure pointing past the end of the file (no
    // repair can give that cluster a meaning), so a file that grew since
    // the last barrier is extended a few MiB ahead and made durable.
    Status durable_length();
    // Whether metadata writes between flushes go without barriers, under
    // the dirty bit.
    bool unordered_until_flush() const { return hdr_.version >= 3 && !sync_file_ && !write_failed_; }
    // After a guest-visible update: commit_metadata() unless batched.
    Status updated();
    Status write_header_field(size_t off, std::span<const uint8_t> bytes);
    Status set_incompat(uint64_t bits);
    Status rebuild_refcounts();
    Result<std::vector<uint32_t>> count_references();

    std::unique_ptr<BlockDriver> file_;
    std::unique_ptr<BlockDriver> backing_;
    std::string path_;
    Header hdr_;
    std::vector<Snapshot> snapshots_;
    bool read_only_ = true;
    uint32_t cb_ = 16;          // cluster bits
    uint64_t cs_ = 65536;       // cluster size
    uint32_t l2_bits_ = 13;     // log2(L2 entries)
    uint32_t rb_bits_ = 15;     // log2(refcount entries per block)
    uint32_t refcount_bits_ = 16;
    uint64_t refcount_max_ = 0xffff;
    uint64_t file_size_ = 0;
    uint64_t snapshot_table_bytes_ = 0;
    std::vector<uint64_t> l1_;
    uint64_t l1_dirty_lo_ = UINT64_MAX, l1_dirty_hi_ = 0;
    std::vector<uint64_t> reftable_;
    std::unique_ptr<TableCache> l2_cache_;
    std::unique_ptr<TableCache> rb_cache_;
    size_t l2_peak_ = 0;
    uint64_t l2_loads_ = 0;
    std::vector<uint64_t> pending_frees_;  // host cluster indexes
    uint64_t free_hint_ = 0;
    uint64_t alloc_end_ = 0;  // one past the highest cluster we allocated
    bool dirty_bit_set_ = false;  // we set the dirty bit in the file's header
    bool lazy_refcounts_ = false;  // keep it set until close
    uint64_t durable_size_ = 0;  // file length as of the last barrier
    bool write_failed_ = false;  // a write to the file failed once
    bool rebuilt_ = false;
    bool closed_ = false;
    bool broken_ = false;  // a metadata write failed: refuse further writes
    MetadataWrites metadata_writes_ = MetadataWrites::PerRequest;
    // The file writes synchronously (O_DSYNC: cache=writethrough and
    // directsync): each write is durable, in order, when it returns, so
    // write-through needs no barrier of its own.
    bool sync_file_ = false;
    // Some table may be dirty in the caches (cleared once all are written).
    bool meta_dirty_ = false;
    // One decompressed cluster, keyed by its L2 entry.
    uint64_t zcache_entry_ = 0;
    std::vector<uint8_t> zcache_;
    // Page aligned so that cache=none needs no bounce buffer for COW writes.
    struct FreeDeleter {
        void operator()(uint8_t* p) const { std::free(p); }
    };
    std::unique_ptr<uint8_t, FreeDeleter> cow_buf_;
    std::vector<uint8_t> zero_cluster_;
};

// Opens `path` as a backing image (raw or qcow2, probed unless `format` says).
Result<std::unique_ptr<BlockDriver>> open_backing_image(const std::string& path, const std::string& format,
                                                        ChainState& chain);
// The host file opener used for backing files and by the tests.
Result<std::unique_ptr<BlockDriver>> open_host_file(const std::string& path, ReadOnly ro,
                                                    CacheMode cache = CacheMode::Writeback);

}  // namespace mpq::block::qcow2
