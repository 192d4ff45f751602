// QEMU_CLOCK_VIRTUAL for a machine without a vCPU: it stands still until
// qtest's clock_step/clock_set moves it, then fires the timers that are due,
// in deadline order. VMM-side timers that model guest time hang off it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>

namespace mpq::vmm {

class VirtualClock {
public:
    using TimerId = uint64_t;
    using Callback = std::function<void()>;

    int64_t now() const { return now_; }
    TimerId add_timer(int64_t deadline_ns, Callback cb);
    void cancel(TimerId id);
    std::optional<int64_t> next_deadline() const;
    // Advances by `ns`, or to the next deadline when absent (no timer: stays).
    // Negative steps are refused (time never runs backwards). Returns now().
    int64_t step(std::optional<int64_t> ns);
    // Moves to `ns` if it is in the future. Returns now().
    int64_t set(int64_t ns);

private:
    void advance_to(int64_t target);
    int64_t now_ = 0;
    TimerId next_id_ = 1;
    std::multimap<int64_t, std::pair<TimerId, Callback>> timers_;
};

}  // namespace mpq::vmm
