#include "mem/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include <gtest/gtest.h>

using namespace mpq;

namespace {
UniqueFd memfd(uint64_t size) {
    UniqueFd fd(::memfd_create("gm-test", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    return fd;
}
void poke(int fd, uint64_t off, uint8_t v) { ASSERT_EQ(::pwrite(fd, &v, 1, static_cast<off_t>(off)), 1); }
uint8_t peek(int fd, uint64_t off) {
    uint8_t v = 0;
    EXPECT_EQ(::pread(fd, &v, 1, static_cast<off_t>(off)), 1);
    return v;
}
}  // namespace

TEST(GuestMemory, MapsRegionsAtGpaWithOffset) {
    auto fd = memfd(1 << 20);
    GuestMemory gm;
    // Like stock's pc table: [0,0xC0000) off 0 and [0x100000,..) off 0x100000 of one memfd.
    std::vector<RamRegion> t = {{0x100000, 0x40000, 0x80000, fd.get()}, {0, 0x10000, 0, fd.get()}};
    ASSERT_TRUE(gm.set_regions(t).ok());
    EXPECT_EQ(gm.region_count(), 2u);
    poke(fd.get(), 0x80010, 0xab);
    uint8_t b[2] = {};
    ASSERT_TRUE(gm.read(0x100010, b).ok());
    EXPECT_EQ(b[0], 0xab);
    const uint8_t w[2] = {0x11, 0x22};
    ASSERT_TRUE(gm.write(0xfffe, std::span<const uint8_t>(w, 1)).ok());
    EXPECT_EQ(peek(fd.get(), 0xfffe), 0x11);
    auto m = gm.map(0x100000, 0x40000);
    ASSERT_EQ(m.size(), 0x40000u);
    EXPECT_EQ(m[0x10], 0xab);
}

TEST(GuestMemory, BoundsAndOverflowChecked) {
    auto fd = memfd(0x20000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0x1000, 0x10000, 0, fd.get()}}).ok());
    uint8_t buf[16];
    EXPECT_FALSE(gm.read(0, buf).ok());                // below
    EXPECT_FALSE(gm.read(0x10ff8, buf).ok());          // straddles the end
    EXPECT_TRUE(gm.read(0x10ff0, buf).ok());           // last 16 bytes
    EXPECT_FALSE(gm.read(0x11000, buf).ok());          // just past
    EXPECT_FALSE(gm.read(UINT64_MAX - 7, buf).ok());   // wraps
    EXPECT_FALSE(gm.write(UINT64_MAX, std::span<const uint8_t>(buf, 2)).ok());
    EXPECT_TRUE(gm.map(0x10ff8, 16).empty());
    EXPECT_TRUE(gm.map(UINT64_MAX - 3, 8).empty());
    EXPECT_TRUE(gm.map(0x1000, 0).empty());
    EXPECT_TRUE(gm.read(0, std::span<uint8_t>()).ok());  // empty access touches nothing
}

TEST(GuestMemory, MapOnlyInsideOneRegionReadsMayCrossAdjacent) {
    auto fd = memfd(0x20000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 0x1000, 0, fd.get()}, {0x1000, 0x1000, 0x10000, fd.get()}}).ok());
    poke(fd.get(), 0xfff, 1);
    poke(fd.get(), 0x10000, 2);
    EXPECT_TRUE(gm.map(0xff8, 16).empty());
    uint8_t b[2];
    ASSERT_TRUE(gm.read(0xfff, b).ok());
    EXPECT_EQ(b[0], 1);
    EXPECT_EQ(b[1], 2);
    const uint8_t w[2] = {7, 8};
    ASSERT_TRUE(gm.write(0xfff, w).ok());
    EXPECT_EQ(peek(fd.get(), 0xfff), 7);
    EXPECT_EQ(peek(fd.get(), 0x10000), 8);
    // A gap fails without writing anything.
    ASSERT_TRUE(gm.set_regions({{0, 0x1000, 0, fd.get()}, {0x2000, 0x1000, 0x10000, fd.get()}}).ok());
    const uint8_t z[0x1800] = {};
    EXPECT_FALSE(gm.write(0x800, z).ok());
    EXPECT_EQ(peek(fd.get(), 0xfff), 7);
}

TEST(GuestMemory, FullReplacementDropsOldMappings) {
    auto a = memfd(0x10000), b = memfd(0x10000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 0x10000, 0, a.get()}}).ok());
    ASSERT_TRUE(gm.set_regions({{0x100000, 0x10000, 0, b.get()}}).ok());
    EXPECT_EQ(gm.region_count(), 1u);
    uint8_t x[1];
    EXPECT_FALSE(gm.read(0, x).ok());
    EXPECT_TRUE(gm.read(0x100000, x).ok());
    ASSERT_TRUE(gm.set_regions({}).ok());
    EXPECT_EQ(gm.region_count(), 0u);
    EXPECT_FALSE(gm.read(0x100000, x).ok());
}

TEST(GuestMemory, IdenticalTableIsNoOp) {
    auto a = memfd(0x10000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 0x10000, 0, a.get()}}).ok());
    auto p1 = gm.map(0, 16);
    // The same memfd under another fd number (as each SYNC_SYSMEM brings).
    UniqueFd dup(::dup(a.get()));
    ASSERT_TRUE(gm.set_regions({{0, 0x10000, 0, dup.get()}}).ok());
    auto p2 = gm.map(0, 16);
    EXPECT_EQ(p1.data(), p2.data());  // no remap happened
    // A different offset is a different table.
    ASSERT_TRUE(gm.set_regions({{0, 0x8000, 0x8000, dup.get()}}).ok());
    poke(a.get(), 0x8000, 0x5a);
    EXPECT_EQ(gm.map(0, 1)[0], 0x5a);
}

TEST(GuestMemory, RejectsBadTablesAndLeavesItEmpty) {
    auto a = memfd(0x10000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 0x10000, 0, a.get()}}).ok());
    // beyond the file size (would SIGBUS)
    EXPECT_FALSE(gm.set_regions({{0, 0x20000, 0, a.get()}}).ok());
    EXPECT_EQ(gm.region_count(), 0u);
    EXPECT_FALSE(gm.set_regions({{0, 0x1000, -4096, a.get()}}).ok());
    EXPECT_FALSE(gm.set_regions({{0, 0, 0, a.get()}}).ok());
    EXPECT_FALSE(gm.set_regions({{UINT64_MAX - 0xfff, 0x2000, 0, a.get()}}).ok());
    EXPECT_FALSE(gm.set_regions({{0, 0x1000, INT64_MAX, a.get()}}).ok());
    EXPECT_FALSE(gm.set_regions({{0, 0x2000, 0, a.get()}, {0x1000, 0x1000, 0, a.get()}}).ok());  // overlap
    EXPECT_FALSE(gm.set_regions({{0, 0x1000, 0, -1}}).ok());
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    UniqueFd r(p[0]), w(p[1]);
    auto e = gm.set_regions({{0, 0x1000, 0, r.get()}});
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.error().message.find("not a memory file"), std::string::npos);
    EXPECT_EQ(gm.region_count(), 0u);
}

TEST(GuestMemory, UnalignedOffsetMapsCorrectly) {
    auto a = memfd(0x10000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0x5000, 0x100, 0x1234, a.get()}}).ok());
    poke(a.get(), 0x1234, 0x77);
    uint8_t x[1];
    ASSERT_TRUE(gm.read(0x5000, x).ok());
    EXPECT_EQ(x[0], 0x77);
}

TEST(GuestMemory, HostRegions) {
    std::vector<uint8_t> ram(4096, 0), hi(4096, 0);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_host_region(0x100000000ull, hi.data(), hi.size()).ok());
    ASSERT_TRUE(gm.set_host_region(0, ram.data(), ram.size()).ok());
    EXPECT_FALSE(gm.set_host_region(0x800, ram.data(), 16).ok());  // overlap
    const uint8_t v[1] = {9};
    ASSERT_TRUE(gm.write(0x100000010ull, v).ok());
    EXPECT_EQ(hi[0x10], 9);
    ASSERT_TRUE(gm.write(0x10, v).ok());
    EXPECT_EQ(ram[0x10], 9);
    gm.clear();
    EXPECT_EQ(gm.region_count(), 0u);
}

// The VMM owns the RAM file; if it shrinks it under us, DMA fails cleanly
// instead of the process dying of SIGBUS.
TEST(GuestMemory, ShrunkFileGivesErrorNotSigbus) {
    auto fd = memfd(0x10000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 0x10000, 0, fd.get()}}).ok());
    poke(fd.get(), 0x10, 0x42);
    uint8_t b[16];
    ASSERT_TRUE(gm.read(0x10, std::span<uint8_t>(b, 1)).ok());
    EXPECT_EQ(b[0], 0x42);
    ASSERT_EQ(::ftruncate(fd.get(), 0x1000), 0);  // keep the first page only
    uint64_t before = GuestMemory::lost_page_faults();
    EXPECT_TRUE(gm.read(0x10, b).ok());  // still backed
    auto r = gm.read(0x8000, b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("gone"), std::string::npos) << r.error().message;
    const uint8_t w[4] = {1, 2, 3, 4};
    EXPECT_FALSE(gm.write(0x9000, w).ok());
    EXPECT_EQ(GuestMemory::lost_page_faults(), before + 2);
    // Once replaced, the page reads as zeros without faulting again.
    EXPECT_TRUE(gm.read(0x8000, b).ok());
    EXPECT_EQ(b[0], 0);
}

// A SIGBUS outside guest RAM still kills (the guard only covers our mappings).
TEST(GuestMemoryDeathTest, ForeignSigbusStillFatal) {
    auto fd = memfd(0x10000);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{0, 0x10000, 0, fd.get()}}).ok());
    EXPECT_DEATH(
        {
            auto f = memfd(0x2000);
            auto* p = static_cast<volatile uint8_t*>(
                ::mmap(nullptr, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED, f.get(), 0));
            if (::ftruncate(f.get(), 0) != 0) std::abort();
            (void)p[0x1000];
        },
        "");
}
