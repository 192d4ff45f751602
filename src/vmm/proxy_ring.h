// The proxy's fast path for one socket: an io_uring that sends a request and
// receives its reply with a single io_uring_enter (instead of sendmsg +
// recvmsg), and that also polls the irq eventfds of the devices on the
// socket. The remote writes an irq eventfd before it sends the RET of the
// access that raised the interrupt, so the poll completion is in the ring by
// the time the reply is: "did this access raise INTx" is a look at the
// completion queue, not a syscall per access.
//
// Buffers the kernel writes into (the reply) belong to the ring, never to the
// caller: a request that cannot be cancelled (a kernel that does not answer
// the cancel within a second) leaves the ring to be leaked, not freed under
// the kernel (ProxyRing::stuck()).
#pragma once

#include <liburing.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "proto/wire.h"
#include "vmm/reply_poll.h"
#include "util/result.h"

namespace mpq::vmm {

class ProxyRing {
public:
    // nullptr when io_uring is not available (old kernel, seccomp, limits):
    // the caller keeps using plain sendmsg/recvmsg.
    static std::unique_ptr<ProxyRing> create(int sock);
    ~ProxyRing();
    ProxyRing(const ProxyRing&) = delete;
    ProxyRing& operator=(const ProxyRing&) = delete;

    // Polls `fd` (an irq eventfd) from now on; returns the slot that
    // irq_signalled() takes, or -1 if the ring could not take it.
    int watch_irq(int fd);
    void unwatch_irq(int slot);
    // The eventfd of `slot` was written since the last call (reads no fd:
    // the caller drains the eventfd itself when this says so).
    bool irq_signalled(int slot);

    struct Reply {
        size_t bytes = 0;     // 0: the peer closed the socket
        bool ctrunc = false;  // the peer attached fds (the kernel closed them)
    };
    // Sends header + payload and waits for the first bytes of the reply
    // (at most kRxSize), all within `timeout_ms`: polling the ring first
    // when `policy` says so (reply_poll.h), then sleeping in io_uring_enter.
    // On error or timeout the request is cancelled before returning.
    Result<Reply> exchange(proto::Header hdr, std::span<const uint8_t> payload, uint32_t timeout_ms,
                           PollPolicy& policy);
    std::span<const uint8_t> received(size_t n) const { return std::span(rx_.data(), n); }

    // A cancelled request never completed: the ring must not be freed.
    bool stuck() const { return stuck_; }

    static constexpr size_t kRxSize = 256;  // a reply is 16 or 24 bytes; more is out of protocol

private:
    struct IrqSlot {
        int fd = -1;
        bool armed = false;
        bool signalled = false;
    };
    ProxyRing() = default;
    io_uring_sqe* sqe();
    void arm_irqs();
    void reap();
    void cancel_inflight();
    void poll_for_reply(uint64_t start_ns, uint64_t window_ns);

    io_uring ring_{};
    bool ring_ok_ = false;
    int sock_ = -1;
    bool recv_inflight_ = false;
    int send_res_ = 0, recv_res_ = 0;
    bool stuck_ = false;
    std::vector<IrqSlot> irqs_;
    alignas(8) std::array<uint8_t, sizeof(proto::Header) + proto::kMaxPayload> tx_{};
    alignas(8) std::array<uint8_t, kRxSize> rx_{};
    iovec riov_{};
    msghdr rmsg_{};
};

}  // namespace mpq::vmm
