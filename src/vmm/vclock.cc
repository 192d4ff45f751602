#include "vmm/vclock.h"

namespace mpq::vmm {

VirtualClock::TimerId VirtualClock::add_timer(int64_t deadline_ns, Callback cb) {
    TimerId id = next_id_++;
    timers_.emplace(deadline_ns, std::make_pair(id, std::move(cb)));
    return id;
}

void VirtualClock::cancel(TimerId id) {
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
        if (it->second.first == id) {
            timers_.erase(it);
            return;
        }
    }
}

std::optional<int64_t> VirtualClock::next_deadline() const {
    if (timers_.empty()) return std::nullopt;
    return timers_.begin()->first;
}

void VirtualClock::advance_to(int64_t target) {
    // A callback may add timers; those that fall due before `target` fire in
    // the same step, each seeing now() == its own deadline.
    while (!timers_.empty() && timers_.begin()->first <= target) {
        auto it = timers_.begin();
        if (it->first > now_) now_ = it->first;
        Callback cb = std::move(it->second.second);
        timers_.erase(it);
        cb();
    }
    if (target > now_) now_ = target;
}

int64_t VirtualClock::step(std::optional<int64_t> ns) {
    int64_t target;
    if (ns) {
        if (*ns < 0) return now_;
        target = (*ns > INT64_MAX - now_) ? INT64_MAX : now_ + *ns;
    } else {
        auto d = next_deadline();
        if (!d) return now_;
        target = *d < now_ ? now_ : *d;
    }
    advance_to(target);
    return now_;
}

int64_t VirtualClock::set(int64_t ns) {
    if (ns > now_) advance_to(ns);
    return now_;
}

}  // namespace mpq::vmm
