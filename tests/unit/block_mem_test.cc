// The in-memory raw driver answers like the file driver (same requests on
// both, same bytes and errors), and a BlockBackend with InlineIo runs
// requests without threads but still completes them later, from its
// WorkQueue, never inside the call that submitted them.
#include <dirent.h>

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

#include "block/block.h"
#include "block/mem.h"
#include "block_testutil.h"
#include "util/manual_work_queue.h"

namespace mpq::block {
namespace {

using testutil::pattern;
using testutil::TempImage;

int threads_in_process() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/task");
    if (!d) return -1;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n;
}

// The same sequence on a file and on memory; every answer must match.
TEST(MemDriver, BehavesLikeARawFile) {
    constexpr uint64_t kSize = 64 * 1024;
    TempImage img(kSize, 0x3c);
    DriveOptions o;
    o.file = img.path();
    o.format = "raw";
    auto file = open_file(o);
    ASSERT_TRUE(file.ok());
    auto image = std::make_shared<MemImage>();
    image->bytes.assign(kSize, 0x3c);
    auto mem = make_mem_driver(image);
    BlockDriver* drivers[] = {file->get(), mem.get()};

    auto w = pattern(5000, 7);
    std::vector<uint8_t> got[2];
    for (int i = 0; i < 2; ++i) {
        BlockDriver& d = *drivers[i];
        EXPECT_EQ(d.format_name(), "raw");
        EXPECT_TRUE(d.pwrite(1000, w).ok());
        EXPECT_TRUE(d.write_zeroes(3000, 700).ok());
        EXPECT_TRUE(d.discard(kSize + 10, 100).ok());  // past the end: nothing
        EXPECT_TRUE(d.pwrite(kSize + 4096, std::span(w).first(100)).ok());  // grows
        EXPECT_EQ(d.length(), kSize + 4096 + 100);
        EXPECT_TRUE(d.write_zeroes(d.length() - 50, 200).ok());  // grows too
        EXPECT_EQ(d.length(), kSize + 4096 + 250);
        EXPECT_TRUE(d.flush().ok());
        auto r = d.pread(UINT64_MAX - 10, std::span<uint8_t>(got[i].data(), 0));
        EXPECT_TRUE(r.ok());
        std::vector<uint8_t> tmp(100);
        auto bad = d.pread(UINT64_MAX - 10, tmp);
        ASSERT_FALSE(bad.ok());
        EXPECT_EQ(bad.error().err, EINVAL);
        got[i].assign(d.length() + 1000, 0xEE);  // reads past the end read zeroes
        EXPECT_TRUE(d.pread(0, got[i]).ok());
        EXPECT_TRUE(d.truncate(8192).ok());
        EXPECT_EQ(d.length(), 8192u);
    }
    EXPECT_EQ(got[0], got[1]);
    EXPECT_EQ(std::memcmp(&got[1][1000], w.data(), 2000), 0);
    EXPECT_EQ(got[1][3000], 0);
    EXPECT_EQ(got[1].back(), 0);
    EXPECT_EQ(image->bytes.size(), 8192u);
    EXPECT_EQ(image->flushes, 1u);
}

TEST(MemDriver, ReadOnlyRefusesWritesAndTheLimitActsAsAFullDisk) {
    auto image = std::make_shared<MemImage>();
    image->bytes.assign(4096, 1);
    image->max_size = 8192;
    auto ro = make_mem_driver(image, ReadOnly::Yes);
    std::vector<uint8_t> b(512, 9);
    EXPECT_EQ(ro->pwrite(0, b).error().err, EROFS);
    EXPECT_EQ(ro->discard(0, 512).error().err, EROFS);
    EXPECT_EQ(ro->write_zeroes(0, 512).error().err, EROFS);
    EXPECT_EQ(ro->truncate(0).error().err, EROFS);
    auto rw = make_mem_driver(image);
    EXPECT_TRUE(rw->pwrite(8192 - 512, b).ok());
    auto full = rw->pwrite(8192 - 511, b);
    ASSERT_FALSE(full.ok());
    EXPECT_EQ(full.error().err, ENOSPC);
    EXPECT_EQ(rw->truncate(8193).error().err, ENOSPC);
    EXPECT_EQ(image->bytes.size(), 8192u);
    EXPECT_EQ(image->bytes[8191], 9);
}

TEST(InlineBackend, RunsRequestsWithoutThreadsAndCompletesThemFromTheQueue) {
    ManualWorkQueue q;
    auto image = std::make_shared<MemImage>();
    image->bytes.assign(1 << 20, 0);
    DriveOptions o;
    o.id = "d0";
    const int threads_before = threads_in_process();
    BlockBackend bb(q, make_mem_driver(image), o, kInlineIo);
    EXPECT_EQ(threads_in_process(), threads_before);
    EXPECT_FALSE(bb.uses_io_uring());

    auto data = pattern(8192, 3);
    std::vector<uint8_t> back(8192);
    std::vector<std::string> done;
    bb.write(4096, data, [&](Status st) {
        EXPECT_TRUE(st.ok());
        done.push_back("write");
        // A follow-up request from a completion, as a disk's next chunk.
        bb.read(4096, back, [&](Status st2) {
            EXPECT_TRUE(st2.ok());
            done.push_back("read");
        });
    });
    // The request ran (the bytes are there) but did not complete inline.
    EXPECT_EQ(std::memcmp(&image->bytes[4096], data.data(), data.size()), 0);
    EXPECT_TRUE(done.empty());
    EXPECT_EQ(bb.in_flight(), 1u);
    EXPECT_TRUE(q.run_until_idle(100));
    EXPECT_EQ(done, std::vector<std::string>({"write", "read"}));
    EXPECT_EQ(back, data);
    EXPECT_EQ(bb.in_flight(), 0u);
    EXPECT_EQ(bb.stats().wr_ops, 1u);
    EXPECT_EQ(bb.stats().rd_ops, 1u);
    EXPECT_EQ(bb.stats().wr_bytes, 8192u);
    EXPECT_EQ(threads_in_process(), threads_before);

    // Errors complete the same way, and drain() finishes what is queued.
    int failed = 0;
    std::vector<uint8_t> small(16);
    image->max_size = image->bytes.size();
    bb.write(image->bytes.size(), small, [&](Status st) {
        EXPECT_EQ(st.error().err, ENOSPC);
        ++failed;
    });
    bb.flush([&](Status st) { EXPECT_TRUE(st.ok()); });
    EXPECT_EQ(failed, 0);
    bb.drain();
    EXPECT_EQ(failed, 1);
    EXPECT_EQ(bb.stats().failed_wr_ops, 1u);
    EXPECT_EQ(bb.stats().flush_ops, 1u);
    EXPECT_EQ(image->flushes, 1u);
    // The queue's callback left behind by drain() finds nothing to do.
    EXPECT_TRUE(q.run_until_idle(100));
    EXPECT_EQ(failed, 1);
}

TEST(InlineBackend, CompletionQueuedAfterTheBackendIsGoneIsHarmless) {
    ManualWorkQueue q;
    auto image = std::make_shared<MemImage>();
    image->bytes.assign(4096, 0);
    bool ran = false;
    {
        BlockBackend bb(q, make_mem_driver(image), DriveOptions{}, kInlineIo);
        bb.flush([&](Status) { ran = true; });
        EXPECT_TRUE(q.has_deferred());
    }  // the destructor drains: the completion ran there
    EXPECT_TRUE(ran);
    EXPECT_TRUE(q.run_until_idle(10));
}

}  // namespace
}  // namespace mpq::block
