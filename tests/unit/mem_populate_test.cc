// GuestMemory reaches fd-backed guest RAM it has not touched yet through the
// file (pread/pwrite) and, after kRent accesses to a 64 KiB granule,
// pre-faults it (MADV_POPULATE_*) and copies through the mapping. Both are
// pure speed measures: these tests check that data and results are the same
// with them on, off, or failing. "Populate-only" tests switch file I/O off.
#include "mem/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

using namespace mpq;

namespace {

constexpr uint64_t G = GuestMemory::kPopulateGranule;

UniqueFd memfd(uint64_t size) {
    UniqueFd fd(::memfd_create("pop-test", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    return fd;
}

// Every byte of the file gets a position-dependent value, so any byte the
// populate call changed would show.
void fill_pattern(int fd, uint64_t size) {
    std::vector<uint8_t> b(size);
    for (uint64_t i = 0; i < size; i++) b[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
    ASSERT_EQ(::pwrite(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
}
uint8_t pattern(uint64_t off) { return static_cast<uint8_t>(off * 7 + (off >> 12)); }

std::vector<uint8_t> file_bytes(int fd, uint64_t size) {
    std::vector<uint8_t> b(size);
    EXPECT_EQ(::pread(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    return b;
}

// Sets the process-wide switches and restores the defaults afterwards.
struct Switches {
    explicit Switches(GuestMemory::FileIo f) {
        GuestMemory::set_populate(GuestMemory::Populate::On);
        GuestMemory::set_file_io(f);
    }
    ~Switches() {
        GuestMemory::set_populate(GuestMemory::Populate::On);
        GuestMemory::set_file_io(GuestMemory::FileIo::On);
    }
};
struct PopulateOn : Switches {
    PopulateOn() : Switches(GuestMemory::FileIo::Off) {}
};
constexpr GuestMemory::FileIo kBoth[] = {GuestMemory::FileIo::Off, GuestMemory::FileIo::On};

}  // namespace

TEST(MemPopulate, DataUnchangedAroundTheTarget) {
    for (auto mode : kBoth) {
        SCOPED_TRACE(mode == GuestMemory::FileIo::On ? "file I/O on" : "populate only");
        Switches sw(mode);
        const uint64_t size = 4 * G;
        auto fd = memfd(size);
        fill_pattern(fd.get(), size);
        GuestMemory gm;
        ASSERT_TRUE(gm.set_regions({{0x100000, size, 0, fd.get()}}).ok());
        EXPECT_EQ(gm.populated_granules(), 0u);

        std::vector<uint8_t> w(300);
        std::iota(w.begin(), w.end(), uint8_t{1});
        ASSERT_TRUE(gm.write(0x100000 + G + 100, w).ok());
        std::vector<uint8_t> r(300);
        ASSERT_TRUE(gm.read(0x100000 + G + 100, r).ok());
        EXPECT_EQ(r, w);
        // A read in another granule returns the file's bytes.
        uint8_t b[8];
        ASSERT_TRUE(gm.read(0x100000 + 3 * G + 5, b).ok());
        for (uint64_t i = 0; i < sizeof b; i++) EXPECT_EQ(b[i], pattern(3 * G + 5 + i));

        auto f = file_bytes(fd.get(), size);
        for (uint64_t i = 0; i < size; i++) {
            uint8_t want = (i >= G + 100 && i < G + 400) ? w[i - G - 100] : pattern(i);
            ASSERT_EQ(f[i], want) << "file offset " << i;
        }
        if (mode == GuestMemory::FileIo::Off && GuestMemory::populate() == GuestMemory::Populate::On) {
            EXPECT_EQ(gm.populated_granules(), 2u);
        }
    }
}

TEST(MemPopulate, WriteSpanningTwoGranulesAndTheRegionEnd) {
    for (auto mode : kBoth) {
        SCOPED_TRACE(mode == GuestMemory::FileIo::On ? "file I/O on" : "populate only");
        Switches sw(mode);
        // The region starts inside a page of the file (so the mapping has a
        // lead) and ends half-way into its second granule: the second populate
        // must be clipped to the mapping.
        const uint64_t file = 4 * G;
        auto fd = memfd(file);
        fill_pattern(fd.get(), file);
        const int64_t off = 0x3010;
        const uint64_t size = G + G / 2;
        GuestMemory gm;
        ASSERT_TRUE(gm.set_regions({{0x200000, size, off, fd.get()}}).ok());

        // The mapping starts at file page 0x3000 (lead 0x10): from 8 bytes
        // before its first granule boundary on to the last byte of the region.
        const uint64_t gpa = 0x200000 + G - 0x18;
        const uint64_t len = 0x200000 + size - gpa;
        std::vector<uint8_t> w(len, 0xc3);
        ASSERT_TRUE(gm.write(gpa, w).ok());
        // One byte further is not guest RAM: refused, nothing written.
        const uint8_t one[1] = {0x11};
        EXPECT_FALSE(gm.write(0x200000 + size, one).ok());

        auto f = file_bytes(fd.get(), file);
        const uint64_t first = static_cast<uint64_t>(off) + (gpa - 0x200000);
        for (uint64_t i = 0; i < file; i++) {
            uint8_t want = (i >= first && i < first + len) ? 0xc3 : pattern(i);
            ASSERT_EQ(f[i], want) << "file offset " << i;
        }
        std::vector<uint8_t> r(len);
        ASSERT_TRUE(gm.read(gpa, r).ok());
        EXPECT_EQ(r, w);
        if (mode == GuestMemory::FileIo::Off && GuestMemory::populate() == GuestMemory::Populate::On) {
            EXPECT_EQ(gm.populated_granules(), 2u);
        }
    }
}

TEST(MemPopulate, AccessAcrossTwoRegions) {
    for (auto mode : kBoth) {
        SCOPED_TRACE(mode == GuestMemory::FileIo::On ? "file I/O on" : "populate only");
        Switches sw(mode);
        auto fd = memfd(4 * G);
        fill_pattern(fd.get(), 4 * G);
        GuestMemory gm;
        ASSERT_TRUE(gm.set_regions({{0, G, 0, fd.get()}, {G, G, 2 * G, fd.get()}}).ok());
        std::vector<uint8_t> w(64, 0x5a);
        ASSERT_TRUE(gm.write(G - 32, w).ok());
        auto f = file_bytes(fd.get(), 4 * G);
        for (uint64_t i = 0; i < 4 * G; i++) {
            bool hit = (i >= G - 32 && i < G) || (i >= 2 * G && i < 2 * G + 32);
            ASSERT_EQ(f[i], hit ? 0x5a : pattern(i)) << "file offset " << i;
        }
        if (mode == GuestMemory::FileIo::Off && GuestMemory::populate() == GuestMemory::Populate::On) {
            EXPECT_EQ(gm.populated_granules(), 2u);
        }
    }
}

TEST(MemPopulate, NewTableStartsWithAnEmptyBitmap) {
    PopulateOn on;
    auto a = memfd(4 * G), b = memfd(4 * G);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 4 * G, 0, a.get()}}).ok());
    const uint8_t v[4] = {1, 2, 3, 4};
    ASSERT_TRUE(gm.write(0, v).ok());
    ASSERT_TRUE(gm.write(3 * G, v).ok());
    if (GuestMemory::populate() == GuestMemory::Populate::Off) GTEST_SKIP() << "kernel has no MADV_POPULATE";
    EXPECT_EQ(gm.populated_granules(), 2u);
    // The same table again (stock resends it): mappings and bitmap stay.
    UniqueFd dup(::dup(a.get()));
    ASSERT_TRUE(gm.set_regions({{0, 4 * G, 0, dup.get()}}).ok());
    EXPECT_EQ(gm.populated_granules(), 2u);
    // Another file at the same gpa: new mappings, nothing populated yet.
    ASSERT_TRUE(gm.set_regions({{0, 4 * G, 0, b.get()}}).ok());
    EXPECT_EQ(gm.populated_granules(), 0u);
    uint8_t r[4];
    ASSERT_TRUE(gm.read(0, r).ok());
    EXPECT_EQ(r[0], 0);  // b's bytes, not a's
    EXPECT_EQ(gm.populated_granules(), 1u);
    gm.clear();
    EXPECT_EQ(gm.populated_granules(), 0u);
}

TEST(MemPopulate, MapPopulatesForWriting) {
    PopulateOn on;
    auto fd = memfd(4 * G);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 4 * G, 0, fd.get()}}).ok());
    auto s = gm.map(G / 2, 2 * G);
    ASSERT_EQ(s.size(), 2 * G);
    s[0] = 0x9e;
    s[2 * G - 1] = 0x9f;
    uint8_t b[1];
    ASSERT_EQ(::pread(fd.get(), b, 1, static_cast<off_t>(G / 2)), 1);
    EXPECT_EQ(b[0], 0x9e);
    ASSERT_EQ(::pread(fd.get(), b, 1, static_cast<off_t>(G / 2 + 2 * G - 1)), 1);
    EXPECT_EQ(b[0], 0x9f);
    if (GuestMemory::populate() == GuestMemory::Populate::On) {
        EXPECT_EQ(gm.populated_granules(), 3u);
    }
}

// Both switches off: plain copies through the mapping, as before either
// existed; the granules still count as settled so nothing is retried.
TEST(MemPopulate, SwitchedOffAccessesStillWork) {
    PopulateOn on;
    auto fd = memfd(4 * G);
    fill_pattern(fd.get(), 4 * G);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 4 * G, 0, fd.get()}}).ok());
    GuestMemory::set_populate(GuestMemory::Populate::Off);
    std::vector<uint8_t> w(2 * G, 0x33);
    ASSERT_TRUE(gm.write(G / 2, w).ok());
    std::vector<uint8_t> r(2 * G);
    ASSERT_TRUE(gm.read(G / 2, r).ok());
    EXPECT_EQ(r, w);
    EXPECT_EQ(gm.file_accesses(), 0u);
    EXPECT_EQ(gm.populated_granules(), 3u);
    EXPECT_EQ(GuestMemory::populate(), GuestMemory::Populate::Off);
    auto f = file_bytes(fd.get(), 4 * G);
    EXPECT_EQ(f[G / 2 - 1], pattern(G / 2 - 1));
    EXPECT_EQ(f[G / 2], 0x33);
    EXPECT_EQ(f[G / 2 + 2 * G], pattern(G / 2 + 2 * G));
}

// The VMM shrank the file before we touched it: MADV_POPULATE fails with
// EFAULT, pread comes back short. That must neither fail an access to the
// part still there nor turn the feature off, and the lost part still fails
// cleanly (SIGBUS guard).
TEST(MemPopulate, TruncatedFileFailingPopulateNeverFailsTheAccess) {
    for (auto mode : kBoth) {
        SCOPED_TRACE(mode == GuestMemory::FileIo::On ? "file I/O on" : "populate only");
        Switches sw(mode);
        auto fd = memfd(4 * G);
        fill_pattern(fd.get(), 4 * G);
        GuestMemory gm;
        ASSERT_TRUE(gm.set_regions({{0, 4 * G, 0, fd.get()}}).ok());
        ASSERT_EQ(::ftruncate(fd.get(), 0x1000), 0);  // first page only

        const uint8_t w[4] = {9, 8, 7, 6};
        ASSERT_TRUE(gm.write(0x10, w).ok());
        uint8_t r[4];
        ASSERT_TRUE(gm.read(0x10, r).ok());
        EXPECT_EQ(0, std::memcmp(r, w, 4));
        uint8_t b[4];
        ASSERT_EQ(::pread(fd.get(), b, 4, 0x10), 4);
        EXPECT_EQ(0, std::memcmp(b, w, 4));
        EXPECT_EQ(GuestMemory::populate(), GuestMemory::Populate::On);

        uint64_t before = GuestMemory::lost_page_faults();
        auto e = gm.write(2 * G + 8, w);
        ASSERT_FALSE(e.ok());
        EXPECT_NE(e.error().message.find("gone"), std::string::npos) << e.error().message;
        EXPECT_EQ(GuestMemory::lost_page_faults(), before + 1);
        // A read of another lost page fails the same way (pread stops at
        // the end of the file, the copy of the rest hits the guard).
        uint8_t lost[4];
        auto e2 = gm.read(3 * G + 8, lost);
        ASSERT_FALSE(e2.ok());
        EXPECT_EQ(GuestMemory::lost_page_faults(), before + 2);
        // Never a pwrite past the end: the VMM's file keeps the size it set.
        struct stat st;
        ASSERT_EQ(::fstat(fd.get(), &st), 0);
        EXPECT_EQ(st.st_size, 0x1000);
        EXPECT_EQ(GuestMemory::populate(), GuestMemory::Populate::On);
    }
}

// Memory the process owns already (in-process VMM RAM) is never advised.
TEST(MemPopulate, HostRegionsAreLeftAlone) {
    PopulateOn on;
    std::vector<uint8_t> ram(2 * G, 0x44);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_host_region(0, ram.data(), ram.size()).ok());
    const uint8_t v[2] = {1, 2};
    ASSERT_TRUE(gm.write(G - 1, v).ok());
    EXPECT_EQ(ram[G - 1], 1);
    EXPECT_EQ(ram[G], 2);
    EXPECT_EQ(ram[G + 1], 0x44);
    EXPECT_EQ(gm.populated_granules(), 0u);
}

// A cold granule is reached through the file until it has been accessed
// kRent times; then it is populated and copied through the mapping.
TEST(MemFileIo, FileUntilTheRentIsPaidThenTheMapping) {
    Switches sw(GuestMemory::FileIo::On);
    auto fd = memfd(4 * G);
    fill_pattern(fd.get(), 4 * G);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0x100000, 4 * G, 0, fd.get()}}).ok());
    uint8_t page[4096];
    for (unsigned i = 0; i + 1 < GuestMemory::kRent; i++) {
        std::memset(page, static_cast<int>(i), sizeof page);
        ASSERT_TRUE(gm.write(0x100000 + G + (i % 16) * 4096, page).ok());
    }
    EXPECT_EQ(gm.file_accesses(), GuestMemory::kRent - 1u);
    EXPECT_EQ(gm.populated_granules(), 0u);
    // The rent-th access buys the granule and is itself a copy.
    std::memset(page, 0xab, sizeof page);
    ASSERT_TRUE(gm.write(0x100000 + G + 4096, page).ok());
    EXPECT_EQ(gm.populated_granules(), 1u);
    EXPECT_EQ(gm.file_accesses(), GuestMemory::kRent - 1u);
    uint8_t r[4096];
    ASSERT_TRUE(gm.read(0x100000 + G + 4096, r).ok());
    EXPECT_EQ(gm.file_accesses(), GuestMemory::kRent - 1u);
    EXPECT_EQ(0, std::memcmp(r, page, sizeof r));

    // What the file holds: each 4 KiB page of granule 1 carries the last
    // value written to it, the rest of the file is untouched.
    auto f = file_bytes(fd.get(), 4 * G);
    for (uint64_t i = 0; i < 4 * G; i++) {
        uint8_t want = pattern(i);
        if (i >= G && i < 2 * G) {
            uint64_t pg = (i - G) / 4096;
            if (pg == 1) want = 0xab;
            else if (pg < GuestMemory::kRent - 1) want = static_cast<uint8_t>(pg);
        }
        ASSERT_EQ(f[i], want) << "file offset " << i;
    }
    // A read through the file of a cold granule returns the file's bytes.
    uint8_t b[64];
    ASSERT_TRUE(gm.read(0x100000 + 3 * G - 32, b).ok());
    EXPECT_EQ(gm.file_accesses(), GuestMemory::kRent);
    for (uint64_t i = 0; i < sizeof b; i++) EXPECT_EQ(b[i], pattern(3 * G - 32 + i));
    // A new table starts cold again.
    auto other = memfd(4 * G);
    ASSERT_TRUE(gm.set_regions({{0x100000, 4 * G, 0, other.get()}}).ok());
    EXPECT_EQ(gm.populated_granules(), 0u);
    EXPECT_EQ(gm.file_accesses(), 0u);
}

// A file sealed against shrinking and growing (stock QEMU's memfd default)
// takes pwrite without the size check; the seals still hold.
TEST(MemFileIo, SealedMemfd) {
    Switches sw(GuestMemory::FileIo::On);
    UniqueFd fd(::memfd_create("pop-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(2 * G)), 0);
    ASSERT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 2 * G, 0, fd.get()}}).ok());
    std::vector<uint8_t> w(G, 0x6d);
    ASSERT_TRUE(gm.write(G / 2, w).ok());
    EXPECT_EQ(gm.file_accesses(), 1u);
    auto f = file_bytes(fd.get(), 2 * G);
    for (uint64_t i = 0; i < 2 * G; i++) ASSERT_EQ(f[i], (i >= G / 2 && i < G / 2 + G) ? 0x6d : 0) << i;
}

// With O_APPEND, Linux's pwrite ignores the offset: such a descriptor is
// never used for file I/O, the mapping takes every access.
TEST(MemFileIo, AppendDescriptorUsesTheMapping) {
    Switches sw(GuestMemory::FileIo::On);
    auto fd = memfd(2 * G);
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd.get());
    UniqueFd app(::open(path, O_RDWR | O_APPEND | O_CLOEXEC));
    ASSERT_TRUE(app.valid());
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 2 * G, 0, app.get()}}).ok());
    const uint8_t v[4] = {1, 2, 3, 4};
    ASSERT_TRUE(gm.write(G + 4, v).ok());
    EXPECT_EQ(gm.file_accesses(), 0u);
    uint8_t b[4];
    ASSERT_EQ(::pread(fd.get(), b, 4, static_cast<off_t>(G + 4)), 4);
    EXPECT_EQ(0, std::memcmp(b, v, 4));
    struct stat st;
    ASSERT_EQ(::fstat(fd.get(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 2 * G);
}
