#include "block/fault_inject.h"

#include <algorithm>
#include <cstring>

namespace mpq::block {

void FaultInjectDriver::add_rule(const FaultRule& r) {
    std::lock_guard lk(mu_);
    rules_.push_back(r);
}

void FaultInjectDriver::set_blkdebug(std::unique_ptr<BlkdebugRules> rules) {
    std::lock_guard lk(mu_);
    blkdebug_ = std::move(rules);
}

void FaultInjectDriver::clear_rules() {
    std::lock_guard lk(mu_);
    rules_.clear();
}

void FaultInjectDriver::close_gate() {
    std::lock_guard lk(mu_);
    gate_closed_ = true;
}

void FaultInjectDriver::open_gate() {
    std::lock_guard lk(mu_);
    gate_closed_ = false;
    cv_.notify_all();
}

unsigned FaultInjectDriver::waiting() const {
    std::lock_guard lk(mu_);
    return waiting_;
}

void FaultInjectDriver::wait_for_waiting(unsigned n) const {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return waiting_ >= n; });
}

uint64_t FaultInjectDriver::injected() const {
    std::lock_guard lk(mu_);
    return injected_;
}

Status FaultInjectDriver::check(FaultOp op, uint64_t off, uint64_t len) {
    std::unique_lock lk(mu_);
    if (gate_closed_) {
        ++waiting_;
        cv_.notify_all();
        cv_.wait(lk, [&] { return !gate_closed_; });
        --waiting_;
    }
    if (blkdebug_) {
        BlkdebugIo io = BlkdebugIo::Read;
        switch (op) {
            case FaultOp::Read: io = BlkdebugIo::Read; break;
            case FaultOp::Write: io = BlkdebugIo::Write; break;
            case FaultOp::Flush: io = BlkdebugIo::Flush; break;
            case FaultOp::Discard: io = BlkdebugIo::Discard; break;
            case FaultOp::WriteZeroes: io = BlkdebugIo::WriteZeroes; break;
            case FaultOp::Any: break;  // never passed in: each call names its kind
        }
        if (int err = blkdebug_->on_request(io, off, len); err != 0) {
            ++injected_;
            return fail_errno(err, "blkdebug: injected error: {}", std::strerror(err));
        }
    }
    for (auto& r : rules_) {
        if (!(static_cast<uint32_t>(r.ops) & static_cast<uint32_t>(op))) continue;
        bool whole = op == FaultOp::Flush;
        uint64_t rend = r.len > UINT64_MAX - r.off ? UINT64_MAX : r.off + r.len;
        if (!whole && !(off < rend && off + std::max<uint64_t>(len, 1) > r.off)) continue;
        if (r.count == 0) continue;
        if (r.skip > 0) {
            --r.skip;
            continue;
        }
        if (r.count > 0) --r.count;
        ++injected_;
        return fail_errno(r.err, "injected fault: {}", std::strerror(r.err));
    }
    return {};
}

Status FaultInjectDriver::pread(uint64_t off, std::span<uint8_t> buf) {
    MPQ_TRY(check(FaultOp::Read, off, buf.size()));
    return inner_->pread(off, buf);
}

Status FaultInjectDriver::pwrite(uint64_t off, std::span<const uint8_t> buf) {
    Status st = check(FaultOp::Write, off, buf.size());
    if (st.ok()) st = inner_->pwrite(off, buf);
    if (blkdebug_) blkdebug_->after_request(BlkdebugIo::Write);
    return st;
}

Status FaultInjectDriver::flush() {
    MPQ_TRY(check(FaultOp::Flush, 0, 0));
    return inner_->flush();
}

Status FaultInjectDriver::discard(uint64_t off, uint64_t len) {
    MPQ_TRY(check(FaultOp::Discard, off, len));
    return inner_->discard(off, len);
}

Status FaultInjectDriver::write_zeroes(uint64_t off, uint64_t len) {
    Status st = check(FaultOp::WriteZeroes, off, len);
    if (st.ok()) st = inner_->write_zeroes(off, len);
    if (blkdebug_) blkdebug_->after_request(BlkdebugIo::WriteZeroes);
    return st;
}

}  // namespace mpq::block
