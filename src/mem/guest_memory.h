// Guest RAM as the VMM shares it (SYNC_SYSMEM): a table of fd-backed regions
// mapped into this process. Each update replaces the whole table.
#pragma once

#include <cstdint>
#include <vector>

#include "mem/dma.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq {

struct RamRegion {
    uint64_t gpa = 0;
    uint64_t size = 0;
    int64_t offset = 0;  // offset of the region inside the fd
    int fd = -1;         // borrowed: the caller keeps ownership
};

class GuestMemory final : public DmaSpace {
public:
    GuestMemory() = default;
    ~GuestMemory() override;
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;

    // Drops every old mapping, then maps each region. On failure the table is
    // left empty (never half old, half new). Overlapping regions are refused.
    // Identical tables are recognised and cost nothing (stock QEMU resends the
    // table on every memory-topology change).
    Status set_regions(const std::vector<RamRegion>& regions);
    // Maps memory this process already owns (tests, in-process VMM RAM).
    Status set_host_region(uint64_t gpa, uint8_t* host, uint64_t size);
    void clear();

    Status read(uint64_t gpa, std::span<uint8_t> out) override;
    Status write(uint64_t gpa, std::span<const uint8_t> in) override;
    std::span<uint8_t> map(uint64_t gpa, uint64_t len) override;

    size_t region_count() const { return maps_.size(); }

    // Pre-faulting of fd-backed guest RAM before the first device access to
    // each granule (see guest_memory.cc). Process-wide; it turns itself off
    // when the kernel or the sandbox refuses MADV_POPULATE_*.
    enum class Populate { Off, On };
    static void set_populate(Populate p);
    static Populate populate();
    static constexpr uint64_t kPopulateGranule = 64 * 1024;
    // Granules of the current table already populated (or given up on).
    uint64_t populated_granules() const;
    // Pages of mapped guest RAM that vanished under us (the VMM shrank its
    // file) and were replaced by zero pages instead of killing the process.
    static uint64_t lost_page_faults();

private:
    struct Mapping {
        uint64_t gpa;
        uint64_t size;
        uint8_t* host;
        size_t map_len;   // length passed to mmap (0: not ours to unmap)
        void* map_base;
        // identity, to recognise a repeated table
        uint64_t dev, ino;
        int64_t offset;
        // One bit per kPopulateGranule of [map_base, map_base + map_len):
        // set once that granule was pre-faulted. Empty for host regions.
        std::vector<uint64_t> populated;
    };
    enum class Access { Read, Write };
    Mapping* find(uint64_t gpa, uint64_t len);
    static void prefault(Mapping& m, const uint8_t* host, size_t len, Access a);
    static Status check_faults(uint64_t before, uint64_t gpa, size_t len);
    std::vector<Mapping> maps_;  // sorted by gpa
};

}  // namespace mpq
