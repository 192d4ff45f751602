// Internals shared by the BlockBackend front (backend.cc) and its io_uring
// engine (uring.cc). Not for use outside src/block.
#pragma once

#include <cstdint>
#include <memory>

#include "block/block.h"

namespace mpq {
class EventLoop;
}

namespace mpq::block {

class FileDriver;

enum class JobKind : uint8_t { Read, Write, Flush, Discard, WriteZeroes };
// For trace lines (mpq_block_*).
inline const char* job_kind_name(JobKind k) {
    static constexpr const char* kNames[] = {"read", "write", "flush", "discard", "write-zeroes"};
    return kNames[static_cast<unsigned>(k)];
}

struct Job {
    JobKind kind = JobKind::Read;
    uint64_t off = 0;
    uint8_t* buf = nullptr;  // Read/Write only
    uint64_t len = 0;
    BlockBackend::Done done;
    uint64_t submit_ns = 0;
    uint64_t end_ns = 0;
    uint64_t progress = 0;  // io_uring: bytes done so far
    Status result;
};

using JobPtr = std::unique_ptr<Job>;

uint64_t monotonic_ns();

// Submits raw-file requests through io_uring; completions are reaped on the
// loop thread (eventfd) and handed to `complete`.
class UringEngine {
public:
    using Complete = void (*)(void* ctx, JobPtr job);
    virtual ~UringEngine() = default;
    // Takes the job if it can run it (aligned read/write, flush); otherwise
    // gives it back untouched for the thread pool.
    virtual JobPtr submit(JobPtr job) = 0;
    virtual unsigned in_flight() const = 0;
    // Blocks until every submitted job completed (drain).
    virtual void wait_all() = 0;
};

// Asked: the user wrote aio=io_uring/native, so a refusal is worth a log line.
enum class UringChoice : uint8_t { Asked, Auto };

// Null with a logged reason when the kernel or the file does not allow it.
std::unique_ptr<UringEngine> make_uring_engine(EventLoop& loop, FileDriver& file,
                                               UringEngine::Complete complete, void* ctx,
                                               UringChoice why);

}  // namespace mpq::block
