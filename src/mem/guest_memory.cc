#include "mem/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace mpq {
namespace {

bool add_overflows(uint64_t a, uint64_t b) { return a + b < a; }

}  // namespace

GuestMemory::~GuestMemory() { clear(); }

void GuestMemory::clear() {
    for (auto& m : maps_)
        if (m.map_len) ::munmap(m.map_base, m.map_len);
    maps_.clear();
}

Status GuestMemory::set_regions(const std::vector<RamRegion>& regions) {
    static const long page = ::sysconf(_SC_PAGESIZE);
    std::vector<Mapping> next;
    next.reserve(regions.size());
    for (size_t i = 0; i < regions.size(); i++) {
        const RamRegion& r = regions[i];
        if (r.size == 0) return clear(), fail("RAM region {}: size 0", i);
        if (add_overflows(r.gpa, r.size - 1) || r.gpa + (r.size - 1) == UINT64_MAX)
            return clear(), fail("RAM region {}: gpa {:#x} + size {:#x} overflows", i, r.gpa, r.size);
        if (r.offset < 0 || add_overflows(static_cast<uint64_t>(r.offset), r.size))
            return clear(), fail("RAM region {}: bad offset {:#x}", i, r.offset);
        struct stat st;
        if (::fstat(r.fd, &st) != 0) return clear(), fail_errno(errno, "RAM region {}: bad fd", i);
        // Only files (memfd, shared files) can be mapped safely; the whole
        // range must exist, or touching it would raise SIGBUS.
        if (!S_ISREG(st.st_mode)) return clear(), fail("RAM region {}: fd is not a memory file", i);
        uint64_t end = static_cast<uint64_t>(r.offset) + r.size;
        if (static_cast<uint64_t>(st.st_size) < end)
            return clear(), fail("RAM region {}: offset {:#x} + size {:#x} beyond the file size {:#x}",
                                 i, r.offset, r.size, static_cast<uint64_t>(st.st_size));
        next.push_back(Mapping{r.gpa, r.size, nullptr, 0, nullptr, static_cast<uint64_t>(st.st_dev),
                               static_cast<uint64_t>(st.st_ino), r.offset});
    }
    std::sort(next.begin(), next.end(), [](const Mapping& a, const Mapping& b) { return a.gpa < b.gpa; });
    for (size_t i = 1; i < next.size(); i++)
        if (next[i].gpa < next[i - 1].gpa + next[i - 1].size)
            return clear(), fail("RAM regions at {:#x} and {:#x} overlap", next[i - 1].gpa, next[i].gpa);

    // Stock QEMU resends the same table on every topology change.
    bool same = next.size() == maps_.size();
    for (size_t i = 0; same && i < next.size(); i++) {
        const Mapping& a = next[i];
        const Mapping& b = maps_[i];
        same = b.map_len && a.gpa == b.gpa && a.size == b.size && a.dev == b.dev && a.ino == b.ino &&
               a.offset == b.offset;
    }
    if (same) return {};

    clear();
    // `next` is sorted, `regions` is not: find each region's fd again.
    for (auto& m : next) {
        int fd = -1;
        for (const auto& r : regions)
            if (r.gpa == m.gpa && r.size == m.size && r.offset == m.offset) fd = r.fd;
        uint64_t aligned = static_cast<uint64_t>(m.offset) & ~static_cast<uint64_t>(page - 1);
        uint64_t lead = static_cast<uint64_t>(m.offset) - aligned;
        size_t len = static_cast<size_t>(m.size + lead);
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(aligned));
        if (p == MAP_FAILED) {
            int e = errno;
            clear();
            return fail_errno(e, "cannot map RAM at gpa {:#x} size {:#x}: {}", m.gpa, m.size, std::strerror(e));
        }
        m.map_base = p;
        m.map_len = len;
        m.host = static_cast<uint8_t*>(p) + lead;
        maps_.push_back(m);
    }
    return {};
}

Status GuestMemory::set_host_region(uint64_t gpa, uint8_t* host, uint64_t size) {
    if (size == 0 || !host) return fail("host RAM region: empty");
    if (add_overflows(gpa, size - 1) || gpa + (size - 1) == UINT64_MAX)
        return fail("host RAM region: gpa {:#x} + size {:#x} overflows", gpa, size);
    for (const auto& m : maps_)
        if (gpa < m.gpa + m.size && m.gpa < gpa + size)
            return fail("host RAM region at {:#x} overlaps the one at {:#x}", gpa, m.gpa);
    Mapping m{gpa, size, host, 0, nullptr, 0, 0, 0};
    auto pos = std::lower_bound(maps_.begin(), maps_.end(), gpa,
                                [](const Mapping& a, uint64_t g) { return a.gpa < g; });
    maps_.insert(pos, m);
    return {};
}

const GuestMemory::Mapping* GuestMemory::find(uint64_t gpa, uint64_t len) const {
    // Last region starting at or below gpa.
    auto it = std::upper_bound(maps_.begin(), maps_.end(), gpa,
                               [](uint64_t g, const Mapping& a) { return g < a.gpa; });
    if (it == maps_.begin()) return nullptr;
    --it;
    uint64_t off = gpa - it->gpa;
    if (off >= it->size || len > it->size - off) return nullptr;
    return &*it;
}

std::span<uint8_t> GuestMemory::map(uint64_t gpa, uint64_t len) {
    if (len == 0) return {};
    const Mapping* m = find(gpa, len);
    if (!m) return {};
    return {m->host + (gpa - m->gpa), static_cast<size_t>(len)};
}

// Accesses may cross from one region into an adjacent one; a gap fails the
// whole access before anything is copied.
Status GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) {
    if (out.empty()) return {};
    if (add_overflows(gpa, out.size() - 1) || gpa + (out.size() - 1) == UINT64_MAX)
        return fail("DMA read at {:#x} len {:#x}: address overflow", gpa, out.size());
    if (const Mapping* m = find(gpa, out.size())) {
        std::memcpy(out.data(), m->host + (gpa - m->gpa), out.size());
        return {};
    }
    uint64_t a = gpa;
    size_t done = 0;
    while (done < out.size()) {
        const Mapping* m = find(a, 1);
        if (!m) return fail("DMA read at {:#x} len {:#x}: {:#x} is not guest RAM", gpa, out.size(), a);
        done += std::min<uint64_t>(out.size() - done, m->gpa + m->size - a);
        a = gpa + done;
    }
    a = gpa;
    done = 0;
    while (done < out.size()) {
        const Mapping* m = find(a, 1);
        size_t n = static_cast<size_t>(std::min<uint64_t>(out.size() - done, m->gpa + m->size - a));
        std::memcpy(out.data() + done, m->host + (a - m->gpa), n);
        done += n;
        a += n;
    }
    return {};
}

Status GuestMemory::write(uint64_t gpa, std::span<const uint8_t> in) {
    if (in.empty()) return {};
    if (add_overflows(gpa, in.size() - 1) || gpa + (in.size() - 1) == UINT64_MAX)
        return fail("DMA write at {:#x} len {:#x}: address overflow", gpa, in.size());
    if (const Mapping* m = find(gpa, in.size())) {
        std::memcpy(m->host + (gpa - m->gpa), in.data(), in.size());
        return {};
    }
    uint64_t a = gpa;
    size_t done = 0;
    while (done < in.size()) {
        const Mapping* m = find(a, 1);
        if (!m) return fail("DMA write at {:#x} len {:#x}: {:#x} is not guest RAM", gpa, in.size(), a);
        done += std::min<uint64_t>(in.size() - done, m->gpa + m->size - a);
        a = gpa + done;
    }
    a = gpa;
    done = 0;
    while (done < in.size()) {
        const Mapping* m = find(a, 1);
        size_t n = static_cast<size_t>(std::min<uint64_t>(in.size() - done, m->gpa + m->size - a));
        std::memcpy(m->host + (a - m->gpa), in.data() + done, n);
        done += n;
        a += n;
    }
    return {};
}

}  // namespace mpq
