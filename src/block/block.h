// Block layer. Drivers are synchronous and stack (qcow2 on file); a
// BlockBackend runs them on I/O worker threads and reports completions on the
// event loop, so a slow disk never stalls the register path. Tests and
// fuzzers may run them inline instead (InlineIo), with no thread at all.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "util/result.h"

namespace mpq {
class EventLoop;
class WorkQueue;
}

namespace mpq::block {

// Errors carry errno in Error::err (EIO, ENOSPC, EINVAL, ...).
class BlockDriver {
public:
    virtual ~BlockDriver() = default;
    virtual std::string format_name() const = 0;
    virtual uint64_t length() const = 0;
    virtual Status pread(uint64_t off, std::span<uint8_t> buf) = 0;
    virtual Status pwrite(uint64_t off, std::span<const uint8_t> buf) = 0;
    virtual Status flush() = 0;
    virtual Status discard(uint64_t off, uint64_t len) = 0;
    virtual Status write_zeroes(uint64_t off, uint64_t len) = 0;
    // True if calls may run concurrently from several threads (raw files);
    // false makes the backend serialise them (qcow2 metadata).
    virtual bool concurrent_safe() const = 0;
    // Changes the image's length (block_resize). Drivers that cannot say so
    // with QEMU's words; nothing is changed then.
    virtual Status truncate(uint64_t new_len);

    // A driver that keeps metadata in process memory (qcow2) writes it to
    // the file before a write, write-zeroes or discard returns, so that a
    // process killed right after the acknowledgement loses nothing (the
    // kernel keeps what reached the file). A caller that acknowledges
    // several requests at once may defer that to one commit_metadata() for
    // the batch (Batched), and must run it, and see it succeed, before it
    // acknowledges any of them. Drivers without such metadata ignore both.
    enum class MetadataWrites : uint8_t { PerRequest, Batched };
    virtual void set_metadata_writes(MetadataWrites) {}
    virtual Status commit_metadata() { return {}; }
};

enum class CacheMode : uint8_t { Writeback, None, Writethrough, Directsync, Unsafe };
// Auto (no aio= given): io_uring for raw files where the kernel allows it,
// I/O threads otherwise; the guest sees no difference, only the latency does.
enum class AioMode : uint8_t { Auto, Threads, Native, IoUring };
enum class ReadOnly : uint8_t { No, Yes };
// QEMU's blkdebug error injection between the format and the file.
// UnderFormat: `file=blkdebug:...` (a format above raises read/write_aio);
// Top: `driver=blkdebug` (no format above it, as in QEMU).
enum class Blkdebug : uint8_t { Off, UnderFormat, Top };

// What `-drive` says about a disk.
struct DriveOptions {
    std::string id;
    std::string file;
    std::string format;  // "", "raw", "qcow2" ("" = probe)
    ReadOnly read_only = ReadOnly::No;
    CacheMode cache = CacheMode::Writeback;
    AioMode aio = AioMode::Auto;
    uint64_t l2_cache_size = 0;  // qcow2 metadata cache bound in bytes; 0 = default
    // `file=blkdebug:RULES:IMAGE` or `driver=blkdebug,config=RULES,image.filename=IMAGE`:
    // `file` is then the image, `blkdebug_config` the rules file ("" = no rules).
    Blkdebug blkdebug = Blkdebug::Off;
    std::string blkdebug_config;
};

// Reads the block-related `-drive` keys (file, id, format/driver, if, cache, aio,
// readonly, l2-cache-size, QEMU's cache.direct / cache.no-flush, and blkdebug's
// config / image.filename / image.driver). Unknown
// keys and bad values are errors; options that belong to the caller (media,
// index, ...) must be filtered out before.
Result<DriveOptions> parse_drive_options(
    const std::vector<std::pair<std::string, std::string>>& kv);
const char* cache_mode_name(CacheMode m);

// Opens the driver stack for a drive (format probing included).
Result<std::unique_ptr<BlockDriver>> open_drive(const DriveOptions& opts);
// The protocol driver: a host file (O_DIRECT with cache=none).
Result<std::unique_ptr<BlockDriver>> open_file(const DriveOptions& opts);
// The qcow2 format driver on top of `file`.
Result<std::unique_ptr<BlockDriver>> open_qcow2(std::unique_ptr<BlockDriver> file,
                                                const DriveOptions& opts);

struct BlockStats {
    uint64_t rd_bytes = 0, wr_bytes = 0;
    uint64_t rd_ops = 0, wr_ops = 0, flush_ops = 0, unmap_ops = 0, unmap_bytes = 0;
    uint64_t failed_rd_ops = 0, failed_wr_ops = 0, failed_flush_ops = 0, failed_unmap_ops = 0;
    uint64_t rd_total_time_ns = 0, wr_total_time_ns = 0, flush_total_time_ns = 0, unmap_total_time_ns = 0;
    uint64_t last_io_ns = 0;  // monotonic time of the last completion (idle time)
    // QEMU's wr_highest_offset: the largest end (offset + length) of any
    // write or write-zeroes request, successful or not.
    uint64_t wr_highest_offset = 0;
};

struct Job;  // one queued request (backend internals)

// Selects the backend that runs each request inside the call that submits
// it and defers only the completion (on a WorkQueue, never inside the
// call, as with the threaded backend): for tests and fuzzers driving a
// device without threads, with drivers that never block (in-memory disks).
// Never for the device process, whose register path must not wait on I/O.
struct InlineIo {};
inline constexpr InlineIo kInlineIo{};

class BlockBackend {
public:
    using Done = std::function<void(Status)>;

    BlockBackend(EventLoop& loop, std::unique_ptr<BlockDriver> drv, DriveOptions opts);
    BlockBackend(WorkQueue& wq, std::unique_ptr<BlockDriver> drv, DriveOptions opts, InlineIo);
    ~BlockBackend();
    BlockBackend(const BlockBackend&) = delete;
    BlockBackend& operator=(const BlockBackend&) = delete;

    const DriveOptions& options() const { return opts_; }
    BlockDriver& driver() { return *drv_; }
    uint64_t length() const { return drv_->length(); }
    bool read_only() const { return opts_.read_only == ReadOnly::Yes; }

    // `buf` must stay valid until `done` runs (on the event loop thread, or
    // from the WorkQueue of an InlineIo backend).
    void read(uint64_t off, std::span<uint8_t> buf, Done done);
    void write(uint64_t off, std::span<const uint8_t> buf, Done done);
    void flush(Done done);
    void discard(uint64_t off, uint64_t len, Done done);
    void write_zeroes(uint64_t off, uint64_t len, Done done);

    const BlockStats& stats() const { return stats_; }
    // Number of requests submitted and not yet completed.
    unsigned in_flight() const { return in_flight_; }
    // Blocks until every request has completed and its `done` ran (shutdown,
    // tests). Loop thread only; completions run inside it.
    void drain();
    // True when requests go through io_uring (a raw file without aio=threads,
    // and the kernel allowed it).
    bool uses_io_uring() const;

    // Where requests run. Threads (the default): on an I/O thread or
    // io_uring while the loop carries on. Caller: inside the call that
    // submits them, the completion deferred as always; only for a process
    // that waits for all of its I/O at the end of every loop round anyway
    // (a -x-worker worker drains its drives before it publishes its state),
    // where handing a request to a thread adds two wake-ups and no overlap.
    enum class Submission : uint8_t { Threads, Caller };
    void set_submission(Submission s) { submission_ = s; }

    // --- monitor commands (defined in backend_admin.cc) ---
    // QEMU's write threshold (block-set-write-threshold): the first write,
    // write-zeroes or discard whose end goes past `threshold` calls `hit`
    // with that end, on the loop thread before the request is queued, and
    // the threshold is cleared (it fires once). 0 switches it off.
    using ThresholdHit = std::function<void(uint64_t end, uint64_t threshold)>;
    void set_write_threshold(uint64_t threshold, ThresholdHit hit);
    uint64_t write_threshold() const { return write_threshold_; }
    // block_resize: waits for every request in flight (blocking the loop
    // for that long, as QEMU's drained section), then changes the length.
    Status resize(uint64_t new_len);

private:
    void check_write_threshold(uint64_t off, uint64_t len) {
        if (write_threshold_ != 0 && (off >= write_threshold_ || len > write_threshold_ - off))
            [[unlikely]] write_threshold_hit(off, len);
    }
    void write_threshold_hit(uint64_t off, uint64_t len);

    struct Impl;
    void submit(std::unique_ptr<Job> j);
    void finish(std::unique_ptr<Job> j);
    void complete_soon(std::unique_ptr<Job> j);
    void process_completions();

    EventLoop* loop_;  // null for InlineIo
    WorkQueue& wq_;
    std::unique_ptr<BlockDriver> drv_;
    DriveOptions opts_;
    BlockStats stats_;
    unsigned in_flight_ = 0;
    Submission submission_ = Submission::Threads;
    uint64_t write_threshold_ = 0;
    ThresholdHit threshold_hit_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace mpq::block
