// With the populate thread running (a remote starts it before its sandbox),
// a granule of guest RAM that is accessed a second time is pre-faulted by
// that thread while accesses carry on through the file; once it is done they
// go through the mapping. The thread is process-wide and cannot be stopped,
// so these tests live in a program of their own.
#include "mem/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

using namespace mpq;

namespace {

constexpr uint64_t G = GuestMemory::kPopulateGranule;
constexpr uint64_t kBase = 0x200000;

UniqueFd memfd(uint64_t size) {
    UniqueFd fd(::memfd_create("bg-pop-test", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    return fd;
}

// The thread has no completion signal: wait for it to mark `want` granules
// hot. The bound only keeps a broken thread from hanging the test; it says
// nothing about speed.
bool wait_populated(const GuestMemory& gm, uint64_t want) {
    for (int i = 0; i < 5000; i++) {
        if (gm.populated_granules() >= want) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
}

class BackgroundPopulate : public ::testing::Test {
protected:
    void SetUp() override {
        GuestMemory::set_populate(GuestMemory::Populate::On);
        GuestMemory::set_file_io(GuestMemory::FileIo::On);
        ASSERT_TRUE(GuestMemory::start_background_populate());
        ASSERT_TRUE(GuestMemory::start_background_populate()) << "a second start is a no-op";
    }
};

TEST_F(BackgroundPopulate, SecondAccessHandsTheGranuleToTheThread) {
    auto fd = memfd(4 * G);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{kBase, 4 * G, 0, fd.get()}}).ok());
    std::vector<uint8_t> a(8192, 0x11), b(8192, 0x22), c(8192, 0x33);

    // First access: through the file, nothing queued.
    ASSERT_TRUE(gm.write(kBase + G + 100, a).ok());
    EXPECT_EQ(gm.file_accesses(), 1u);
    EXPECT_EQ(gm.populated_granules(), 0u);
    // Second: still through the file (the device does not wait for the
    // thread), and the granule is handed over.
    ASSERT_TRUE(gm.write(kBase + G + 100, b).ok());
    EXPECT_EQ(gm.file_accesses(), 2u);
    ASSERT_TRUE(wait_populated(gm, 1));
    EXPECT_EQ(gm.populated_granules(), 1u) << "only the granule that was reused";
    // From now on: the mapping, no file access.
    ASSERT_TRUE(gm.write(kBase + G + 100, c).ok());
    std::vector<uint8_t> back(8192);
    ASSERT_TRUE(gm.read(kBase + G + 100, back).ok());
    EXPECT_EQ(gm.file_accesses(), 2u);
    EXPECT_EQ(back, c);
    // The file holds the last write, and nothing around it changed.
    std::vector<uint8_t> f(4 * G);
    ASSERT_EQ(::pread(fd.get(), f.data(), f.size(), 0), static_cast<ssize_t>(f.size()));
    for (uint64_t i = 0; i < f.size(); i++) {
        uint8_t want = (i >= G + 100 && i < G + 100 + 8192) ? 0x33 : 0;
        ASSERT_EQ(f[i], want) << "file offset " << i;
    }
}

// A read reused the same way is served from the mapping with the file's
// bytes, including what another writer of the file (the VMM) put there
// after the pre-fault.
TEST_F(BackgroundPopulate, ReadsSeeTheFileBeforeAndAfter) {
    auto fd = memfd(2 * G);
    std::vector<uint8_t> pat(2 * G);
    for (size_t i = 0; i < pat.size(); i++) pat[i] = static_cast<uint8_t>(i * 13 + 5);
    ASSERT_EQ(::pwrite(fd.get(), pat.data(), pat.size(), 0), static_cast<ssize_t>(pat.size()));
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{kBase, 2 * G, 0, fd.get()}}).ok());
    std::vector<uint8_t> r(G);
    for (int i = 0; i < 2; i++) {
        ASSERT_TRUE(gm.read(kBase, r).ok());
        EXPECT_EQ(0, std::memcmp(r.data(), pat.data(), G));
    }
    ASSERT_TRUE(wait_populated(gm, 1));
    uint8_t vmm_byte = 0xee;
    ASSERT_EQ(::pwrite(fd.get(), &vmm_byte, 1, 77), 1);
    ASSERT_TRUE(gm.read(kBase, r).ok());
    EXPECT_EQ(gm.file_accesses(), 2u);
    EXPECT_EQ(r[77], 0xee);
    pat[77] = 0xee;
    EXPECT_EQ(0, std::memcmp(r.data(), pat.data(), G));
}

// The table may change (or go) while the thread still has work queued on
// the old one: the old mapping stays until the thread is done with it, and
// the new table starts cold. (Under AddressSanitizer a use after unmap or
// free shows here.)
TEST_F(BackgroundPopulate, TableChangesUnderQueuedWork) {
    auto fd1 = memfd(64 * G);
    auto fd2 = memfd(64 * G);
    std::vector<uint8_t> chunk(G, 0x5a);
    for (int round = 0; round < 20; round++) {
        GuestMemory gm;
        ASSERT_TRUE(gm.set_regions({{kBase, 64 * G, 0, fd1.get()}}).ok());
        for (int pass = 0; pass < 2; pass++)
            for (uint64_t g = 0; g < 64; g++) ASSERT_TRUE(gm.write(kBase + g * G, chunk).ok());
        ASSERT_TRUE(gm.set_regions({{kBase, 64 * G, 0, fd2.get()}}).ok());
        EXPECT_EQ(gm.file_accesses(), 0u);
        ASSERT_TRUE(gm.write(kBase + 5 * G, chunk).ok());
        EXPECT_EQ(gm.file_accesses(), 1u) << "the new table's granules are cold";
        // gm goes out of scope with work perhaps still queued on both tables.
    }
    std::vector<uint8_t> f(64 * G);
    ASSERT_EQ(::pread(fd1.get(), f.data(), f.size(), 0), static_cast<ssize_t>(f.size()));
    for (uint8_t v : f) ASSERT_EQ(v, 0x5a);
}

// Populate refused (an old kernel, a policy): the granules still end up
// accessed through the mapping, with the same data.
TEST_F(BackgroundPopulate, RefusedPopulateStillConverges) {
    GuestMemory::set_populate(GuestMemory::Populate::Off);
    auto fd = memfd(2 * G);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_regions({{kBase, 2 * G, 0, fd.get()}}).ok());
    std::vector<uint8_t> v(4096, 0x77), r(4096);
    for (unsigned i = 0; i < GuestMemory::kRent + 2; i++) ASSERT_TRUE(gm.write(kBase + 4096, v).ok());
    EXPECT_EQ(gm.populated_granules(), 1u) << "bought inline at the rent, without the thread";
    ASSERT_TRUE(gm.read(kBase + 4096, r).ok());
    EXPECT_EQ(r, v);
    GuestMemory::set_populate(GuestMemory::Populate::On);
}

}  // namespace
