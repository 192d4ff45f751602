#include "devices/timers.h"

#include "util/event_loop.h"

namespace mpq::devices {

void LoopTimers::defer(Callback cb) { loop_.defer(std::move(cb)); }

DeviceTimers::Id LoopTimers::add_timer(int64_t delay_ns, Callback cb) {
    return loop_.add_timer(delay_ns > 0 ? static_cast<uint64_t>(delay_ns) : 0, std::move(cb));
}

void LoopTimers::cancel(Id id) { loop_.cancel_timer(id); }

DeviceTimers::Id ManualTimers::add_timer(int64_t delay_ns, Callback cb) {
    Id id = next_++;
    timers_.emplace(now_ + (delay_ns > 0 ? delay_ns : 0), std::make_pair(id, std::move(cb)));
    return id;
}

void ManualTimers::cancel(Id id) {
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
        if (it->second.first == id) {
            timers_.erase(it);
            return;
        }
    }
}

void ManualTimers::run_deferred(unsigned limit) {
    while (!deferred_.empty() && limit-- > 0) {
        Callback cb = std::move(deferred_.front());
        deferred_.erase(deferred_.begin());
        cb();
    }
}

void ManualTimers::advance(int64_t ns) {
    run_deferred();
    int64_t target = now_ + (ns > 0 ? ns : 0);
    while (!timers_.empty() && timers_.begin()->first <= target) {
        auto it = timers_.begin();
        now_ = it->first;
        Callback cb = std::move(it->second.second);
        timers_.erase(it);
        cb();
        run_deferred();
    }
    now_ = target;
}

}  // namespace mpq::devices
