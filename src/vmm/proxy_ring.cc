#include "vmm/proxy_ring.h"

#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "util/log.h"

namespace mpq::vmm {

namespace {

constexpr unsigned kRingEntries = 16;
// user_data: the low byte says what completed; irq polls carry their slot above it.
constexpr uint64_t kTagSend = 1;
constexpr uint64_t kTagRecv = 2;
constexpr uint64_t kTagCancel = 3;
constexpr uint64_t kTagIrq = 4;
constexpr uint64_t irq_tag(size_t slot) { return (uint64_t{slot} << 8) | kTagIrq; }

constexpr int kCancelWaitRounds = 10;  // x 100 ms
constexpr unsigned kMaxWakeups = 1024;  // irq completions while one reply is awaited

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000 + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t now_ms() { return now_ns() / 1000000; }

}  // namespace

std::unique_ptr<ProxyRing> ProxyRing::create(int sock) {
    std::unique_ptr<ProxyRing> r(new ProxyRing());
    r->sock_ = sock;
    // Deferred task work: completions are only processed inside our own
    // io_uring_enter, so the socket's wake-ups do not interrupt the VMM at
    // other times; single issuer is what that mode requires (the VMM's
    // devices run on one thread).
    const unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, 0};
    int err = 0;
    for (unsigned flags : tries) {
        io_uring_params p{};
        p.flags = flags;
        err = io_uring_queue_init_params(kRingEntries, &r->ring_, &p);
        if (err == 0) {
            if (!(p.features & IORING_FEAT_EXT_ARG)) {
                // No timeout on the wait in the same syscall: not worth it.
                io_uring_queue_exit(&r->ring_);
                return nullptr;
            }
            r->ring_ok_ = true;
            return r;
        }
    }
    log::debug("proxy: no io_uring ({}); using sendmsg/recvmsg", std::strerror(-err));
    return nullptr;
}

ProxyRing::~ProxyRing() {
    if (ring_ok_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* ProxyRing::sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    if (!s) {
        io_uring_submit(&ring_);
        s = io_uring_get_sqe(&ring_);
    }
    return s;
}

int ProxyRing::watch_irq(int fd) {
    if (!ring_ok_ || stuck_) return -1;
    size_t slot = irqs_.size();
    for (size_t i = 0; i < irqs_.size(); ++i) {
        if (irqs_[i].fd < 0) {
            slot = i;
            break;
        }
    }
    if (slot == irqs_.size()) irqs_.push_back({});
    irqs_[slot] = IrqSlot{fd, false, false};
    return static_cast<int>(slot);  // armed with the next exchange
}

void ProxyRing::unwatch_irq(int slot) {
    if (slot < 0 || static_cast<size_t>(slot) >= irqs_.size()) return;
    IrqSlot& s = irqs_[static_cast<size_t>(slot)];
    if (s.armed && ring_ok_) {
        if (io_uring_sqe* q = sqe()) {
            io_uring_prep_poll_remove(q, irq_tag(static_cast<size_t>(slot)));
            io_uring_sqe_set_data64(q, kTagCancel);
            io_uring_submit(&ring_);
        }
    }
    s = IrqSlot{};
}

bool ProxyRing::irq_signalled(int slot) {
    if (slot < 0 || static_cast<size_t>(slot) >= irqs_.size()) return false;
    IrqSlot& s = irqs_[static_cast<size_t>(slot)];
    bool v = s.signalled;
    s.signalled = false;
    return v;
}

void ProxyRing::arm_irqs() {
    for (size_t i = 0; i < irqs_.size(); ++i) {
        IrqSlot& s = irqs_[i];
        if (s.fd < 0 || s.armed) continue;
        io_uring_sqe* q = sqe();
        if (!q) return;
        io_uring_prep_poll_multishot(q, s.fd, POLLIN);
        io_uring_sqe_set_data64(q, irq_tag(i));
        s.armed = true;
    }
}

void ProxyRing::reap() {
    unsigned head, n = 0;
    io_uring_cqe* c;
    io_uring_for_each_cqe(&ring_, head, c) {
        ++n;
        uint64_t ud = c->user_data;
        switch (ud & 0xff) {
        case kTagSend:  // only failures complete (CQE_SKIP_SUCCESS)
            send_res_ = c->res;
            break;
        case kTagRecv:
            recv_inflight_ = false;
            recv_res_ = c->res;
            break;
        case kTagIrq: {
            size_t slot = ud >> 8;
            if (slot >= irqs_.size() || irqs_[slot].fd < 0) break;  // unwatched since
            if (c->res > 0) irqs_[slot].signalled = true;
            if (!(c->flags & IORING_CQE_F_MORE)) irqs_[slot].armed = false;  // re-armed next time
            break;
        }
        default:
            break;
        }
    }
    io_uring_cq_advance(&ring_, n);
}

void ProxyRing::cancel_inflight() {
    if (!recv_inflight_) return;
    for (uint64_t tag : {kTagSend, kTagRecv}) {
        io_uring_sqe* q = sqe();
        if (!q) break;
        io_uring_prep_cancel64(q, tag, 0);
        io_uring_sqe_set_data64(q, kTagCancel);
    }
    for (int i = 0; i < kCancelWaitRounds && recv_inflight_; ++i) {
        __kernel_timespec ts{0, 100 * 1000 * 1000};
        io_uring_cqe* c = nullptr;
        (void)io_uring_submit_and_wait_timeout(&ring_, &c, 1, &ts, nullptr);
        reap();
    }
    if (recv_inflight_) {
        stuck_ = true;
        log::error("proxy: a cancelled receive never completed; its ring is abandoned");
    }
}

void ProxyRing::poll_for_reply(uint64_t start_ns, uint64_t window_ns) {
    // With deferred task work a reply that reached the socket becomes a
    // completion only inside io_uring_enter: each round is one enter that
    // does not wait, then a look at the completion queue.
    if (io_uring_submit(&ring_) < 0) return;
    reap();
    while (recv_inflight_ && now_ns() - start_ns < window_ns) {
        if (io_uring_get_events(&ring_) < 0) return;
        reap();
    }
}

Result<ProxyRing::Reply> ProxyRing::exchange(proto::Header hdr, std::span<const uint8_t> payload,
                                             uint32_t timeout_ms, PollPolicy& policy) {
    const uint64_t start_ns = now_ns();
    if (!ring_ok_ || stuck_) return fail("proxy ring unusable");
    if (payload.size() > proto::kMaxPayload) return fail("payload of {} bytes", payload.size());
    arm_irqs();
    std::memcpy(tx_.data(), &hdr, sizeof hdr);
    if (!payload.empty()) std::memcpy(tx_.data() + sizeof hdr, payload.data(), payload.size());
    io_uring_sqe* s = sqe();
    io_uring_sqe* r = s ? sqe() : nullptr;
    if (!s || !r) return fail("proxy ring full");
    // The reply can only come after the whole request went out: the receive
    // is linked behind the send, and a failed send cancels it.
    io_uring_prep_send(s, sock_, tx_.data(), sizeof hdr + payload.size(), MSG_NOSIGNAL | MSG_WAITALL);
    s->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(s, kTagSend);
    riov_ = {rx_.data(), rx_.size()};
    rmsg_ = msghdr{};
    rmsg_.msg_iov = &riov_;
    rmsg_.msg_iovlen = 1;  // no control buffer: fds offered show as MSG_CTRUNC
    io_uring_prep_recvmsg(r, sock_, &rmsg_, 0);
    io_uring_sqe_set_data64(r, kTagRecv);
    recv_inflight_ = true;
    send_res_ = 0;
    recv_res_ = 0;

    if (uint64_t w = policy.poll_ns()) poll_for_reply(start_ns, w);
    uint32_t wait_ms = timeout_ms ? timeout_ms : 1;
    // From the start: waits cut short by irq completions do not extend it.
    const uint64_t deadline = start_ns / 1000000 + wait_ms;
    for (unsigned round = 0; recv_inflight_; ++round) {
        __kernel_timespec ts{static_cast<long long>(wait_ms / 1000),
                             static_cast<long long>(wait_ms % 1000) * 1000000};
        io_uring_cqe* c = nullptr;
        int ret = io_uring_submit_and_wait_timeout(&ring_, &c, 1, &ts, nullptr);
        reap();
        if (!recv_inflight_) break;
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            cancel_inflight();
            return fail_errno(-ret, "io_uring_enter: {}", std::strerror(-ret));
        }
        uint64_t now = now_ms();
        if (ret == -ETIME || now >= deadline || round >= kMaxWakeups) {
            cancel_inflight();
            return fail_errno(ETIMEDOUT, "timeout");
        }
        wait_ms = static_cast<uint32_t>(deadline - now);
    }
    policy.record(now_ns() - start_ns);
    if (send_res_ < 0) return fail_errno(-send_res_, "send: {}", std::strerror(-send_res_));
    if (recv_res_ < 0) return fail_errno(-recv_res_, "receive: {}", std::strerror(-recv_res_));
    return Reply{static_cast<size_t>(recv_res_), (rmsg_.msg_flags & MSG_CTRUNC) != 0};
}

}  // namespace mpq::vmm
