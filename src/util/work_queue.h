// Deferred work and one-shot timers, as device models and the block layer
// ask for them. Two implementations: the EventLoop (production: callbacks
// run on the loop thread, timers on CLOCK_MONOTONIC) and ManualWorkQueue
// (tests, fuzzers: nothing runs until the driver pumps it, timers follow a
// virtual clock), so the same device code runs with or without threads and
// an event loop.
#pragma once

#include <cstdint>
#include <functional>

namespace mpq {

class WorkQueue {
public:
    using Callback = std::function<void()>;
    using TimerId = uint64_t;  // 0 is never a valid id

    // Runs `cb` later on the caller's thread, never inside this call: after
    // the current handler returns (EventLoop) or when the driver pumps.
    virtual void defer(Callback cb) = 0;
    // Runs `cb` once, `delay_ns` from now on this queue's clock.
    virtual TimerId add_timer(uint64_t delay_ns, Callback cb) = 0;
    // Unknown or already fired ids are ignored.
    virtual void cancel_timer(TimerId id) = 0;

protected:
    // Not owned through this interface.
    ~WorkQueue() = default;
};

}  // namespace mpq
