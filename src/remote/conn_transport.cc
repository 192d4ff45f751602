#include "remote/conn_transport.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include "util/event_loop.h"
#include "util/log.h"

namespace mpq::remote {

using proto::RecvState;

namespace {

constexpr size_t kRepliesPerRound = 64;  // reserved, so the register path never reallocates

// ---- Plain syscalls: epoll says readable, Channel::recv reads, send()
// writes at once.
class SyscallTransport final : public ConnTransport {
public:
    SyscallTransport(EventLoop& loop, UniqueFd sock, int send_timeout_ms) : loop_(loop), ch_(std::move(sock)) {
        ch_.set_send_timeout_ms(send_timeout_ms);
    }
    ~SyscallTransport() override {
        if (watched_) loop_.remove_fd(ch_.fd());
    }

    bool start(Handlers h) override {
        // The loop keeps its handler alive while it runs, so the connection
        // may be dropped (and this transport destroyed) from inside input().
        watched_ = loop_.add_fd(ch_.fd(), FdEvents::Read, [in = std::move(h.input)](uint32_t) { in(); });
        return watched_;
    }
    Result<RecvState> next(proto::Frame& f) override { return ch_.recv(f); }
    bool frame_ready() const override { return ch_.frame_ready(); }
    Status send(std::vector<uint8_t>& out) override {
        auto st = ch_.send_bytes(out);
        out.clear();
        return st;
    }
    // epoll is level-triggered: a peer's next frame reports itself.
    bool wait() override { return true; }
    int fd() const override { return ch_.fd(); }

private:
    EventLoop& loop_;
    proto::Channel ch_;
    bool watched_ = false;
};

// ---- io_uring: each round of a connection is one linked pair in the
// loop's ring, the replies to the frames just served, then a receive for
// the next request. Everything the kernel may still touch after the
// transport is gone (the replies being sent, the receive buffer, its iovec,
// control buffer and msghdr) lives in State, which the receive's completion
// keeps alive.
struct RingState {
    proto::Channel ch;
    std::string name;
    ConnTransport::Handlers h;
    bool live = true;      // the transport still exists
    bool pending = false;  // a send+receive pair is in the ring
    iovec iov{};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * proto::kRecvFdSpace)> ctl{};
    msghdr msg{};
    std::vector<uint8_t> sending;  // handed to the kernel with the pending pair
    std::vector<uint8_t> queued;   // replies to the frames being served
    int send_error = 0;            // errno of a failed reply send (its receive is then cancelled)
};

class RingTransport final : public ConnTransport {
public:
    RingTransport(EventLoop& loop, UniqueFd sock, std::string name) : loop_(loop), s_(std::make_shared<RingState>()) {
        s_->ch = proto::Channel(std::move(sock));
        s_->name = std::move(name);
        s_->sending.reserve(kRepliesPerRound * (sizeof(proto::Header) + 8));
        s_->queued.reserve(kRepliesPerRound * (sizeof(proto::Header) + 8));
    }
    ~RingTransport() override {
        s_->live = false;
        if (s_->pending) loop_.ring_cancel(s_->ch.fd());
        // The socket closes now (the peer sees the end at once); the buffers
        // stay until the cancelled receive completes.
        s_->ch.close();
    }

    bool start(Handlers h) override {
        s_->h = std::move(h);
        return arm(loop_, s_);
    }
    Result<RecvState> next(proto::Frame& f) override { return s_->ch.next_buffered(f); }
    bool frame_ready() const override { return s_->ch.frame_ready(); }
    Status send(std::vector<uint8_t>& out) override {
        // Sent with the receive armed by the next wait().
        if (s_->queued.empty()) s_->queued.swap(out);
        else s_->queued.insert(s_->queued.end(), out.begin(), out.end());
        out.clear();
        return {};
    }
    // Only once no whole frame is buffered may the kernel write into the
    // receive buffer again.
    bool wait() override { return s_->pending || arm(loop_, s_); }
    int fd() const override { return s_->ch.fd(); }

private:
    static bool arm(EventLoop& loop, const std::shared_ptr<RingState>& keep);
    static void received(EventLoop& loop, const std::shared_ptr<RingState>& s, int res);

    EventLoop& loop_;
    std::shared_ptr<RingState> s_;
};

bool RingTransport::arm(EventLoop& loop, const std::shared_ptr<RingState>& keep) {
    RingState& r = *keep;
    std::span<uint8_t> space = r.ch.rx_space();
    if (space.empty()) return false;  // cannot happen: every whole frame was taken first
    r.iov = {space.data(), space.size()};
    r.msg = msghdr{};
    r.msg.msg_iov = &r.iov;
    r.msg.msg_iovlen = 1;
    r.msg.msg_control = r.ctl.data();
    r.msg.msg_controllen = r.ctl.size();
    r.sending.swap(r.queued);
    r.queued.clear();
    auto send_failed = [keep](int res) {
        keep->send_error = -res;
        // A proxy that died with our reply on its way is the VM going away,
        // as ECONNRESET on a receive (said in received()).
        if (keep->live && res != -EPIPE && res != -ECONNRESET)
            log::error("{}: send: {}", keep->name, std::strerror(-res));
        // The receive linked behind it completes with -ECANCELED and ends
        // the connection.
    };
    auto on_received = [&loop, keep](int res) {
        keep->pending = false;
        keep->sending.clear();  // the send finished before the receive began
        if (keep->live) received(loop, keep, res);
    };
    if (!loop.ring_send_recvmsg(r.ch.fd(), r.sending, &r.msg, send_failed, on_received)) return false;
    r.pending = true;
    return true;
}

void RingTransport::received(EventLoop& loop, const std::shared_ptr<RingState>& s, int res) {
    // Handlers may destroy the transport: they run last, on copies.
    auto ended = [&](End e, std::string why) {
        auto f = s->h.ended;
        f(e, why);
    };
    if (res < 0) {
        if (res == -EINTR || res == -EAGAIN) {
            if (!arm(loop, s)) ended(End::Error, "cannot queue a receive in the loop's ring");
            return;
        }
        auto [e, why] = ring_receive_end(res, std::exchange(s->send_error, 0));
        ended(e, why);
        return;
    }
    auto st = s->ch.rx_commit(static_cast<size_t>(res), s->msg);
    if (!st.ok()) {
        ended(End::Error, st.error().message);
        return;
    }
    if (*st == RecvState::Closed) {
        ended(End::Orderly, "peer closed the connection");
        return;
    }
    auto in = s->h.input;
    in();
}

}  // namespace

std::pair<ConnTransport::End, std::string> ring_receive_end(int res, int send_error) {
    if (res == -ECONNRESET || (res == -ECANCELED && (send_error == EPIPE || send_error == ECONNRESET)))
        return {ConnTransport::End::Orderly, "peer went away (connection reset)"};
    if (send_error) return {ConnTransport::End::Error, fmt::format("send: {}", std::strerror(send_error))};
    return {ConnTransport::End::Error, fmt::format("receive: {}", std::strerror(-res))};
}

std::unique_ptr<ConnTransport> make_syscall_transport(EventLoop& loop, UniqueFd sock, int send_timeout_ms) {
    return std::make_unique<SyscallTransport>(loop, std::move(sock), send_timeout_ms);
}

std::unique_ptr<ConnTransport> make_ring_transport(EventLoop& loop, UniqueFd sock, std::string name) {
    return std::make_unique<RingTransport>(loop, std::move(sock), std::move(name));
}

}  // namespace mpq::remote
