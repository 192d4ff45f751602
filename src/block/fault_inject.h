// A BlockDriver wrapper that fails chosen requests on purpose (EIO, ENOSPC,
// ...) or holds them until released, so tests can exercise error and
// cancellation paths of everything above the block layer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "block/blkdebug.h"
#include "block/block.h"

namespace mpq::block {

enum class FaultOp : uint32_t {
    Read = 1,
    Write = 2,
    Flush = 4,
    Discard = 8,
    WriteZeroes = 16,
    Any = 31,
};
constexpr FaultOp operator|(FaultOp a, FaultOp b) {
    return static_cast<FaultOp>(static_cast<uint32_t>(a) | static_cast<uint32_t>(b));
}

struct FaultRule {
    FaultOp ops = FaultOp::Any;
    uint64_t off = 0;                 // requests overlapping [off, off+len) match
    uint64_t len = UINT64_MAX;
    int err = 5;                      // EIO
    int skip = 0;                     // let this many matching requests pass first
    int count = -1;                   // fail this many, -1 = forever
};

class FaultInjectDriver final : public BlockDriver {
public:
    explicit FaultInjectDriver(std::unique_ptr<BlockDriver> inner) : inner_(std::move(inner)) {}

    void add_rule(const FaultRule& r);
    // QEMU blkdebug rules (-drive file=blkdebug:...), consulted before the
    // FaultRules; owned by the driver.
    void set_blkdebug(std::unique_ptr<BlkdebugRules> rules);
    const BlkdebugRules* blkdebug() const { return blkdebug_.get(); }
    void clear_rules();
    // While closed, every request waits (on its I/O thread) until open_gate().
    void close_gate();
    void open_gate();
    // Requests currently waiting at the gate.
    unsigned waiting() const;
    // Blocks until `n` requests wait at the gate (tests).
    void wait_for_waiting(unsigned n) const;
    uint64_t injected() const;
    BlockDriver& inner() { return *inner_; }

    std::string format_name() const override { return inner_->format_name(); }
    uint64_t length() const override { return inner_->length(); }
    Status pread(uint64_t off, std::span<uint8_t> buf) override;
    Status pwrite(uint64_t off, std::span<const uint8_t> buf) override;
    Status flush() override;
    Status discard(uint64_t off, uint64_t len) override;
    Status write_zeroes(uint64_t off, uint64_t len) override;
    bool concurrent_safe() const override { return inner_->concurrent_safe(); }
    Status truncate(uint64_t new_len) override { return inner_->truncate(new_len); }
    void set_metadata_writes(MetadataWrites w) override { inner_->set_metadata_writes(w); }
    Status commit_metadata() override { return inner_->commit_metadata(); }

private:
    Status check(FaultOp op, uint64_t off, uint64_t len);

    std::unique_ptr<BlockDriver> inner_;
    mutable std::mutex mu_;
    mutable std::condition_variable cv_;
    std::vector<FaultRule> rules_;
    std::unique_ptr<BlkdebugRules> blkdebug_;  // has its own lock
    bool gate_closed_ = false;
    unsigned waiting_ = 0;
    uint64_t injected_ = 0;
};

}  // namespace mpq::block
