// ManualWorkQueue: see the header.
#include "util/manual_work_queue.h"

#include <limits>
#include <utility>

namespace mpq {

void ManualWorkQueue::defer(Callback cb) { deferred_.push_back(std::move(cb)); }

WorkQueue::TimerId ManualWorkQueue::add_timer(uint64_t delay_ns, Callback cb) {
    TimerId id = next_id_++;
    uint64_t due = delay_ns > std::numeric_limits<uint64_t>::max() - now_
                       ? std::numeric_limits<uint64_t>::max()
                       : now_ + delay_ns;
    timers_.emplace(due, Timer{id, std::move(cb)});
    return id;
}

void ManualWorkQueue::cancel_timer(TimerId id) {
    // A linear search: tests and fuzzers keep a handful of timers.
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
        if (it->second.id == id) {
            timers_.erase(it);
            return;
        }
    }
}

size_t ManualWorkQueue::run_deferred(size_t max) {
    size_t n = 0;
    while (n < max && !deferred_.empty()) {
        // Popped before it runs: the callback may defer more (or destroy
        // whatever armed it).
        Callback cb = std::move(deferred_.front());
        deferred_.pop_front();
        ++n;
        if (cb) cb();
    }
    return n;
}

size_t ManualWorkQueue::fire_due() {
    size_t n = 0;
    while (!timers_.empty() && timers_.begin()->first <= now_) {
        Callback cb = std::move(timers_.begin()->second.cb);
        timers_.erase(timers_.begin());
        ++n;
        if (cb) cb();
    }
    return n;
}

bool ManualWorkQueue::fire_next_timer() {
    if (timers_.empty()) return false;
    if (timers_.begin()->first > now_) now_ = timers_.begin()->first;
    fire_due();
    return true;
}

bool ManualWorkQueue::advance(uint64_t ns, size_t max) {
    const uint64_t target = ns > std::numeric_limits<uint64_t>::max() - now_
                                ? std::numeric_limits<uint64_t>::max()
                                : now_ + ns;
    size_t ran = run_deferred(max);
    while (ran < max && !timers_.empty() && timers_.begin()->first <= target) {
        if (timers_.begin()->first > now_) now_ = timers_.begin()->first;
        Callback cb = std::move(timers_.begin()->second.cb);
        timers_.erase(timers_.begin());
        ++ran;
        if (cb) cb();
        ran += run_deferred(max - ran);
    }
    now_ = target;
    return ran < max || (deferred_.empty() && (timers_.empty() || timers_.begin()->first > target));
}

bool ManualWorkQueue::run_until_idle(size_t max) {
    size_t ran = 0;
    while (ran < max) {
        if (!deferred_.empty()) {
            ran += run_deferred(max - ran);
            continue;
        }
        if (timers_.empty()) return true;
        // One timer at a time, so the bound counts each of them.
        if (timers_.begin()->first > now_) now_ = timers_.begin()->first;
        Callback cb = std::move(timers_.begin()->second.cb);
        timers_.erase(timers_.begin());
        ++ran;
        if (cb) cb();
    }
    return deferred_.empty() && timers_.empty();
}

}  // namespace mpq
