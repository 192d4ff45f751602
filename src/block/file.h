// The `file` protocol driver: a host file or block device. Raw images are
// this driver used directly, so it is also the `raw` format.
#pragma once

#include <atomic>
#include <cstdint>
#include <shared_mutex>
#include <string>

#include "block/block.h"
#include "util/unique_fd.h"

namespace mpq::block {

enum class DirectIo : uint8_t { No, Yes };

class FileDriver final : public BlockDriver {
public:
    static Result<std::unique_ptr<FileDriver>> open(const DriveOptions& opts);

    std::string format_name() const override { return "raw"; }
    uint64_t length() const override { return size_.load(std::memory_order_relaxed); }
    Status pread(uint64_t off, std::span<uint8_t> buf) override;
    Status pwrite(uint64_t off, std::span<const uint8_t> buf) override;
    Status flush() override;
    Status discard(uint64_t off, uint64_t len) override;
    Status write_zeroes(uint64_t off, uint64_t len) override;
    bool concurrent_safe() const override { return true; }
    Status truncate(uint64_t new_len) override;

    // For the io_uring engine, which submits straight to the fd.
    int fd() const { return fd_.get(); }
    bool direct() const { return direct_ == DirectIo::Yes; }
    bool read_only() const { return read_only_ == ReadOnly::Yes; }
    bool flush_is_noop() const { return cache_ == CacheMode::Unsafe; }
    // A write returns once its data is in the page cache (cache=writeback or
    // unsafe, no O_DIRECT, no O_DSYNC).
    bool writes_to_page_cache() const {
        return direct_ == DirectIo::No && (cache_ == CacheMode::Writeback || cache_ == CacheMode::Unsafe);
    }
    // Offset, length and memory alignment O_DIRECT needs (1 when buffered).
    uint32_t alignment() const { return align_; }
    bool is_aligned(uint64_t off, const void* buf, uint64_t len) const;
    const std::string& path() const { return path_; }
    // An engine that wrote past the end directly tells the driver.
    void note_written(uint64_t end);
    // Reads `buf` from the page cache without waiting for the disk
    // (RWF_NOWAIT). True when all of it was served; false when some of it
    // would have to wait (or the kernel cannot tell), and the caller then
    // reads it the ordinary way. Only for buffered files; loop thread only.
    bool read_cached(uint64_t off, std::span<uint8_t> buf);

private:
    FileDriver() = default;
    Status read_full(uint64_t off, uint8_t* p, uint64_t len);
    Status write_full(uint64_t off, const uint8_t* p, uint64_t len);
    Status bounce_read(uint64_t off, std::span<uint8_t> buf);
    Status bounce_write(uint64_t off, std::span<const uint8_t> buf);
    Status zero_by_writing(uint64_t off, uint64_t len);
    Status refuse_write(const char* what) const;

    UniqueFd fd_;
    std::string path_;
    ReadOnly read_only_ = ReadOnly::No;
    CacheMode cache_ = CacheMode::Writeback;
    DirectIo direct_ = DirectIo::No;
    bool block_device_ = false;
    uint32_t align_ = 1;
    std::atomic<uint64_t> size_{0};
    bool nowait_ok_ = true;  // cleared once the kernel refuses RWF_NOWAIT
    // O_DIRECT read-modify-write of a partial block must not interleave with
    // another write to the same block: bounce writes take it exclusively,
    // aligned writes shared.
    std::shared_mutex rmw_mu_;
};

}  // namespace mpq::block
