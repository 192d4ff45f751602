// A WorkQueue that does nothing by itself: deferred callbacks and timers
// wait until the owner pumps them, on its own thread, in a bounded loop.
// Timers follow a virtual clock that only advances when the owner says so,
// so a run is deterministic and never sleeps (unit tests, fuzzers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>

#include "util/work_queue.h"

namespace mpq {

class ManualWorkQueue final : public WorkQueue {
public:
    ManualWorkQueue() = default;
    ManualWorkQueue(const ManualWorkQueue&) = delete;
    ManualWorkQueue& operator=(const ManualWorkQueue&) = delete;

    void defer(Callback cb) override;
    TimerId add_timer(uint64_t delay_ns, Callback cb) override;
    void cancel_timer(TimerId id) override;

    // What one pump may run at most when the caller names no bound: a
    // device that keeps deferring or re-arming work stops here instead of
    // hanging the test.
    static constexpr size_t kDefaultBound = 1000;

    // Runs deferred callbacks in order, including those they defer, up to
    // `max` of them. Returns how many ran.
    size_t run_deferred(size_t max = kDefaultBound);
    // Advances the virtual clock to the earliest timer and fires it (and
    // every other timer due by then). False if no timer was armed.
    bool fire_next_timer();
    // Lets `ns` of time pass as an event loop would: deferred work first,
    // then every timer that comes due, in deadline order, each seeing its
    // own deadline as now_ns() and followed by the deferred work it caused.
    // At most `max` callbacks run; false if that bound stopped it (the
    // clock is at the end of the span anyway, what is left is overdue).
    bool advance(uint64_t ns, size_t max = kDefaultBound);
    // Deferred work first, then timers, until nothing is left or `max`
    // callbacks ran. Returns true if the queue ran dry (false: the bound
    // stopped it, e.g. a device that keeps re-arming a timer).
    bool run_until_idle(size_t max);

    bool has_deferred() const { return !deferred_.empty(); }
    size_t timers_armed() const { return timers_.size(); }
    size_t pending() const { return deferred_.size() + timers_.size(); }
    uint64_t now_ns() const { return now_; }

private:
    struct Timer {
        TimerId id;
        Callback cb;
    };
    size_t fire_due();

    std::deque<Callback> deferred_;
    std::multimap<uint64_t, Timer> timers_;  // by deadline, then arming order
    uint64_t now_ = 0;
    TimerId next_id_ = 1;
};

}  // namespace mpq
