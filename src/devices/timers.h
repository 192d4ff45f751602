// Time for device models: work a real device does "in the background"
// (edu's factorial) and timers on the guest's clock (edu's DMA completes
// 100 ms of guest time after it is started). Models never see the event loop
// or the clock behind this: the remote process runs them on its event loop,
// our VMM on its virtual clock (which qtest's clock_step moves), tests and
// fuzzers on ManualTimers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

namespace mpq {
class EventLoop;
}

namespace mpq::devices {

class DeviceTimers {
public:
    using Id = uint64_t;
    using Callback = std::function<void()>;
    virtual ~DeviceTimers() = default;
    // Runs `cb` after the current register access has returned.
    virtual void defer(Callback cb) = 0;
    // Runs `cb` once `delay_ns` of guest time has passed.
    virtual Id add_timer(int64_t delay_ns, Callback cb) = 0;
    // No effect if `id` already ran or was cancelled.
    virtual void cancel(Id id) = 0;
};

// The remote process: guest time is host time.
class LoopTimers final : public DeviceTimers {
public:
    explicit LoopTimers(EventLoop& loop) : loop_(loop) {}
    void defer(Callback cb) override;
    Id add_timer(int64_t delay_ns, Callback cb) override;
    void cancel(Id id) override;

private:
    EventLoop& loop_;
};

// Nothing runs until asked: unit tests and fuzzers drive time themselves.
class ManualTimers final : public DeviceTimers {
public:
    void defer(Callback cb) override { deferred_.push_back(std::move(cb)); }
    Id add_timer(int64_t delay_ns, Callback cb) override;
    void cancel(Id id) override;

    // Runs deferred work (and work it defers), at most `limit` callbacks.
    void run_deferred(unsigned limit = 1000);
    // Advances guest time by `ns`, running deferred work and due timers.
    void advance(int64_t ns);
    int64_t now() const { return now_; }
    size_t pending() const { return deferred_.size() + timers_.size(); }

private:
    int64_t now_ = 0;
    Id next_ = 1;
    std::vector<Callback> deferred_;
    std::multimap<int64_t, std::pair<Id, Callback>> timers_;
};

}  // namespace mpq::devices
