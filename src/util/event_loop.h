// Single-threaded epoll event loop: fd handlers, one-shot timers and deferred
// calls. Everything a device does runs on this thread; other threads (block
// I/O workers) hand results back through post(), which is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "util/unique_fd.h"

namespace mpq {

enum class FdEvents : uint32_t { Read = 1, Write = 2, ReadWrite = 3 };

class EventLoop {
public:
    using FdHandler = std::function<void(uint32_t epoll_events)>;
    using Callback = std::function<void()>;
    using TimerId = uint64_t;

    EventLoop();
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // The handler gets the raw epoll event mask (EPOLLIN, EPOLLHUP, ...).
    // Returns false if epoll refused the fd.
    bool add_fd(int fd, FdEvents ev, FdHandler handler);
    bool modify_fd(int fd, FdEvents ev);
    void remove_fd(int fd);

    // One-shot timer on CLOCK_MONOTONIC, `delay_ns` from now.
    TimerId add_timer(uint64_t delay_ns, Callback cb);
    void cancel_timer(TimerId id);

    // Runs `cb` on the loop thread after the current handler returns.
    void defer(Callback cb);
    // Thread-safe version of defer(): wakes the loop.
    void post(Callback cb);

    // Runs until stop(). Returns the exit code given to stop().
    int run();
    // Runs one round: waits up to `timeout_ms` (-1 forever) for events.
    void run_once(int timeout_ms);
    void stop(int exit_code = 0);
    bool stopped() const { return stopped_; }

    static uint64_t now_ns();

private:
    void run_deferred();
    int next_timeout_ms() const;
    void fire_timers();

    // Handlers are shared so that one removed (or replaced) while it runs
    // stays alive until it returns; `generation` tells a stale epoll event
    // for a recycled fd number apart from a fresh registration.
    struct FdEntry {
        FdHandler fn;
        uint64_t generation;
    };
    UniqueFd epfd_;
    UniqueFd wake_fd_;
    std::unordered_map<int, std::shared_ptr<FdEntry>> handlers_;
    uint64_t next_generation_ = 1;
    std::multimap<uint64_t, TimerId> timer_order_;
    std::unordered_map<TimerId, std::pair<uint64_t, Callback>> timers_;
    TimerId next_timer_ = 1;
    std::vector<Callback> deferred_;
    std::mutex posted_mu_;
    std::vector<Callback> posted_;
    bool stopped_ = false;
    int exit_code_ = 0;
};

}  // namespace mpq
