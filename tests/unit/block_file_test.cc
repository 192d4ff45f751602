#include "block/file.h"

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

#include "block/fault_inject.h"
#include "block_testutil.h"

namespace mpq::block {
namespace {

using testutil::pattern;
using testutil::TempImage;

DriveOptions opts_for(const TempImage& img, CacheMode cache = CacheMode::Writeback,
                      ReadOnly ro = ReadOnly::No) {
    DriveOptions o;
    o.id = "d0";
    o.file = img.path();
    o.format = "raw";
    o.cache = cache;
    o.read_only = ro;
    return o;
}

std::unique_ptr<FileDriver> open_or_die(const DriveOptions& o) {
    auto r = FileDriver::open(o);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? std::move(r.value()) : nullptr;
}

TEST(BlockFile, SizeReadWriteRoundTrip) {
    TempImage img(1 << 20);
    auto d = open_or_die(opts_for(img));
    ASSERT_TRUE(d);
    EXPECT_EQ(d->length(), 1u << 20);
    EXPECT_EQ(d->format_name(), "raw");
    auto data = pattern(10000, 1);
    ASSERT_TRUE(d->pwrite(12345, data));
    EXPECT_EQ(img.read(12345, data.size()), data);
    std::vector<uint8_t> back(data.size());
    ASSERT_TRUE(d->pread(12345, back));
    EXPECT_EQ(back, data);
    EXPECT_TRUE(d->flush());
}

TEST(BlockFile, ReadPastEndIsZeroFilled) {
    TempImage img(1000, 0xAB);
    auto d = open_or_die(opts_for(img));
    ASSERT_TRUE(d);
    std::vector<uint8_t> b(2000, 0x55);
    ASSERT_TRUE(d->pread(500, b));
    for (size_t i = 0; i < 500; ++i) ASSERT_EQ(b[i], 0xAB) << i;
    for (size_t i = 500; i < 2000; ++i) ASSERT_EQ(b[i], 0) << i;
}

TEST(BlockFile, WritePastEndGrowsLength) {
    TempImage img(4096);
    auto d = open_or_die(opts_for(img));
    ASSERT_TRUE(d);
    auto data = pattern(100, 2);
    ASSERT_TRUE(d->pwrite(8192, data));
    EXPECT_EQ(d->length(), 8192u + 100);
    EXPECT_EQ(img.size(), 8192u + 100);
}

TEST(BlockFile, DirectIoUnalignedBufferAndOffset) {
    TempImage img(64 * 1024, 0x11);
    auto r = FileDriver::open(opts_for(img, CacheMode::None));
    if (!r && r.error().err == EINVAL) GTEST_SKIP() << "no O_DIRECT on this file system";
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto d = std::move(r.value());
    EXPECT_TRUE(d->direct());
    EXPECT_GE(d->alignment(), 512u);

    // Misaligned memory, offset and length, crossing a bounce-window block.
    std::vector<uint8_t> raw(5000 + 1);
    auto data = pattern(5000, 3);
    std::memcpy(raw.data() + 1, data.data(), data.size());
    ASSERT_TRUE(d->pwrite(777, std::span<const uint8_t>(raw.data() + 1, data.size())));
    auto file = img.read(0, 64 * 1024);
    for (size_t i = 0; i < 777; ++i) ASSERT_EQ(file[i], 0x11) << i;
    for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(file[777 + i], data[i]) << i;
    for (size_t i = 777 + data.size(); i < file.size(); ++i) ASSERT_EQ(file[i], 0x11) << i;

    std::vector<uint8_t> back(5000 + 3);
    ASSERT_TRUE(d->pread(777, std::span<uint8_t>(back.data() + 3, 5000)));
    EXPECT_TRUE(std::equal(data.begin(), data.end(), back.begin() + 3));
    EXPECT_EQ(img.size(), 64u * 1024);  // read-modify-write did not grow it
}

TEST(BlockFile, DirectIoUnalignedWriteAtEndKeepsExactSize) {
    TempImage img(1000, 0x22);  // not a multiple of any alignment
    auto r = FileDriver::open(opts_for(img, CacheMode::None));
    if (!r && r.error().err == EINVAL) GTEST_SKIP() << "no O_DIRECT on this file system";
    ASSERT_TRUE(r.ok());
    auto d = std::move(r.value());
    auto data = pattern(300, 4);
    ASSERT_TRUE(d->pwrite(900, data));
    EXPECT_EQ(img.size(), 1200u);
    EXPECT_EQ(d->length(), 1200u);
    EXPECT_EQ(img.read(900, 300), data);
    EXPECT_EQ(img.read(899, 1)[0], 0x22);
    std::vector<uint8_t> back(600);
    ASSERT_TRUE(d->pread(700, back));
    for (size_t i = 0; i < 200; ++i) ASSERT_EQ(back[i], 0x22);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), back.begin() + 200));
    for (size_t i = 500; i < 600; ++i) ASSERT_EQ(back[i], 0);
}

TEST(BlockFile, DirectIoAlignedLargeTransfer) {
    TempImage img(4 << 20);
    auto r = FileDriver::open(opts_for(img, CacheMode::Directsync));
    if (!r && r.error().err == EINVAL) GTEST_SKIP() << "no O_DIRECT on this file system";
    ASSERT_TRUE(r.ok());
    auto d = std::move(r.value());
    void* p = nullptr;
    ASSERT_EQ(posix_memalign(&p, 4096, 3 << 20), 0);
    auto data = pattern(3 << 20, 5);
    std::memcpy(p, data.data(), data.size());
    ASSERT_TRUE(d->pwrite(4096, std::span<const uint8_t>(static_cast<uint8_t*>(p), data.size())));
    EXPECT_EQ(img.read(4096, data.size()), data);
    // Unaligned read spanning more than one bounce window.
    std::vector<uint8_t> back(data.size() - 10);
    ASSERT_TRUE(d->pread(4096 + 5, back));
    EXPECT_TRUE(std::equal(back.begin(), back.end(), data.begin() + 5));
    std::free(p);
}

TEST(BlockFile, DiscardAndWriteZeroes) {
    TempImage img(64 * 1024, 0x33);
    auto d = open_or_die(opts_for(img));
    ASSERT_TRUE(d);
    ASSERT_TRUE(d->write_zeroes(4096, 8192));
    auto f = img.read(0, 64 * 1024);
    for (size_t i = 0; i < f.size(); ++i)
        ASSERT_EQ(f[i], (i >= 4096 && i < 12288) ? 0 : 0x33) << i;
    // Unaligned zeroes, then zeroes past the end (grows the file).
    ASSERT_TRUE(d->write_zeroes(20000, 10));
    EXPECT_EQ(img.read(20000, 10), std::vector<uint8_t>(10, 0));
    EXPECT_EQ(img.read(20010, 1)[0], 0x33);
    ASSERT_TRUE(d->write_zeroes(64 * 1024, 4096));
    EXPECT_EQ(img.size(), 68u * 1024);
    EXPECT_EQ(d->length(), 68u * 1024);

    ASSERT_TRUE(d->discard(32768, 16384));
    EXPECT_EQ(img.size(), 68u * 1024);  // discard keeps the size
    // ext4/xfs/tmpfs punch holes; the range then reads as zeroes.
    EXPECT_EQ(img.read(32768, 16384), std::vector<uint8_t>(16384, 0));
    EXPECT_EQ(img.read(32767, 1)[0], 0x33);
    // Past the end: nothing to do.
    EXPECT_TRUE(d->discard(1 << 30, 4096));
}

TEST(BlockFile, ReadOnlyRefusesWrites) {
    TempImage img(8192, 0x44);
    auto d = open_or_die(opts_for(img, CacheMode::Writeback, ReadOnly::Yes));
    ASSERT_TRUE(d);
    auto data = pattern(512, 6);
    auto st = d->pwrite(0, data);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().err, EROFS);
    EXPECT_EQ(d->discard(0, 4096).error().err, EROFS);
    EXPECT_EQ(d->write_zeroes(0, 4096).error().err, EROFS);
    EXPECT_TRUE(d->flush());
    EXPECT_EQ(img.read(0, 8192), std::vector<uint8_t>(8192, 0x44));
    std::vector<uint8_t> b(512);
    EXPECT_TRUE(d->pread(0, b));
}

TEST(BlockFile, OpenErrorsCarryErrno) {
    DriveOptions o;
    o.file = "/nonexistent/dir/img";
    auto r = FileDriver::open(o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, ENOENT);
    EXPECT_NE(r.error().message.find("/nonexistent/dir/img"), std::string::npos);
    o.file = "/tmp";
    r = FileDriver::open(o);
    ASSERT_FALSE(r);
    o.file = "";
    EXPECT_FALSE(FileDriver::open(o));
}

TEST(BlockFile, RangeOverflowIsRejected) {
    TempImage img(4096);
    auto d = open_or_die(opts_for(img));
    ASSERT_TRUE(d);
    std::vector<uint8_t> b(16);
    EXPECT_EQ(d->pread(UINT64_MAX - 4, b).error().err, EINVAL);
    EXPECT_EQ(d->pwrite(UINT64_MAX - 4, b).error().err, EINVAL);
    EXPECT_EQ(d->discard(UINT64_MAX - 4, 16).error().err, EINVAL);
}

TEST(BlockFile, UnsafeFlushIsNoop) {
    TempImage img(4096);
    auto d = open_or_die(opts_for(img, CacheMode::Unsafe));
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->flush_is_noop());
    EXPECT_TRUE(d->flush());
}

TEST(BlockFaultInject, FailsMatchingRequestsOnly) {
    TempImage img(65536, 0x5A);
    auto inner = open_or_die(opts_for(img));
    ASSERT_TRUE(inner);
    FaultInjectDriver f(std::move(inner));
    f.add_rule({FaultOp::Read, 4096, 4096, EIO, 0, -1});
    f.add_rule({FaultOp::Write, 0, UINT64_MAX, ENOSPC, 1, 1});
    std::vector<uint8_t> b(512);
    EXPECT_TRUE(f.pread(0, b));
    auto st = f.pread(4096 + 512, b);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().err, EIO);
    EXPECT_FALSE(f.pread(4000, b));  // overlaps the range
    EXPECT_TRUE(f.pread(8192, b));
    // skip 1, fail 1, then pass
    EXPECT_TRUE(f.pwrite(0, b));
    auto w = f.pwrite(0, b);
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().err, ENOSPC);
    EXPECT_TRUE(f.pwrite(0, b));
    EXPECT_EQ(f.injected(), 3u);
    f.clear_rules();
    EXPECT_TRUE(f.pread(4096, b));
    f.add_rule({FaultOp::Flush, 0, 0, EIO, 0, 1});
    EXPECT_FALSE(f.flush());
    EXPECT_TRUE(f.flush());
}

}  // namespace
}  // namespace mpq::block
