// Single-threaded epoll event loop: fd handlers, one-shot timers and deferred
// calls. Everything a device does runs on this thread; other threads (block
// I/O workers) hand results back through post(), which is thread-safe.
//
// Ring mode (enable_ring()): the loop waits in io_uring_enter instead of
// epoll_wait, with the epoll fd itself polled in the ring, so fd handlers work
// as before; in addition a caller can receive from and send on a socket
// through the ring. A server that answers each request that way costs one
// syscall per request: the enter that submits the previous reply also waits
// for the next request (instead of epoll_wait + recvmsg + sendmsg).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "util/unique_fd.h"
#include "util/work_queue.h"

struct msghdr;
struct io_uring;

namespace mpq {

enum class FdEvents : uint32_t { Read = 1, Write = 2, ReadWrite = 3 };

// The production WorkQueue. Final, so calls through an EventLoop& bind
// directly; device code that only needs deferred work and timers takes a
// WorkQueue& and runs on a ManualWorkQueue as well.
class EventLoop final : public WorkQueue {
public:
    using FdHandler = std::function<void(uint32_t epoll_events)>;

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
    TimerId add_timer(uint64_t delay_ns, Callback cb) override;
    void cancel_timer(TimerId id) override;

    // Runs `cb` on the loop thread after the current handler returns.
    void defer(Callback cb) override;
    // Thread-safe version of defer(): wakes the loop.
    void post(Callback cb);

    // Ring mode; false (and the loop stays on epoll) where io_uring or the
    // features it needs are missing. Call before any ring_* and before a
    // sandbox closes io_uring_setup.
    bool enable_ring();
    bool ring_enabled() const { return ring_ != nullptr; }
    // A receive on a socket through the ring, after sending `reply` (if not
    // empty) on it: the send goes first and the receive starts only once
    // all of it went out (so when `received` runs, `reply`'s memory is free
    // again). `received` gets the recvmsg result (bytes, 0 at EOF, or
    // -errno; -ECANCELED after ring_cancel or a failed send); `send_failed`
    // runs only if the send fails. Both run on the loop thread. Everything
    // the kernel reads or writes (msg and what it points to, reply) must
    // stay valid until `received` has run: keep it alive in its captures.
    // Submitted with the loop's next wait, or earlier if the loop has other
    // work to run first. False if the ring is off or full.
    // `recv_flags` are added to the receive's (MSG_PEEK: look, leave the
    // bytes in the socket).
    using RingDone = std::function<void(int res)>;
    bool ring_send_recvmsg(int fd, std::span<const uint8_t> reply, msghdr* msg, RingDone send_failed,
                           RingDone received, int recv_flags = 0);
    // Submits what is queued in the ring now instead of with the next wait
    // (a send that must leave before anything else can happen).
    void ring_submit();
    // Cancels every ring operation on `fd` (call it before closing `fd`);
    // their handlers still run, with -ECANCELED.
    void ring_cancel(int fd);

    // Called once per round: `begin` when the wait returns, before any
    // handler runs; `end` after the round's last callback, before the next
    // wait (which, in ring mode, is when queued replies are submitted).
    // Everything a handler changes therefore happens between the two. Empty
    // callbacks remove the hooks.
    void set_round_hooks(Callback begin, Callback end);

    // Runs the callbacks deferred (and posted) so far, one batch, from
    // inside a round (its end hook); false if there were none. For an owner
    // that must see a round's follow-up work before the round ends.
    bool run_deferred_now();

    // Runs until stop(). Returns the exit code given to stop().
    int run();
    // Runs one round: waits up to `timeout_ms` (-1 forever) for events.
    void run_once(int timeout_ms);
    void stop(int exit_code = 0);
    bool stopped() const { return stopped_; }

    static uint64_t now_ns();

private:
    struct Ring;
    void run_deferred();
    void wait_epoll(int timeout_ms);
    void wait_ring(int timeout_ms);
    void dispatch_epoll(int timeout_ms);
    int next_timeout_ms() const;
    void fire_timers();
    void enter_round();
    void leave_round();

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
    std::unique_ptr<Ring> ring_;
    Callback round_begin_, round_end_;
    bool in_round_ = false;
};

}  // namespace mpq
