// BlockBackend: runs synchronous drivers on a small pool of I/O threads (or
// raw files on io_uring) and delivers every completion on the event loop
// thread, where the statistics are kept. The InlineIo variant runs them in
// the submitting call and defers the completion on its WorkQueue.
#include <time.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "block/backend_impl.h"
#include "block/block.h"
#include "block/file.h"
#include "block/runtime.h"
#include "trace/trace.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "util/thread_reserve.h"

namespace mpq::block {

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

namespace {
constexpr unsigned kWorkers = 4;
// A drive added at run time borrows at most this many, so that several fit
// in the reserve.
constexpr unsigned kLateWorkers = 2;
// Requests a serialised driver runs before acknowledging them together:
// bounds the latency the first one gains.
constexpr size_t kMaxBatch = 16;
// Small writes to the page cache run on the loop thread (Impl::inline_writes).
constexpr uint64_t kInlineWriteMax = 64 * 1024;
constexpr uint64_t kInlineWriteSlowNs = 200'000;
constexpr uint64_t kInlineWriteBackOffNs = 1'000'000'000;
}

// Completed jobs wait here for the loop thread. It is shared with the
// callbacks posted to the loop, which may run after the backend is gone.
struct CompletionQueue {
    std::mutex mu;
    std::deque<JobPtr> done;
    bool post_pending = false;
    BlockBackend* owner = nullptr;  // cleared (on the loop thread) by ~BlockBackend
};

enum class Wake : uint8_t { Post, Defer };

struct BlockBackend::Impl {
    std::shared_ptr<CompletionQueue> cq = std::make_shared<CompletionQueue>();
    std::mutex mu;
    std::condition_variable work_cv;
    std::condition_variable idle_cv;
    std::deque<JobPtr> queue;
    unsigned running = 0;
    bool stopping = false;
    std::vector<std::thread> workers;
    // A drive added at run time borrows its workers (no thread may start then).
    std::vector<std::shared_ptr<ThreadReserve::Ticket>> borrowed;
    std::unique_ptr<UringEngine> uring;
    FileDriver* cached_reads = nullptr;  // buffered raw file: try the page cache first
    // A small write to a raw file whose writes end in the page cache is a
    // memory copy of a few microseconds; handing it to an I/O thread and
    // being woken for its completion costs several times that (two
    // wake-ups, on a 2-vCPU VM each an inter-processor interrupt). So it runs
    // on the loop thread, as long as it stays that cheap: one that took
    // longer (the kernel throttling dirty pages, a page fault on a hole)
    // sends the writes of the next second to the threads, so that a slow
    // disk never holds the register path for more than one write.
    bool inline_writes = false;
    uint64_t inline_writes_off_until_ns = 0;

    void worker(BlockBackend* bb);
    static void run_batch(BlockDriver& drv, std::vector<JobPtr>& jobs);
    static void queue_completion(WorkQueue& wq, EventLoop* loop,
                                 const std::shared_ptr<CompletionQueue>& cq, JobPtr j, Wake how);
    static void run_job(BlockDriver& drv, Job& j);
};

// Hands a finished job to the loop thread: Post from an I/O thread (only
// backends with a loop have threads), Defer from the loop thread itself.
void BlockBackend::Impl::queue_completion(WorkQueue& wq, EventLoop* loop,
                                          const std::shared_ptr<CompletionQueue>& cq, JobPtr j,
                                          Wake how) {
    bool wake = false;
    {
        std::lock_guard lk(cq->mu);
        cq->done.push_back(std::move(j));
        if (!cq->post_pending) cq->post_pending = wake = true;
    }
    if (!wake) return;
    std::weak_ptr<CompletionQueue> weak = cq;
    auto run = [weak] {
        auto q = weak.lock();
        if (!q) return;
        BlockBackend* owner;
        {
            std::lock_guard l(q->mu);
            q->post_pending = false;
            owner = q->owner;
        }
        if (owner) owner->process_completions();
    };
    if (how == Wake::Post) loop->post(run);
    else wq.defer(run);
}

void BlockBackend::Impl::run_job(BlockDriver& drv, Job& j) {
    switch (j.kind) {
        case JobKind::Read: j.result = drv.pread(j.off, std::span<uint8_t>(j.buf, j.len)); break;
        case JobKind::Write:
            j.result = drv.pwrite(j.off, std::span<const uint8_t>(j.buf, j.len));
            break;
        case JobKind::Flush: j.result = drv.flush(); break;
        case JobKind::Discard: j.result = drv.discard(j.off, j.len); break;
        case JobKind::WriteZeroes: j.result = drv.write_zeroes(j.off, j.len); break;
    }
    j.end_ns = monotonic_ns();
}

void BlockBackend::Impl::worker(BlockBackend* bb) {
    EventLoop* loop = bb->loop_;
    BlockDriver& drv = *bb->drv_;
    // A driver that is not concurrent_safe has this one thread to itself:
    // it takes every queued request (up to kMaxBatch), runs them, and
    // writes the metadata they changed once for all of them
    // (commit_metadata) before any is acknowledged.
    const bool batch = !drv.concurrent_safe();
    std::vector<JobPtr> jobs;
    std::unique_lock lk(mu);
    for (;;) {
        work_cv.wait(lk, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping and nothing left
        do {
            jobs.push_back(std::move(queue.front()));
            queue.pop_front();
        } while (batch && !queue.empty() && jobs.size() < kMaxBatch);
        ++running;
        lk.unlock();
        if (batch) {
            run_batch(drv, jobs);
        } else {
            run_job(drv, *jobs.front());
        }
        for (auto& j : jobs) queue_completion(bb->wq_, loop, cq, std::move(j), Wake::Post);
        jobs.clear();
        lk.lock();
        --running;
        if (running == 0 && queue.empty()) idle_cv.notify_all();
    }
}

void BlockBackend::Impl::run_batch(BlockDriver& drv, std::vector<JobPtr>& jobs) {
    if (jobs.size() == 1) {
        run_job(drv, *jobs.front());  // the driver commits its metadata itself
        return;
    }
    drv.set_metadata_writes(BlockDriver::MetadataWrites::Batched);
    for (auto& j : jobs) run_job(drv, *j);
    drv.set_metadata_writes(BlockDriver::MetadataWrites::PerRequest);
    Status st = drv.commit_metadata();
    if (st) return;
    // Not in the file: none of the batch's updates may be acknowledged.
    for (auto& j : jobs) {
        if (j->kind == JobKind::Read || j->kind == JobKind::Flush || !j->result.ok()) continue;
        Error e = st.error();
        if (!e.err) e.err = EIO;
        j->result = std::move(e);
        j->end_ns = monotonic_ns();
    }
}

BlockBackend::BlockBackend(EventLoop& loop, std::unique_ptr<BlockDriver> drv, DriveOptions opts)
    : loop_(&loop), wq_(loop), drv_(std::move(drv)), opts_(std::move(opts)),
      impl_(std::make_unique<Impl>()) {
    impl_->cq->owner = this;
    // Raw files get the fast paths (io_uring, inline cached reads); formats
    // and wrappers such as blkdebug always go through the driver on threads.
    auto* file = dynamic_cast<FileDriver*>(drv_.get());
    const RuntimeLimits& late = runtime_limits();
    // After start-up no ring may be created (the sandbox forbids io_uring_setup).
    if (opts_.aio != AioMode::Threads && !late.active) {
        if (file) {
            impl_->uring = make_uring_engine(
                loop, *file,
                [](void* ctx, JobPtr j) { static_cast<BlockBackend*>(ctx)->finish(std::move(j)); },
                this, opts_.aio == AioMode::Auto ? UringChoice::Auto : UringChoice::Asked);
        } else if (opts_.aio != AioMode::Auto) {
            log::info("drive '{}': aio={} applies to raw files only; {} uses I/O threads",
                      opts_.id, opts_.aio == AioMode::Native ? "native" : "io_uring",
                      drv_->format_name());
        }
    }
    if (file && !file->direct()) impl_->cached_reads = file;
    impl_->inline_writes = file && file->writes_to_page_cache() && !impl_->uring;
    unsigned n = drv_->concurrent_safe() ? kWorkers : 1;
    if (late.active) {
        // Borrowed threads; with none left the requests run on the loop
        // thread (slower, never stuck).
        for (unsigned i = 0; i < std::min(n, kLateWorkers) && late.workers; ++i) {
            auto t = late.workers->run([this] { impl_->worker(this); });
            if (!t) break;
            impl_->borrowed.push_back(std::move(t));
        }
        if (impl_->borrowed.empty())
            log::warn("drive '{}': no spare I/O thread; its requests run on the event loop", opts_.id);
        return;
    }
    for (unsigned i = 0; i < n; ++i) impl_->workers.emplace_back([this] { impl_->worker(this); });
}

BlockBackend::BlockBackend(WorkQueue& wq, std::unique_ptr<BlockDriver> drv, DriveOptions opts, InlineIo)
    : loop_(nullptr), wq_(wq), drv_(std::move(drv)), opts_(std::move(opts)),
      impl_(std::make_unique<Impl>()) {
    impl_->cq->owner = this;
}

BlockBackend::~BlockBackend() {
    drain();
    {
        std::lock_guard lk(impl_->mu);
        impl_->stopping = true;
    }
    impl_->work_cv.notify_all();
    for (auto& t : impl_->workers) t.join();
    for (auto& t : impl_->borrowed) t->wait();
    impl_->uring.reset();
    std::lock_guard lk(impl_->cq->mu);
    impl_->cq->owner = nullptr;
}

bool BlockBackend::uses_io_uring() const { return impl_->uring != nullptr; }

void BlockBackend::submit(std::unique_ptr<Job> j) {
    MPQ_TRACE(mpq_block_request, opts_.id.c_str(), job_kind_name(j->kind), j->off, j->len);
    ++in_flight_;
    j->submit_ns = monotonic_ns();
    // A read the page cache holds needs no thread and no ring: served here,
    // completed on the next loop round like any other.
    if (j->kind == JobKind::Read && impl_->cached_reads &&
        impl_->cached_reads->read_cached(j->off, std::span<uint8_t>(j->buf, j->len))) {
        j->end_ns = monotonic_ns();
        complete_soon(std::move(j));
        return;
    }
    // A small write alone (nothing else in flight to keep in order with):
    // see Impl::inline_writes.
    const bool small_cached_write = j->kind == JobKind::Write && impl_->inline_writes && j->len <= kInlineWriteMax &&
                                    in_flight_ == 1 && j->submit_ns >= impl_->inline_writes_off_until_ns;
    // InlineIo has no worker to hand it to; Caller asked for this thread.
    if (!loop_ || submission_ == Submission::Caller || small_cached_write) {
        Impl::run_job(*drv_, *j);
        if (small_cached_write && j->end_ns - j->submit_ns > kInlineWriteSlowNs)
            impl_->inline_writes_off_until_ns = j->end_ns + kInlineWriteBackOffNs;
        complete_soon(std::move(j));
        return;
    }
    if (impl_->uring) {
        j = impl_->uring->submit(std::move(j));
        if (!j) return;
    }
    if (impl_->workers.empty() && impl_->borrowed.empty()) {
        Impl::run_job(*drv_, *j);
        complete_soon(std::move(j));
        return;
    }
    {
        std::lock_guard lk(impl_->mu);
        impl_->queue.push_back(std::move(j));
    }
    impl_->work_cv.notify_one();
}

static std::unique_ptr<Job> make_job(JobKind k, uint64_t off, uint8_t* buf, uint64_t len,
                                     BlockBackend::Done done) {
    auto j = std::make_unique<Job>();
    j->kind = k;
    j->off = off;
    j->buf = buf;
    j->len = len;
    j->done = std::move(done);
    return j;
}

void BlockBackend::read(uint64_t off, std::span<uint8_t> buf, Done done) {
    submit(make_job(JobKind::Read, off, buf.data(), buf.size(), std::move(done)));
}

void BlockBackend::write(uint64_t off, std::span<const uint8_t> buf, Done done) {
    check_write_threshold(off, buf.size());
    // The driver only reads from it; the const is dropped to share Job.
    submit(make_job(JobKind::Write, off, const_cast<uint8_t*>(buf.data()), buf.size(),
                    std::move(done)));
}

void BlockBackend::flush(Done done) {
    submit(make_job(JobKind::Flush, 0, nullptr, 0, std::move(done)));
}

void BlockBackend::discard(uint64_t off, uint64_t len, Done done) {
    check_write_threshold(off, len);
    submit(make_job(JobKind::Discard, off, nullptr, len, std::move(done)));
}

void BlockBackend::write_zeroes(uint64_t off, uint64_t len, Done done) {
    check_write_threshold(off, len);
    submit(make_job(JobKind::WriteZeroes, off, nullptr, len, std::move(done)));
}

void BlockBackend::complete_soon(std::unique_ptr<Job> j) {
    Impl::queue_completion(wq_, loop_, impl_->cq, std::move(j), Wake::Defer);
}

void BlockBackend::finish(std::unique_ptr<Job> j) {
    uint64_t now = monotonic_ns();
    uint64_t end = j->end_ns ? j->end_ns : now;
    uint64_t t = end > j->submit_ns ? end - j->submit_ns : 0;
    bool ok = j->result.ok();
    MPQ_TRACE(mpq_block_complete, opts_.id.c_str(), job_kind_name(j->kind), j->off, j->len, ok ? 0 : -j->result.error().err);
    switch (j->kind) {
        case JobKind::Read:
            if (ok) { ++stats_.rd_ops; stats_.rd_bytes += j->len; } else { ++stats_.failed_rd_ops; }
            stats_.rd_total_time_ns += t;
            break;
        case JobKind::Write:
        case JobKind::WriteZeroes:
            if (ok) { ++stats_.wr_ops; stats_.wr_bytes += j->len; } else { ++stats_.failed_wr_ops; }
            stats_.wr_total_time_ns += t;
            stats_.wr_highest_offset = std::max(stats_.wr_highest_offset, j->off + j->len);
            break;
        case JobKind::Flush:
            if (ok) ++stats_.flush_ops; else ++stats_.failed_flush_ops;
            stats_.flush_total_time_ns += t;
            break;
        case JobKind::Discard:
            if (ok) { ++stats_.unmap_ops; stats_.unmap_bytes += j->len; } else { ++stats_.failed_unmap_ops; }
            stats_.unmap_total_time_ns += t;
            break;
    }
    stats_.last_io_ns = now;
    --in_flight_;
    Done done = std::move(j->done);
    Status st = std::move(j->result);
    j.reset();
    if (done) done(std::move(st));
}

void BlockBackend::process_completions() {
    // A completion callback may drain() (or submit); never recurse into the
    // same batch.
    for (;;) {
        std::deque<JobPtr> batch;
        {
            std::lock_guard lk(impl_->cq->mu);
            batch.swap(impl_->cq->done);
        }
        if (batch.empty()) return;
        for (auto& j : batch) finish(std::move(j));
    }
}

void BlockBackend::drain() {
    // Callbacks may submit follow-up requests (the next chunk of a command):
    // keep going until nothing is left.
    while (in_flight_ > 0) {
        if (impl_->uring) impl_->uring->wait_all();
        {
            std::unique_lock lk(impl_->mu);
            impl_->idle_cv.wait(lk, [&] { return impl_->queue.empty() && impl_->running == 0; });
        }
        process_completions();
    }
}

}  // namespace mpq::block
