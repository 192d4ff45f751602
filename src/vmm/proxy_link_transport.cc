#include "vmm/proxy_link_transport.h"

#include <cerrno>

#include "vmm/proxy_ring.h"
#include "vmm/reply_poll.h"

namespace mpq::vmm {

using proto::Cmd;

namespace {

class SyscallLink : public LinkTransport {
public:
    SyscallLink(UniqueFd sock, uint32_t timeout_ms) : ch_(std::move(sock)) {
        ch_.set_send_timeout_ms(static_cast<int>(timeout_ms));
    }

    Status exchange(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                    proto::Frame& reply) override {
        MPQ_TRY(ch_.send(cmd, payload, fds));
        return receive(cmd, reply);
    }
    Status send(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds) override {
        return ch_.send(cmd, payload, fds);
    }
    int fd() const override { return ch_.fd(); }
    int watch_irq(int) override { return -1; }
    void unwatch_irq(int) override {}
    bool irq_signalled(int) override { return false; }
    bool uses_ring() const override { return false; }

protected:
    // The reply, read (or read to its end) from the blocking socket.
    Status receive(Cmd cmd, proto::Frame& reply) {
        auto r = ch_.recv_reply(reply);
        if (!r.ok()) return r.take_error();
        if (*r == proto::RecvState::WouldBlock) return fail_errno(ETIMEDOUT, "no reply to {} (timeout)", proto::cmd_name(cmd));
        if (*r == proto::RecvState::Closed) return fail("remote closed the connection");
        return {};
    }

    proto::Channel ch_;
};

class RingLink final : public SyscallLink {
public:
    RingLink(UniqueFd sock, uint32_t timeout_ms, std::unique_ptr<ProxyRing> ring, uint32_t poll_us)
        : SyscallLink(std::move(sock), timeout_ms), ring_(std::move(ring)), timeout_ms_(timeout_ms), poll_(poll_us) {}
    ~RingLink() override {
        // The kernel may still write into a ring whose receive could not be
        // cancelled: never free that memory.
        if (ring_->stuck()) (void)ring_.release();
    }

    Status exchange(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                    proto::Frame& reply) override {
        // The ring's receive offers no control buffer: a frame with fds goes
        // by sendmsg.
        if (!fds.empty()) return SyscallLink::exchange(cmd, payload, fds, reply);
        // One io_uring_enter sends the request and brings the first bytes of
        // the reply (normally all of it); the channel parses them and reads
        // the rest of a reply that came in pieces.
        proto::Header hdr{proto::raw(cmd), 0, payload.size()};
        auto got = ring_->exchange(hdr, payload, timeout_ms_, poll_);
        if (!got.ok()) {
            if (got.error().err == ETIMEDOUT) return fail_errno(ETIMEDOUT, "no reply to {} (timeout)", proto::cmd_name(cmd));
            return got.take_error();
        }
        if (got->bytes == 0) return fail("remote closed the connection");
        if (got->ctrunc) return fail("reply to {} carries fds", proto::cmd_name(cmd));
        if (!ch_.rx_feed(ring_->received(got->bytes))) return fail("reply overflows the receive buffer");
        return receive(cmd, reply);
    }
    int watch_irq(int fd) override { return ring_->watch_irq(fd); }
    void unwatch_irq(int slot) override { ring_->unwatch_irq(slot); }
    bool irq_signalled(int slot) override { return ring_->irq_signalled(slot); }
    bool uses_ring() const override { return true; }

private:
    std::unique_ptr<ProxyRing> ring_;
    uint32_t timeout_ms_;
    PollPolicy poll_;  // poll or sleep for replies (reply_poll.h)
};

}  // namespace

std::unique_ptr<LinkTransport> make_link_transport(UniqueFd sock, LinkIo io, uint32_t timeout_ms,
                                                   uint32_t poll_us) {
    if (io == LinkIo::Uring) {
        if (auto ring = ProxyRing::create(sock.get()))
            return std::make_unique<RingLink>(std::move(sock), timeout_ms, std::move(ring), poll_us);
    }
    return std::make_unique<SyscallLink>(std::move(sock), timeout_ms);
}

}  // namespace mpq::vmm
