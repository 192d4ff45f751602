#include "util/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "util/log.h"

namespace mpq {
namespace {

constexpr int kMaxEvents = 64;

// epoll's user data carries the fd (low 32 bits) and the registration
// generation (high 32 bits).
uint64_t pack(int fd, uint64_t gen) {
    return (gen << 32) | static_cast<uint32_t>(fd);
}

uint32_t to_epoll(FdEvents ev) {
    uint32_t e = 0;
    if (static_cast<uint32_t>(ev) & static_cast<uint32_t>(FdEvents::Read)) e |= EPOLLIN;
    if (static_cast<uint32_t>(ev) & static_cast<uint32_t>(FdEvents::Write)) e |= EPOLLOUT;
    return e;
}

}  // namespace

EventLoop::EventLoop()
    : epfd_(::epoll_create1(EPOLL_CLOEXEC)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!epfd_ || !wake_fd_) {
        log::error("event loop: cannot create epoll/eventfd: {}", std::strerror(errno));
        std::abort();
    }
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = pack(wake_fd_.get(), 0);
    if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &e) != 0) {
        log::error("event loop: cannot watch the wake-up eventfd: {}", std::strerror(errno));
        std::abort();
    }
}

EventLoop::~EventLoop() = default;

bool EventLoop::add_fd(int fd, FdEvents ev, FdHandler handler) {
    if (fd < 0 || fd == wake_fd_.get()) return false;
    auto entry = std::make_shared<FdEntry>(FdEntry{std::move(handler), next_generation_++ & 0xffffffffu});
    if (entry->generation == 0) entry->generation = next_generation_++ & 0xffffffffu;
    epoll_event e{};
    e.events = to_epoll(ev);
    e.data.u64 = pack(fd, entry->generation);
    auto it = handlers_.find(fd);
    int op = it == handlers_.end() ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (::epoll_ctl(epfd_.get(), op, fd, &e) != 0) return false;
    handlers_[fd] = std::move(entry);
    return true;
}

bool EventLoop::modify_fd(int fd, FdEvents ev) {
    auto it = handlers_.find(fd);
    if (it == handlers_.end()) return false;
    epoll_event e{};
    e.events = to_epoll(ev);
    e.data.u64 = pack(fd, it->second->generation);
    return ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &e) == 0;
}

void EventLoop::remove_fd(int fd) {
    auto it = handlers_.find(fd);
    if (it == handlers_.end()) return;
    // The fd may already be closed (then epoll forgot it by itself).
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
    handlers_.erase(it);
}

EventLoop::TimerId EventLoop::add_timer(uint64_t delay_ns, Callback cb) {
    uint64_t now = now_ns();
    uint64_t when = delay_ns > UINT64_MAX - now ? UINT64_MAX : now + delay_ns;
    TimerId id = next_timer_++;
    timers_.emplace(id, std::make_pair(when, std::move(cb)));
    timer_order_.emplace(when, id);
    return id;
}

void EventLoop::cancel_timer(TimerId id) {
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    auto range = timer_order_.equal_range(it->second.first);
    for (auto o = range.first; o != range.second; ++o) {
        if (o->second == id) {
            timer_order_.erase(o);
            break;
        }
    }
    timers_.erase(it);
}

void EventLoop::defer(Callback cb) { deferred_.push_back(std::move(cb)); }

void EventLoop::post(Callback cb) {
    {
        std::lock_guard lk(posted_mu_);
        posted_.push_back(std::move(cb));
    }
    uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the loop wakes anyway.
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
}

uint64_t EventLoop::now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int EventLoop::next_timeout_ms() const {
    if (timer_order_.empty()) return -1;
    uint64_t when = timer_order_.begin()->first;
    uint64_t now = now_ns();
    if (when <= now) return 0;
    uint64_t ms = (when - now + 999999) / 1000000;  // round up: never wake early and spin
    return ms > 1000000000ull ? 1000000000 : static_cast<int>(ms);
}

void EventLoop::fire_timers() {
    uint64_t now = now_ns();
    // Only timers due now: a callback that re-arms with delay 0 runs next round.
    while (!timer_order_.empty() && timer_order_.begin()->first <= now) {
        TimerId id = timer_order_.begin()->second;
        timer_order_.erase(timer_order_.begin());
        auto it = timers_.find(id);
        if (it == timers_.end()) continue;
        Callback cb = std::move(it->second.second);
        timers_.erase(it);
        cb();
    }
}

void EventLoop::run_deferred() {
    {
        std::lock_guard lk(posted_mu_);
        if (!posted_.empty()) {
            for (auto& cb : posted_) deferred_.push_back(std::move(cb));
            posted_.clear();
        }
    }
    // Callbacks deferred while these run wait for the next round, so a
    // callback that keeps deferring itself cannot starve fd handlers.
    std::vector<Callback> batch;
    batch.swap(deferred_);
    for (auto& cb : batch) cb();
}

void EventLoop::run_once(int timeout_ms) {
    int t = next_timeout_ms();
    if (timeout_ms >= 0 && (t < 0 || timeout_ms < t)) t = timeout_ms;
    {
        std::lock_guard lk(posted_mu_);
        if (!deferred_.empty() || !posted_.empty()) t = 0;
    }
    epoll_event evs[kMaxEvents];
    int n = ::epoll_wait(epfd_.get(), evs, kMaxEvents, t);
    if (n < 0 && errno != EINTR) log::error("event loop: epoll_wait: {}", std::strerror(errno));
    // Work posted from other threads (block completions) runs before the fd
    // handlers of the same round: a status poll that arrives together with
    // a completion then already sees its effect.
    for (int i = 0; i < n; i++) {
        int fd = static_cast<int>(static_cast<uint32_t>(evs[i].data.u64));
        if (fd == wake_fd_.get() && (evs[i].data.u64 >> 32) == 0) {
            uint64_t v;
            [[maybe_unused]] ssize_t r = ::read(wake_fd_.get(), &v, sizeof v);
            run_deferred();
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        int fd = static_cast<int>(static_cast<uint32_t>(evs[i].data.u64));
        uint64_t gen = evs[i].data.u64 >> 32;
        if (fd == wake_fd_.get() && gen == 0) continue;
        auto it = handlers_.find(fd);
        // Removed, or re-registered under the same number, by an earlier handler.
        if (it == handlers_.end() || it->second->generation != gen) continue;
        std::shared_ptr<FdEntry> keep = it->second;
        keep->fn(evs[i].events);
    }
    fire_timers();
    run_deferred();
}

int EventLoop::run() {
    while (!stopped_) run_once(-1);
    return exit_code_;
}

void EventLoop::stop(int exit_code) {
    exit_code_ = exit_code;
    stopped_ = true;
}

}  // namespace mpq
