#include "block/fault_inject.h"

#include <algorithm>
#include <cstring>

namespace mpq::block {

void FaultInjectDriver::add_rule(const FaultRule& r) {
    std::lock_guard lk(mu_);
    rules_.push_back(r);
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
    MPQ_TRY(check(FaultOp::Write, off, buf.size()));
    return inner_->pwrite(off, buf);
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
    MPQ_TRY(check(FaultOp::WriteZeroes, off, len));
    return inner_->write_zeroes(off, len);
}

}  // namespace mpq::block
