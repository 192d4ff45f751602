// BlockBackend throughput: 4 KiB random read/write and 1 MiB sequential
// transfers, I/O threads vs io_uring, page cache vs O_DIRECT, at a given
// queue depth. Every request completes on the event loop as in the device.
//   block_bench --benchmark_filter=Rand   (args: engine, direct, queue depth)
// engine 0 = threads, 1 = io_uring; direct 0 = cache=writeback, 1 = cache=none.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "block/block.h"
#include "util/event_loop.h"
#include "util/log.h"

namespace {

using namespace mpq;
using namespace mpq::block;

constexpr uint64_t kImageSize = 256ull << 20;

// One image shared by all runs; filled once so reads hit real blocks.
const std::string& image_path() {
    static std::string path = [] {
        const char* dir = std::getenv("MPQ_BENCH_DIR");
        std::string tmpl = std::string(dir ? dir : "/tmp") + "/mpq-block-bench-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back(0);
        int fd = mkstemp(buf.data());
        if (fd < 0) std::abort();
        std::vector<uint8_t> chunk(1 << 20);
        for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<uint8_t>(i * 7);
        for (uint64_t off = 0; off < kImageSize; off += chunk.size())
            if (pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) < 0) std::abort();
        fsync(fd);
        close(fd);
        std::string p(buf.data());
        std::atexit([] { unlink(image_path().c_str()); });
        return p;
    }();
    return path;
}

enum class Op { Read, Write };

struct Rig {
    EventLoop loop;
    std::unique_ptr<BlockBackend> bb;
    bool ok = false;

    Rig(benchmark::State& state) {
        log::set_level(log::Level::Warning);
        DriveOptions o;
        o.id = "bench";
        o.file = image_path();
        o.format = "raw";
        o.aio = state.range(0) ? AioMode::IoUring : AioMode::Threads;
        o.cache = state.range(1) ? CacheMode::None : CacheMode::Writeback;
        auto d = open_file(o);
        if (!d) {
            state.SkipWithError(d.error().message.c_str());
            return;
        }
        bb = std::make_unique<BlockBackend>(loop, std::move(d.value()), o);
        if (state.range(0) && !bb->uses_io_uring()) {
            state.SkipWithError("io_uring not available");
            return;
        }
        ok = true;
    }
};

void run_io(benchmark::State& state, Op op, uint32_t size, bool random) {
    Rig rig(state);
    if (!rig.ok) return;
    const unsigned qd = static_cast<unsigned>(state.range(2));
    const uint64_t slots = kImageSize / size;
    std::vector<uint8_t*> bufs(qd);
    for (auto& b : bufs) {
        void* p = nullptr;
        if (posix_memalign(&p, 4096, size) != 0) std::abort();
        std::memset(p, 0xA5, size);
        b = static_cast<uint8_t*>(p);
    }
    std::mt19937_64 rng(42);
    uint64_t seq = 0;
    constexpr unsigned kOpsPerIter = 64;
    uint64_t total = 0;
    for (auto _ : state) {
        unsigned submitted = 0, done = 0, failed = 0;
        std::function<void(unsigned)> submit = [&](unsigned slot) {
            uint64_t blk = random ? rng() % slots : (seq++ % slots);
            uint64_t off = blk * size;
            ++submitted;
            auto cb = [&, slot](Status st) {
                ++done;
                if (!st) ++failed;
                if (submitted < kOpsPerIter) submit(slot);
            };
            if (op == Op::Read)
                rig.bb->read(off, std::span<uint8_t>(bufs[slot], size), cb);
            else
                rig.bb->write(off, std::span<const uint8_t>(bufs[slot], size), cb);
        };
        for (unsigned i = 0; i < qd && submitted < kOpsPerIter; ++i) submit(i);
        while (done < submitted) rig.loop.run_once(-1);
        if (failed) {
            state.SkipWithError("I/O error");
            break;
        }
        total += done;
    }
    rig.bb->drain();
    state.SetItemsProcessed(static_cast<int64_t>(total));
    state.SetBytesProcessed(static_cast<int64_t>(total) * size);
    for (auto* b : bufs) std::free(b);
}

void BM_RandRead4k(benchmark::State& s) { run_io(s, Op::Read, 4096, true); }
void BM_RandWrite4k(benchmark::State& s) { run_io(s, Op::Write, 4096, true); }
void BM_SeqRead1M(benchmark::State& s) { run_io(s, Op::Read, 1 << 20, false); }
void BM_SeqWrite1M(benchmark::State& s) { run_io(s, Op::Write, 1 << 20, false); }

void args(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> depths) {
    b->ArgNames({"uring", "direct", "qd"});
    for (int64_t engine : {0, 1})
        for (int64_t direct : {0, 1})
            for (int64_t qd : depths) b->Args({engine, direct, qd});
    b->UseRealTime();
}

BENCHMARK(BM_RandRead4k)->Apply([](auto* b) { args(b, {1, 16}); });
BENCHMARK(BM_RandWrite4k)->Apply([](auto* b) { args(b, {1, 16}); });
BENCHMARK(BM_SeqRead1M)->Apply([](auto* b) { args(b, {4}); });
BENCHMARK(BM_SeqWrite1M)->Apply([](auto* b) { args(b, {4}); });

// ---- qcow2: 4 KiB random writes to a fresh image ----
// Nearly every write allocates a cluster, so each one changes a refcount
// block and an L2 table. meta=0 keeps those in memory until a flush (how
// the driver worked before it wrote them through: a killed process lost
// them); meta=1 writes them to the file before each write returns (the
// default: under the dirty bit on version 3, with barriers on v2=1). The backend variant runs with requests in flight, where one
// commit serves every request of a batch.
//   block_bench --benchmark_filter=Qcow2Fresh

struct FreshQcow2 {
    std::string dir, path;
    bool ok = false;
    explicit FreshQcow2(benchmark::State& state) {
        const char* d = std::getenv("MPQ_BENCH_DIR");
        std::string tmpl = std::string(d ? d : "/tmp") + "/mpq-qcow2-bench-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back(0);
        if (!mkdtemp(buf.data())) {
            state.SkipWithError("mkdtemp failed");
            return;
        }
        dir = buf.data();
        path = dir + "/fresh.qcow2";
        // 64 GiB virtual: random writes land in new clusters and new L2 tables.
        // v2=1: a version 2 image, which has no dirty bit and so keeps a
        // barrier on every allocating write.
        const bool v2 = state.range(2) != 0;
        std::string cmd = std::string("qemu-img create -q -f qcow2 -o cluster_size=65536") +
                          (v2 ? ",compat=0.10 " : " ") + path + " 64G >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) {
            state.SkipWithError("qemu-img create failed (qemu-img installed?)");
            return;
        }
        ok = true;
    }
    ~FreshQcow2() {
        if (!path.empty()) unlink(path.c_str());
        if (!dir.empty()) rmdir(dir.c_str());
    }
    DriveOptions options(benchmark::State& state) const {
        DriveOptions o;
        o.id = "bench";
        o.file = path;
        o.format = "qcow2";
        o.cache = state.range(0) ? CacheMode::None : CacheMode::Writeback;
        return o;
    }
};

void BM_Qcow2FreshRandWrite4k(benchmark::State& state) {
    log::set_level(log::Level::Warning);
    FreshQcow2 img(state);
    if (!img.ok) return;
    auto o = img.options(state);
    auto d = open_drive(o);
    if (!d) {
        state.SkipWithError(d.error().message.c_str());
        return;
    }
    BlockDriver& drv = **d;
    if (state.range(1) == 0) drv.set_metadata_writes(BlockDriver::MetadataWrites::Batched);
    void* p = nullptr;
    if (posix_memalign(&p, 4096, 4096) != 0) std::abort();
    std::memset(p, 0x5A, 4096);
    std::span<const uint8_t> buf(static_cast<const uint8_t*>(p), 4096);
    std::mt19937_64 rng(7);
    const uint64_t blocks = drv.length() / 4096;
    uint64_t total = 0;
    for (auto _ : state) {
        if (!drv.pwrite((rng() % blocks) * 4096, buf)) {
            state.SkipWithError("write failed");
            break;
        }
        ++total;
    }
    if (!drv.flush()) state.SkipWithError("flush failed");
    state.SetItemsProcessed(static_cast<int64_t>(total));
    std::free(p);
}

void BM_Qcow2FreshRandWrite4kBackend(benchmark::State& state) {
    log::set_level(log::Level::Warning);
    FreshQcow2 img(state);
    if (!img.ok) return;
    auto o = img.options(state);
    auto d = open_drive(o);
    if (!d) {
        state.SkipWithError(d.error().message.c_str());
        return;
    }
    EventLoop loop;
    BlockBackend bb(loop, std::move(*d), o);
    const unsigned qd = static_cast<unsigned>(state.range(1));
    void* p = nullptr;
    if (posix_memalign(&p, 4096, 4096) != 0) std::abort();
    std::memset(p, 0x5A, 4096);
    std::span<const uint8_t> buf(static_cast<const uint8_t*>(p), 4096);
    std::mt19937_64 rng(7);
    const uint64_t blocks = bb.length() / 4096;
    constexpr unsigned kOpsPerIter = 64;
    uint64_t total = 0;
    for (auto _ : state) {
        unsigned submitted = 0, done = 0, failed = 0;
        std::function<void()> submit = [&] {
            ++submitted;
            bb.write((rng() % blocks) * 4096, buf, [&](Status st) {
                ++done;
                if (!st) ++failed;
                if (submitted < kOpsPerIter) submit();
            });
        };
        for (unsigned i = 0; i < qd && submitted < kOpsPerIter; ++i) submit();
        while (done < submitted) loop.run_once(-1);
        if (failed) {
            state.SkipWithError("I/O error");
            break;
        }
        total += done;
    }
    bb.drain();
    state.SetItemsProcessed(static_cast<int64_t>(total));
    std::free(p);
}

BENCHMARK(BM_Qcow2FreshRandWrite4k)
    ->ArgNames({"direct", "meta", "v2"})
    ->Args({0, 0, 0})->Args({0, 1, 0})->Args({1, 0, 0})->Args({1, 1, 0})->Args({0, 1, 1})->Args({1, 1, 1})
    ->UseRealTime();
BENCHMARK(BM_Qcow2FreshRandWrite4kBackend)
    ->ArgNames({"direct", "qd", "v2"})
    ->Args({0, 1, 0})->Args({0, 16, 0})->Args({1, 1, 0})->Args({1, 16, 0})->Args({0, 1, 1})->Args({0, 16, 1})
    ->UseRealTime();

}  // namespace
