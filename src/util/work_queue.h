// Deferred work and one-shot timers: the one way device models and the
// block layer ask for work "in the background" (a SCRIPTS resumption, a
// block completion, edu's factorial) or after some time (edu's DMA). Models
// never see what runs it:
//   - EventLoop: the device process; callbacks on the loop thread, timers
//     on CLOCK_MONOTONIC (guest time is host time there);
//   - vmm::MachineTimers: in-process devices of our VMM; deferred work on
//     its event loop, timers on the machine's virtual clock (qtest's
//     clock_step moves it);
//   - ManualWorkQueue: tests and fuzzers; nothing runs until the driver
//     pumps it, timers follow a clock only the driver advances.
// So the same device code runs with or without threads and an event loop.
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
