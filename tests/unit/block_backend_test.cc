#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "block/block.h"
#include "block/fault_inject.h"
#include "block/file.h"
#include "block_testutil.h"
#include "util/event_loop.h"

namespace mpq::block {
namespace {

using testutil::pattern;
using testutil::TempImage;

DriveOptions opts_for(const TempImage& img, AioMode aio = AioMode::Threads,
                      CacheMode cache = CacheMode::Writeback) {
    DriveOptions o;
    o.id = "d0";
    o.file = img.path();
    o.format = "raw";
    o.aio = aio;
    o.cache = cache;
    return o;
}

std::unique_ptr<BlockDriver> open_raw(const DriveOptions& o) {
    auto r = open_file(o);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? std::move(r.value()) : nullptr;
}

// Runs the loop until `pred` holds (bounded: a lost completion fails the
// test instead of hanging it).
template <typename P>
bool run_until(EventLoop& loop, P pred) {
    for (int i = 0; i < 20000 && !pred(); ++i) loop.run_once(10);
    return pred();
}

struct AlignedBuf {
    explicit AlignedBuf(size_t n) : n(n) {
        EXPECT_EQ(posix_memalign(&p, 4096, n), 0);
        std::memset(p, 0, n);
    }
    ~AlignedBuf() { std::free(p); }
    std::span<uint8_t> span() { return {static_cast<uint8_t*>(p), n}; }
    void* p = nullptr;
    size_t n;
};

TEST(BlockBackend, CompletionsRunOnTheLoopThread) {
    TempImage img(1 << 20, 0x10);
    EventLoop loop;
    BlockBackend bb(loop, open_raw(opts_for(img)), opts_for(img));
    auto data = pattern(8192, 1);
    int done = 0;
    const auto loop_thread = std::this_thread::get_id();
    bb.write(4096, data, [&](Status st) {
        EXPECT_TRUE(st);
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        ++done;
    });
    // Never synchronous: the caller may still be setting up state.
    EXPECT_EQ(done, 0);
    EXPECT_EQ(bb.in_flight(), 1u);
    ASSERT_TRUE(run_until(loop, [&] { return done == 1; }));
    EXPECT_EQ(bb.in_flight(), 0u);
    EXPECT_EQ(img.read(4096, 8192), data);

    std::vector<uint8_t> back(8192);
    bb.read(4096, back, [&](Status st) {
        EXPECT_TRUE(st);
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        ++done;
    });
    ASSERT_TRUE(run_until(loop, [&] { return done == 2; }));
    EXPECT_EQ(back, data);
}

TEST(BlockBackend, StatisticsCountEveryKind) {
    TempImage img(1 << 20);
    EventLoop loop;
    BlockBackend bb(loop, open_raw(opts_for(img)), opts_for(img));
    std::vector<uint8_t> buf(4096, 7);
    int done = 0;
    auto cb = [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    };
    bb.write(0, buf, cb);
    bb.write(4096, buf, cb);
    bb.read(0, buf, cb);
    bb.flush(cb);
    bb.discard(8192, 4096, cb);
    bb.write_zeroes(16384, 1024, cb);
    ASSERT_TRUE(run_until(loop, [&] { return done == 6; }));
    const BlockStats& s = bb.stats();
    EXPECT_EQ(s.wr_ops, 3u);
    EXPECT_EQ(s.wr_bytes, 8192u + 1024);
    EXPECT_EQ(s.rd_ops, 1u);
    EXPECT_EQ(s.rd_bytes, 4096u);
    EXPECT_EQ(s.flush_ops, 1u);
    EXPECT_EQ(s.unmap_ops, 1u);
    EXPECT_EQ(s.unmap_bytes, 4096u);
    EXPECT_EQ(s.failed_rd_ops + s.failed_wr_ops + s.failed_flush_ops + s.failed_unmap_ops, 0u);
    EXPECT_GT(s.last_io_ns, 0u);
    EXPECT_GT(s.wr_total_time_ns, 0u);
    EXPECT_GT(s.rd_total_time_ns, 0u);
}

TEST(BlockBackend, ErrorsReachTheCallerWithErrnoAndAreCounted) {
    TempImage img(1 << 20);
    EventLoop loop;
    auto fi = std::make_unique<FaultInjectDriver>(open_raw(opts_for(img)));
    FaultInjectDriver* f = fi.get();
    f->add_rule({FaultOp::Read, 0, UINT64_MAX, EIO, 0, -1});
    f->add_rule({FaultOp::Write, 0, UINT64_MAX, ENOSPC, 0, -1});
    f->add_rule({FaultOp::Flush, 0, 0, EIO, 0, -1});
    BlockBackend bb(loop, std::move(fi), opts_for(img));
    std::vector<uint8_t> buf(512);
    std::vector<int> errs;
    auto cb = [&](Status st) {
        ASSERT_FALSE(st);
        errs.push_back(st.error().err);
    };
    bb.read(0, buf, cb);
    bb.write(0, buf, cb);
    bb.flush(cb);
    ASSERT_TRUE(run_until(loop, [&] { return errs.size() == 3; }));
    std::sort(errs.begin(), errs.end());
    EXPECT_EQ(errs, (std::vector<int>{EIO, EIO, ENOSPC}));
    EXPECT_EQ(bb.stats().failed_rd_ops, 1u);
    EXPECT_EQ(bb.stats().failed_wr_ops, 1u);
    EXPECT_EQ(bb.stats().failed_flush_ops, 1u);
    EXPECT_EQ(bb.stats().rd_ops + bb.stats().wr_ops, 0u);
    EXPECT_EQ(img.read(0, 512), std::vector<uint8_t>(512, 0));
}

// Records how many calls run at once.
class ConcurrencyProbe final : public BlockDriver {
public:
    explicit ConcurrencyProbe(bool safe) : safe_(safe) {}
    std::string format_name() const override { return "probe"; }
    uint64_t length() const override { return 1 << 20; }
    Status pread(uint64_t, std::span<uint8_t> b) override { return enter(b.data(), b.size()); }
    Status pwrite(uint64_t, std::span<const uint8_t>) override { return enter(nullptr, 0); }
    Status flush() override { return enter(nullptr, 0); }
    Status discard(uint64_t, uint64_t) override { return enter(nullptr, 0); }
    Status write_zeroes(uint64_t, uint64_t) override { return enter(nullptr, 0); }
    bool concurrent_safe() const override { return safe_; }
    std::atomic<int> now{0}, max{0};

private:
    Status enter(uint8_t* b, size_t n) {
        int v = ++now;
        int m = max.load();
        while (v > m && !max.compare_exchange_weak(m, v)) {
        }
        for (int i = 0; i < 200; ++i) std::this_thread::yield();  // give others a chance to overlap
        if (b) std::memset(b, 0x5c, n);
        --now;
        return {};
    }
    bool safe_;
};

TEST(BlockBackend, SerialisesDriversThatAreNotConcurrentSafe) {
    EventLoop loop;
    auto probe = std::make_unique<ConcurrencyProbe>(false);
    ConcurrencyProbe* p = probe.get();
    DriveOptions o;
    o.id = "p";
    BlockBackend bb(loop, std::move(probe), o);
    std::vector<std::vector<uint8_t>> bufs(16, std::vector<uint8_t>(64));
    int done = 0;
    for (auto& b : bufs) bb.read(0, b, [&](Status) { ++done; });
    ASSERT_TRUE(run_until(loop, [&] { return done == 16; }));
    EXPECT_EQ(p->max.load(), 1);
    for (auto& b : bufs) EXPECT_EQ(b, std::vector<uint8_t>(64, 0x5c));
}

TEST(BlockBackend, ConcurrentSafeDriversRunInParallel) {
    // Deterministic: four requests must all be inside the driver at once,
    // which only a pool of at least four threads allows (else this hangs and
    // the ctest timeout fails it).
    TempImage img(1 << 20);
    EventLoop loop;
    auto fi = std::make_unique<FaultInjectDriver>(open_raw(opts_for(img)));
    FaultInjectDriver* f = fi.get();
    BlockBackend bb(loop, std::move(fi), opts_for(img));
    f->close_gate();
    std::vector<std::vector<uint8_t>> bufs(4, std::vector<uint8_t>(512));
    int done = 0;
    for (auto& b : bufs) bb.read(0, b, [&](Status) { ++done; });
    f->wait_for_waiting(4);
    EXPECT_EQ(done, 0);
    f->open_gate();
    ASSERT_TRUE(run_until(loop, [&] { return done == 4; }));
}

TEST(BlockBackend, DrainRunsEveryCompletionIncludingFollowUps) {
    TempImage img(1 << 20);
    EventLoop loop;
    BlockBackend bb(loop, open_raw(opts_for(img)), opts_for(img));
    auto data = pattern(4096, 9);
    int done = 0;
    for (int i = 0; i < 8; ++i)
        bb.write(uint64_t(i) * 4096, data, [&, i](Status st) {
            EXPECT_TRUE(st);
            ++done;
            if (i == 0) bb.flush([&](Status) { ++done; });  // submitted from a completion
        });
    bb.drain();
    EXPECT_EQ(done, 9);
    EXPECT_EQ(bb.in_flight(), 0u);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(img.read(uint64_t(i) * 4096, 4096), data);
    // Posted wake-ups left behind must be harmless.
    loop.run_once(0);
    EXPECT_EQ(done, 9);
}

TEST(BlockBackend, DestructionWaitsForInFlightRequests) {
    TempImage img(1 << 20);
    EventLoop loop;
    auto data = pattern(65536, 10);
    int done = 0;
    {
        BlockBackend bb(loop, open_raw(opts_for(img)), opts_for(img));
        for (int i = 0; i < 4; ++i)
            bb.write(uint64_t(i) * 65536, data, [&](Status st) {
                EXPECT_TRUE(st);
                ++done;
            });
    }
    EXPECT_EQ(done, 4);
    loop.run_once(0);  // stale posted callbacks find the backend gone
    EXPECT_EQ(img.read(3 * 65536, 65536), data);
}

void uring_round_trip(CacheMode cache) {
    TempImage img(4 << 20, 0x77);
    EventLoop loop;
    auto o = opts_for(img, AioMode::IoUring, cache);
    auto drv = open_file(o);
    if (!drv && drv.error().err == EINVAL) GTEST_SKIP() << "no O_DIRECT here";
    ASSERT_TRUE(drv.ok());
    BlockBackend bb(loop, std::move(drv.value()), o);
    if (!bb.uses_io_uring()) GTEST_SKIP() << "io_uring not allowed here";
    AlignedBuf wbuf(1 << 20);
    auto data = pattern(1 << 20, 11);
    std::memcpy(wbuf.p, data.data(), data.size());
    int done = 0;
    bb.write(1 << 20, wbuf.span(), [&](Status st) {
        EXPECT_TRUE(st) << (st ? "" : st.error().message);
        ++done;
    });
    // An unaligned request falls back to the threads (bounce buffers).
    std::vector<uint8_t> small = pattern(100, 12);
    bb.write(3, small, [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    bb.flush([&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    ASSERT_TRUE(run_until(loop, [&] { return done == 3; }));
    EXPECT_EQ(img.read(1 << 20, 1 << 20), data);
    EXPECT_EQ(img.read(3, 100), small);
    EXPECT_EQ(img.read(0, 3), std::vector<uint8_t>(3, 0x77));

    AlignedBuf rbuf(1 << 20);
    bb.read(1 << 20, rbuf.span(), [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    // Past the end of the file: zero-filled.
    AlignedBuf tail(8192);
    std::memset(tail.p, 0xff, 8192);
    bb.read((4 << 20) - 4096, tail.span(), [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    ASSERT_TRUE(run_until(loop, [&] { return done == 5; }));
    EXPECT_EQ(std::memcmp(rbuf.p, data.data(), data.size()), 0);
    auto t = static_cast<uint8_t*>(tail.p);
    for (int i = 0; i < 4096; ++i) ASSERT_EQ(t[i], 0x77);
    for (int i = 4096; i < 8192; ++i) ASSERT_EQ(t[i], 0);
    EXPECT_EQ(bb.stats().wr_ops, 2u);
    EXPECT_EQ(bb.stats().rd_ops, 2u);
    EXPECT_EQ(bb.stats().flush_ops, 1u);
}

TEST(BlockBackend, IoUringBuffered) { uring_round_trip(CacheMode::Writeback); }
TEST(BlockBackend, IoUringDirect) { uring_round_trip(CacheMode::None); }

TEST(BlockBackend, IoUringErrorsCarryErrno) {
    TempImage img(1 << 20);
    EventLoop loop;
    auto o = opts_for(img, AioMode::IoUring);
    o.read_only = ReadOnly::Yes;
    BlockBackend bb(loop, open_raw(o), o);
    std::vector<uint8_t> b(4096);
    int err = 0;
    bb.write(0, b, [&](Status st) {
        ASSERT_FALSE(st);
        err = st.error().err;
    });
    ASSERT_TRUE(run_until(loop, [&] { return err != 0; }));
    EXPECT_EQ(err, EROFS);
}

}  // namespace

// A buffered read the page cache holds is served without a thread, yet its
// completion still runs later on the loop, never inside read().
TEST(BlockBackend, CachedReadsCompleteOnTheLoopNotInline) {
    TempImage img(1 << 20, 0x31);
    EventLoop loop;
    auto o = opts_for(img);
    BlockBackend bb(loop, open_raw(o), o);
    auto data = pattern(65536, 7);
    int done = 0;
    bb.write(65536, data, [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    ASSERT_TRUE(run_until(loop, [&] { return done == 1; }));
    std::vector<uint8_t> got(65536, 0xee);
    // The last 4 KiB lie past the end of the file: zeroes.
    bb.read((1 << 20) - 61440, got, [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    std::vector<uint8_t> got2(65536, 0xee);
    bb.read(65536, got2, [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    EXPECT_EQ(done, 1) << "a completion ran inside read()";
    ASSERT_TRUE(run_until(loop, [&] { return done == 3; }));
    EXPECT_EQ(got2, data);
    EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 61440), img.read((1 << 20) - 61440, 61440));
    EXPECT_EQ(std::vector<uint8_t>(got.begin() + 61440, got.end()), std::vector<uint8_t>(4096, 0));
    EXPECT_EQ(bb.stats().rd_ops, 2u);
    EXPECT_EQ(bb.stats().rd_bytes, 2u * 65536);
    EXPECT_EQ(bb.in_flight(), 0u);
}

TEST(BlockBackend, CallerSubmissionDoesTheIoInTheCallAndCompletesLater) {
    TempImage img(1 << 20, 0x42);
    EventLoop loop;
    auto o = opts_for(img);
    BlockBackend bb(loop, open_raw(o), o);
    bb.set_submission(BlockBackend::Submission::Caller);
    auto data = pattern(8192, 3);
    int done = 0;
    bb.write(8192, data, [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    // In the file as write() returns, with no thread involved; the
    // completion still waits for the loop.
    EXPECT_EQ(img.read(8192, 8192), data);
    EXPECT_EQ(done, 0) << "a completion ran inside write()";
    EXPECT_EQ(bb.in_flight(), 1u);
    bb.drain();
    EXPECT_EQ(done, 1);
    EXPECT_EQ(bb.in_flight(), 0u);
    EXPECT_EQ(bb.stats().wr_ops, 1u);
    // Follow-ups submitted by a completion run the same way.
    std::vector<uint8_t> back(8192);
    bb.flush([&](Status st) {
        EXPECT_TRUE(st);
        bb.read(8192, back, [&](Status st2) {
            EXPECT_TRUE(st2);
            ++done;
        });
    });
    ASSERT_TRUE(run_until(loop, [&] { return done == 2; }));
    EXPECT_EQ(back, data);
    EXPECT_EQ(bb.stats().flush_ops, 1u);
}

TEST(BlockBackend, SmallPageCacheWritesAloneRunOnTheLoopThread) {
    TempImage img(1 << 20, 0x51);
    EventLoop loop;
    auto o = opts_for(img);
    BlockBackend bb(loop, open_raw(o), o);
    auto small = pattern(4096, 5);
    int done = 0;
    bb.write(12288, small, [&](Status st) {
        EXPECT_TRUE(st);
        ++done;
    });
    // A memory copy into the page cache, done before write() returns; the
    // completion still waits for the loop.
    EXPECT_EQ(img.read(12288, 4096), small);
    EXPECT_EQ(done, 0) << "a completion ran inside write()";
    ASSERT_TRUE(run_until(loop, [&] { return done == 1; }));
    EXPECT_EQ(bb.stats().wr_ops, 1u);
    // cache=writethrough (O_DSYNC) waits for the disk: never on the loop.
    auto wt = opts_for(img, AioMode::Threads, CacheMode::Writethrough);
    auto drv = open_raw(wt);
    ASSERT_TRUE(drv);
    EXPECT_FALSE(static_cast<FileDriver&>(*drv).writes_to_page_cache());
    EXPECT_TRUE(static_cast<FileDriver&>(*open_raw(o)).writes_to_page_cache());
    EXPECT_FALSE(static_cast<FileDriver&>(*open_raw(opts_for(img, AioMode::Threads, CacheMode::None)))
                     .writes_to_page_cache());
}

TEST(FileDriver, ReadCachedServesThePageCacheAndZeroFillsPastTheEnd) {
    TempImage img(3 * 4096 + 100, 0x42);
    auto o = opts_for(img);
    auto r = FileDriver::open(o);
    ASSERT_TRUE(r.ok());
    FileDriver& f = *r.value();
    std::vector<uint8_t> warm(3 * 4096 + 100);
    ASSERT_TRUE(f.pread(0, warm));  // now in the page cache
    std::vector<uint8_t> buf(4 * 4096, 0xee);
    if (!f.read_cached(0, buf)) GTEST_SKIP() << "this kernel cannot read with RWF_NOWAIT";
    for (size_t i = 0; i < 3 * 4096 + 100; ++i) ASSERT_EQ(buf[i], 0x42) << i;
    for (size_t i = 3 * 4096 + 100; i < buf.size(); ++i) ASSERT_EQ(buf[i], 0) << i;
}

TEST(FileDriver, ReadCachedNeverServesDirectIo) {
    TempImage img(1 << 16, 0x42);
    auto o = opts_for(img, AioMode::Threads, CacheMode::None);
    auto r = FileDriver::open(o);
    if (!r && r.error().err == EINVAL) GTEST_SKIP() << "no O_DIRECT here";
    ASSERT_TRUE(r.ok());
    std::vector<uint8_t> buf(4096);
    EXPECT_FALSE(r.value()->read_cached(0, buf));
}

}  // namespace mpq::block
