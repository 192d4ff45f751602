// What the monitors ask of the block layer: QEMU's write threshold and
// block_resize. Kept out of backend.cc so the request path there only pays
// for one comparison when no threshold is set.
#include <cerrno>

#include "block/block.h"
#include "trace/trace.h"

namespace mpq::block {

Status BlockDriver::truncate(uint64_t) {
    // QEMU's wording when a driver has no truncate method.
    return fail_errno(ENOTSUP, "Image format driver does not support resize");
}

void BlockBackend::set_write_threshold(uint64_t threshold, ThresholdHit hit) {
    write_threshold_ = threshold;
    threshold_hit_ = threshold ? std::move(hit) : ThresholdHit();
}

void BlockBackend::write_threshold_hit(uint64_t off, uint64_t len) {
    uint64_t threshold = write_threshold_;
    // Cleared before the callback: it fires once, and a callback that sets
    // a new threshold keeps it.
    write_threshold_ = 0;
    ThresholdHit hit = std::move(threshold_hit_);
    threshold_hit_ = ThresholdHit();
    uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
    if (hit) hit(end, threshold);
}

Status BlockBackend::resize(uint64_t new_len) {
    if (read_only()) return fail_errno(EACCES, "Block node is read-only");
    // No request may run against the old length while it changes.
    drain();
    MPQ_TRACE(mpq_block_resize, opts_.id.c_str(), new_len);
    return drv_->truncate(new_len);
}

}  // namespace mpq::block
