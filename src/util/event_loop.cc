#include "util/event_loop.h"

#include <liburing.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "util/log.h"
#include "util/uring_restrict.h"

namespace mpq {
namespace {

constexpr int kMaxEvents = 64;
constexpr int kDeferredBatches = 4;

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

// Ring user data: 0 and 1 are ours, operations count up from kFirstOp.
constexpr uint64_t kEpollTag = 0;
constexpr uint64_t kCancelTag = 1;
constexpr uint64_t kFirstOp = 2;
constexpr unsigned kRingEntries = 64;
constexpr int kTeardownRounds = 10;  // x 100 ms for cancelled operations to complete

}  // namespace

struct EventLoop::Ring {
    io_uring ring{};
    bool epoll_armed = false;
    bool stuck = false;  // an operation never completed: the kernel may still use its memory
    uint64_t next_id = kFirstOp;
    std::unordered_map<uint64_t, RingDone> ops;
    struct Completion {
        uint64_t id;
        int res;
    };
    std::vector<Completion> batch;  // reused every round
    // Sends whose success posts no completion (id N, with their receive
    // linked behind as N + 1): once the receive completed, a failure of the
    // send would have completed before it, so its handler can go.
    std::vector<uint64_t> skip_ok;

    void forget_skipped() {
        size_t keep = 0;
        for (uint64_t id : skip_ok) {
            if (ops.count(id + 1) == 0) ops.erase(id);
            else skip_ok[keep++] = id;
        }
        skip_ok.resize(keep);
    }

    io_uring_sqe* sqe() {
        io_uring_sqe* q = io_uring_get_sqe(&ring);
        if (!q && io_uring_submit(&ring) >= 0) q = io_uring_get_sqe(&ring);
        return q;
    }
    // Collects what completed; false if nothing did.
    bool reap(bool& epoll_ready) {
        unsigned head, n = 0;
        io_uring_cqe* c;
        io_uring_for_each_cqe(&ring, head, c) {
            ++n;
            if (c->user_data == kEpollTag) {
                epoll_armed = false;
                epoll_ready = true;
            } else if (c->user_data != kCancelTag) {
                batch.push_back({c->user_data, c->res});
            }
        }
        io_uring_cq_advance(&ring, n);
        return n > 0;
    }
    void cancel_all() {
        if (io_uring_sqe* q = sqe()) {
            io_uring_prep_cancel64(q, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(q, kCancelTag);
        }
    }
};

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

EventLoop::~EventLoop() {
    if (!ring_) return;
    Ring& r = *ring_;
    // The kernel may write into buffers the pending operations' handlers
    // keep alive: those handlers go only once their operation completed.
    r.cancel_all();
    bool ep = false;
    for (int i = 0; i < kTeardownRounds && (!r.ops.empty() || r.epoll_armed); ++i) {
        __kernel_timespec ts{0, 100 * 1000 * 1000};
        io_uring_cqe* c = nullptr;
        (void)io_uring_submit_and_wait_timeout(&r.ring, &c, 1, &ts, nullptr);
        r.reap(ep);
        for (auto& d : r.batch) r.ops.erase(d.id);
        r.batch.clear();
        r.forget_skipped();
    }
    if (!r.ops.empty()) {
        log::error("event loop: {} ring operations never completed; their memory is abandoned", r.ops.size());
        (void)ring_.release();
        return;
    }
    io_uring_queue_exit(&r.ring);
}

bool EventLoop::enable_ring() {
    if (ring_) return true;
    auto r = std::make_unique<Ring>();
    // Created disabled so that it is restricted before its first use: the
    // loop's ring can only receive, send, poll and cancel, whatever a bug
    // in this process would like to submit (the kernel does not run io_uring
    // operations past seccomp). Deferred task work: completions are produced
    // inside our own io_uring_enter, so socket wake-ups do not interrupt the
    // loop thread at other times.
    const unsigned tries[] = {IORING_SETUP_R_DISABLED | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                              IORING_SETUP_R_DISABLED};
    int err = -ENOSYS;
    for (unsigned flags : tries) {
        io_uring_params p{};
        p.flags = flags;
        err = io_uring_queue_init_params(kRingEntries, &r->ring, &p);
        if (err != 0) continue;
        if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
            io_uring_queue_exit(&r->ring);
            log::debug("event loop: io_uring lacks EXT_ARG/NODROP; staying on epoll");
            return false;
        }
        break;
    }
    if (err != 0) {
        log::debug("event loop: no io_uring ({}); staying on epoll", std::strerror(-err));
        return false;
    }
    const uint8_t ops[] = {IORING_OP_RECVMSG, IORING_OP_SEND, IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL};
    if (auto st = restrict_uring(r->ring.ring_fd, ops, IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS); !st.ok()) {
        log::debug("event loop: {}; staying on epoll", st.error().message);
        io_uring_queue_exit(&r->ring);
        return false;
    }
    ring_ = std::move(r);
    return true;
}

bool EventLoop::ring_send_recvmsg(int fd, std::span<const uint8_t> reply, msghdr* msg, RingDone send_failed,
                                  RingDone received, int recv_flags) {
    if (!ring_ || fd < 0) return false;
    Ring& r = *ring_;
    if (io_uring_sq_space_left(&r.ring) < 2) (void)io_uring_submit(&r.ring);
    if (io_uring_sq_space_left(&r.ring) < 2) return false;
    if (!reply.empty()) {
        // MSG_WAITALL: the kernel retries a short send itself, so a send that
        // completes completes whole; a successful one posts no completion
        // (one less wake-up per request), and the receive linked behind it
        // is cancelled if it fails.
        io_uring_sqe* q = io_uring_get_sqe(&r.ring);
        uint64_t id = r.next_id++;
        io_uring_prep_send(q, fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_WAITALL);
        q->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(q, id);
        r.ops.emplace(id, std::move(send_failed));
        r.skip_ok.push_back(id);
    }
    io_uring_sqe* q = io_uring_get_sqe(&r.ring);
    uint64_t id = r.next_id++;
    io_uring_prep_recvmsg(q, fd, msg, MSG_CMSG_CLOEXEC | recv_flags);
    io_uring_sqe_set_data64(q, id);
    r.ops.emplace(id, std::move(received));
    return true;
}

void EventLoop::ring_submit() {
    if (ring_) (void)io_uring_submit(&ring_->ring);
}

void EventLoop::ring_cancel(int fd) {
    if (!ring_ || fd < 0) return;
    if (io_uring_sqe* q = ring_->sqe()) {
        io_uring_prep_cancel_fd(q, fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(q, kCancelTag);
        // Now, while `fd` still names the socket: callers close it next.
        (void)io_uring_submit(&ring_->ring);
    }
}

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

bool EventLoop::run_deferred_now() {
    {
        std::lock_guard lk(posted_mu_);
        if (deferred_.empty() && posted_.empty()) return false;
    }
    run_deferred();
    return true;
}

void EventLoop::run_once(int timeout_ms) {
    int t = next_timeout_ms();
    if (timeout_ms >= 0 && (t < 0 || timeout_ms < t)) t = timeout_ms;
    {
        std::lock_guard lk(posted_mu_);
        if (!deferred_.empty() || !posted_.empty()) t = 0;
    }
    if (ring_) wait_ring(t);
    else dispatch_epoll(t);
    if (ring_ && io_uring_sq_ready(&ring_->ring) > 0) {
        // What the handlers queued (a reply) goes out before timers and
        // deferred work can delay it; otherwise the next wait submits it.
        bool busy = !deferred_.empty() || next_timeout_ms() == 0;
        if (!busy) {
            std::lock_guard lk(posted_mu_);
            busy = !posted_.empty();
        }
        if (busy) {
            // The replies leave now, so the round ends here for its hooks;
            // timers and deferred work start another.
            leave_round();
            (void)io_uring_submit(&ring_->ring);
        }
    }
    enter_round();
    fire_timers();
    // Work that deferred more work (a completion resuming SCRIPTS that then
    // defer their next step) runs on at once for a few batches instead of
    // paying a zero-timeout wait per batch; the bound keeps fd handlers from
    // waiting behind a callback that keeps deferring itself.
    for (int batch = 0; batch < kDeferredBatches; ++batch) {
        run_deferred();
        if (deferred_.empty()) break;
    }
    leave_round();
}

void EventLoop::set_round_hooks(Callback begin, Callback end) {
    round_begin_ = std::move(begin);
    round_end_ = std::move(end);
}

void EventLoop::enter_round() {
    if (in_round_) return;
    in_round_ = true;
    if (round_begin_) round_begin_();
}

void EventLoop::leave_round() {
    if (!in_round_) return;
    in_round_ = false;
    if (round_end_) round_end_();
}

void EventLoop::dispatch_epoll(int timeout_ms) {
    epoll_event evs[kMaxEvents];
    int n = ::epoll_wait(epfd_.get(), evs, kMaxEvents, timeout_ms);
    if (n < 0 && errno != EINTR) log::error("event loop: epoll_wait: {}", std::strerror(errno));
    enter_round();
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
}

void EventLoop::wait_ring(int timeout_ms) {
    Ring& r = *ring_;
    if (!r.epoll_armed) {
        // One-shot, re-armed every round: arming checks the current state, so
        // an fd a handler left readable (level-triggered epoll) fires again.
        if (io_uring_sqe* q = r.sqe()) {
            io_uring_prep_poll_add(q, epfd_.get(), POLLIN);
            io_uring_sqe_set_data64(q, kEpollTag);
            r.epoll_armed = true;
        }
    }
    __kernel_timespec ts{timeout_ms / 1000, static_cast<long long>(timeout_ms % 1000) * 1000000};
    io_uring_cqe* c = nullptr;
    int ret = io_uring_submit_and_wait_timeout(&r.ring, &c, 1, timeout_ms >= 0 ? &ts : nullptr, nullptr);
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
        log::error("event loop: io_uring_enter: {}", std::strerror(-ret));
    enter_round();
    bool epoll_ready = false;
    r.batch.clear();
    r.reap(epoll_ready);
    // epoll first: it runs posted work before anything else (see dispatch_epoll).
    if (epoll_ready) dispatch_epoll(0);
    for (size_t i = 0; i < r.batch.size(); ++i) {
        uint64_t id = r.batch[i].id;
        auto it = r.ops.find(id);
        if (it == r.ops.end()) continue;
        RingDone done = std::move(it->second);
        r.ops.erase(it);
        done(r.batch[i].res);
        // A failed send whose success would have posted nothing: the kernel
        // fails the receive linked behind it without a completion of its
        // own (the link's completions are skipped with the head's), and that
        // receive never started. Its handler learns it here.
        if (std::find(r.skip_ok.begin(), r.skip_ok.end(), id) != r.skip_ok.end()) {
            if (auto rit = r.ops.find(id + 1); rit != r.ops.end()) {
                RingDone rdone = std::move(rit->second);
                r.ops.erase(rit);
                rdone(-ECANCELED);
            }
        }
    }
    r.batch.clear();
    r.forget_skipped();
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
