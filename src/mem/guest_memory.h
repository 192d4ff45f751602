// Guest RAM as the VMM shares it (SYNC_SYSMEM): a table of fd-backed regions
// mapped into this process. Each update replaces the whole table.
#pragma once

#include <cstdint>
#include <memory>
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

    // How device accesses reach fd-backed guest RAM this process has not
    // touched yet (see guest_memory.cc): through the file (pread/pwrite) and
    // after kRent accesses to a granule by pre-faulting it (MADV_POPULATE_*)
    // and copying through the mapping. Both are process-wide switches;
    // populate turns itself off when the kernel or the sandbox refuses it.
    enum class Populate { Off, On };
    enum class FileIo { Off, On };
    static void set_populate(Populate p);
    static Populate populate();
    static void set_file_io(FileIo f);
    static constexpr uint64_t kPopulateGranule = 64 * 1024;
    static constexpr uint8_t kRent = 16;
    // Starts the process's populate thread (before a sandbox stops thread
    // creation; once per process, later calls do nothing). From then on a
    // granule hit kBackgroundRent times is pre-faulted by that thread, off
    // the device's path, and keeps going through the file until it is done;
    // the inline purchase at kRent stays for a thread that falls behind.
    // False when the thread could not be started.
    static bool start_background_populate();
    static constexpr uint8_t kBackgroundRent = 2;
    // Granules of the current table that are accessed through the mapping
    // (pre-faulted, or given up on).
    uint64_t populated_granules() const;
    // Accesses (or parts of one) moved with pread/pwrite since the table was set.
    uint64_t file_accesses() const { return file_accesses_; }

    // Pages of mapped guest RAM that vanished under us (the VMM shrank its
    // file) and were replaced by zero pages instead of killing the process.
    static uint64_t lost_page_faults();

private:
public:
    // One mmap of a region and what is known of its pages, shared with the
    // populate thread: the last owner unmaps it, so a table change never
    // pulls a range from under a pre-fault in progress.
    struct Area;

private:
    struct Mapping {
        uint64_t gpa = 0;
        uint64_t size = 0;
        uint8_t* host = nullptr;
        // identity, to recognise a repeated table
        uint64_t dev = 0, ino = 0;
        int64_t offset = 0;
        std::shared_ptr<Area> area;  // null for host regions (nothing to unmap or track)
        UniqueFd file;           // our own descriptor of the file; invalid: no file I/O
        uint64_t file_base = 0;  // file offset of the area's base
        bool may_shrink = true;  // no F_SEAL_SHRINK: check the size before pwrite
    };
    enum class Access { Read, Write };
    enum class Route { Mapping, File };
    Mapping* find(uint64_t gpa, uint64_t len);
    static void open_for_file_io(Mapping& m, int fd);
    static void prefault(Mapping& m, size_t off, size_t len, Access a);
    static void populate_run(Mapping& m, uint64_t first, uint64_t end, Access a);
    static bool offer_background(Mapping& m, uint64_t first, uint64_t end, Access a, uint8_t count);
    static Route route(Mapping& m, size_t off, size_t len, Access a);
    size_t file_io(Mapping& m, size_t off, uint8_t* buf, size_t len, Access a);
    void copy_in(Mapping& m, uint64_t gpa, uint8_t* out, size_t n);
    void copy_out(Mapping& m, uint64_t gpa, const uint8_t* in, size_t n);
    uint64_t file_accesses_ = 0;
    static Status check_faults(uint64_t before, uint64_t gpa, size_t len);
    std::vector<Mapping> maps_;  // sorted by gpa
};

}  // namespace mpq
