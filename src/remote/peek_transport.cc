#include "remote/peek_transport.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "util/event_loop.h"
#include "util/log.h"

namespace mpq::remote {

using proto::RecvState;

namespace {

// Enough for a burst of posted writes; a frame is at most 208 bytes.
constexpr size_t kPeekBytes = 4096;
// How soon a peek that found only part of a frame looks again.
constexpr uint64_t kRepeekNs = 1'000'000;

void close_cmsg_fds(msghdr& msg, std::vector<UniqueFd>* keep) {
    if (msg.msg_controllen == 0) return;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (keep) keep->emplace_back(fd);
            else ::close(fd);
        }
    }
}

}  // namespace

struct PeekTransport::Ring {
    PeekTransport* owner = nullptr;  // null once the transport is gone
    bool pending = false;            // a (send +) peek is in the ring
    int send_error = 0;              // errno of a failed send (its peek is then cancelled)
    std::vector<uint8_t> buf;
    iovec iov{};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kRecvFdSpace)];
    msghdr msg{};
    std::vector<uint8_t> sending;  // the replies handed to the kernel with the peek
};

PeekTransport::PeekTransport(EventLoop& loop, UniqueFd sock, int send_timeout_ms)
    : loop_(loop), sock_(std::move(sock)), send_timeout_ms_(send_timeout_ms), r_(std::make_shared<Ring>()) {
    r_->owner = this;
    r_->buf.resize(kPeekBytes);
    replies_.reserve(1024);
}

PeekTransport::~PeekTransport() {
    if (watched_) loop_.remove_fd(sock_.get());
    r_->owner = nullptr;
    // The buffers stay with the cancelled operation until it completes.
    if (r_->pending) loop_.ring_cancel(sock_.get());
}

const uint8_t* PeekTransport::buf() const { return r_->buf.data(); }

bool PeekTransport::start(Handlers h) {
    h_ = std::move(h);
    if (loop_.ring_enabled()) {
        ring_mode_ = true;
        return arm_ring();
    }
    return watch();
}

bool PeekTransport::watch() {
    watched_ = loop_.add_fd(sock_.get(), FdEvents::Read, [this](uint32_t) {
        if (!peeked_) {
            if (auto st = peek(); !st.ok()) {
                auto f = h_.ended;
                f(st.error().err == ECONNRESET ? End::Orderly : End::Error, st.error().message);
                return;
            }
            if (partial_frame()) return look_again_later();
        }
        auto in = h_.input;
        in();
    });
    return watched_;
}

// Right after a peek (nothing handed out yet): bytes, but not a whole first
// frame. A header announcing too large a payload is not partial: next()
// refuses it.
bool PeekTransport::partial_frame() const {
    if (!peeked_ || have_ == 0 || eof_) return false;
    if (have_ < sizeof(proto::Header)) return true;
    proto::Header h;
    std::memcpy(&h, buf(), sizeof h);
    return h.size <= proto::kMaxPayload && have_ < sizeof h + h.size;
}

// A peek that holds only part of a frame (a peer writing a frame in pieces):
// peeking again at once would return the same bytes (and the socket stays
// readable for epoll), so look again a little later instead of spinning on
// them, a round (and a publish) each time.
void PeekTransport::look_again_later() {
    peeked_ = false;
    waiting_rest_ = true;
    if (watched_) {
        loop_.remove_fd(sock_.get());
        watched_ = false;
    }
    std::weak_ptr<Ring> weak = r_;
    loop_.add_timer(kRepeekNs, [weak] {
        auto r = weak.lock();
        if (!r || !r->owner) return;
        PeekTransport* t = r->owner;
        t->waiting_rest_ = false;
        if (r->pending || t->peeked_) return;
        if (!(t->ring_mode_ ? t->arm_ring() : t->watch())) {
            auto f = t->h_.ended;
            f(End::Error, "cannot wait for the socket again");
        }
    });
}

// The next peek, behind the replies in `sending` (if any). With replies both
// go to the kernel now, so that the replies leave before flush() returns;
// a bare peek waits for the loop's next wait. The first one must: a
// successor settles the head of the socket (take_over) after its transports
// start, and a peek taken before that would hand out a request it discards.
bool PeekTransport::arm_ring() {
    Ring& r = *r_;
    r.iov = {r.buf.data(), r.buf.size()};
    r.msg = msghdr{};
    r.msg.msg_iov = &r.iov;
    r.msg.msg_iovlen = 1;
    r.msg.msg_control = r.ctl;
    r.msg.msg_controllen = sizeof r.ctl;
    std::shared_ptr<Ring> keep = r_;
    auto send_failed = [keep](int res) { keep->send_error = -res; };
    auto peeked = [keep](int res) {
        keep->pending = false;
        keep->sending.clear();
        ring_peeked(keep, res);
    };
    const bool now = !r.sending.empty();
    if (!loop_.ring_send_recvmsg(sock_.get(), r.sending, &r.msg, send_failed, peeked, MSG_PEEK)) return false;
    r.pending = true;
    if (now) loop_.ring_submit();
    return true;
}

void PeekTransport::ring_peeked(const std::shared_ptr<Ring>& r, int res) {
    PeekTransport* t = r->owner;
    if (!t) {
        // Copies of fds the peek brought in, for a transport that is gone.
        if (res > 0) close_cmsg_fds(r->msg, nullptr);
        return;
    }
    // Handlers may destroy the transport: they run last, on copies.
    auto ended = [t](End e, std::string why) {
        auto f = t->h_.ended;
        f(e, why);
    };
    if (res == -EINTR || res == -EAGAIN) {
        if (!t->arm_ring()) ended(End::Error, "cannot queue a receive in the loop's ring");
        return;
    }
    if (res < 0) {
        auto [e, why] = ring_receive_end(res, std::exchange(r->send_error, 0));
        return ended(e, why);
    }
    t->took_peek(res, r->msg);
    if (t->partial_frame()) return t->look_again_later();
    auto in = t->h_.input;
    in();
}

void PeekTransport::took_peek(ssize_t n, msghdr& msg) {
    peeked_ = true;
    used_ = 0;
    have_ = static_cast<size_t>(n);
    eof_ = n == 0;
    close_cmsg_fds(msg, &fds_);
    if (msg.msg_flags & MSG_CTRUNC) {
        // Too many fds: the frame they came with is refused by validate()
        // (no fds where it wants them); nothing of them is kept.
        fds_.clear();
    }
}

Status PeekTransport::peek() {
    fds_.clear();
    iovec iov{r_->buf.data(), r_->buf.size()};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kRecvFdSpace)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    ssize_t n;
    do {
        n = ::recvmsg(sock_.get(), &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        // Nothing there (a spurious wake-up): not a peek, so the next
        // readiness peeks again.
        peeked_ = false;
        used_ = have_ = 0;
        if (errno == EAGAIN) return {};
        return fail_errno(errno, "receive: {}", std::strerror(errno));
    }
    took_peek(n, msg);
    return {};
}

bool PeekTransport::frame_ready() const {
    size_t left = have_ - used_;
    if (left < sizeof(proto::Header)) return false;
    proto::Header h;
    std::memcpy(&h, buf() + used_, sizeof h);
    return h.size <= proto::kMaxPayload && left >= sizeof h + h.size;
}

Result<RecvState> PeekTransport::next(proto::Frame& f) {
    if (!peeked_) return RecvState::WouldBlock;
    if (eof_ && have_ == 0) return RecvState::Closed;
    size_t left = have_ - used_;
    if (left < sizeof(proto::Header)) return RecvState::WouldBlock;
    proto::Header h;
    std::memcpy(&h, buf() + used_, sizeof h);
    if (h.size > proto::kMaxPayload)
        return fail("receive: cmd {} payload size {} exceeds {}", h.cmd, h.size, proto::kMaxPayload);
    size_t len = sizeof h + h.size;
    if (left < len) return RecvState::WouldBlock;
    f.reset();
    f.hdr = h;
    std::memcpy(f.payload.data(), buf() + used_ + sizeof h, h.size);
    // The fds of the peek belong to the last frame that starts in it (the
    // kernel ends a read after the message that carries fds, and a sender
    // attaches them to the sendmsg that starts a frame).
    bool last = used_ + len == have_;
    if (last && !fds_.empty()) {
        unsigned k = 0;
        for (auto& fd : fds_) {
            if (k < proto::kMaxFdsOnWire) f.fds[k++] = std::move(fd);
            else f.dropped_fds++;
        }
        f.num_fds = k;
        fds_.clear();
    }
    last_off_ = used_;
    used_ += len;
    return RecvState::Frame;
}

Status PeekTransport::send(std::vector<uint8_t>& out) {
    replies_.insert(replies_.end(), out.begin(), out.end());
    out.clear();
    return {};
}

Status PeekTransport::discard(size_t n) {
    uint8_t sink[512];
    while (n > 0) {
        iovec iov{sink, std::min(n, sizeof sink)};
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kRecvFdSpace)];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        ssize_t r = ::recvmsg(sock_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return fail_errno(r < 0 ? errno : EPIPE, "consuming a handled request: {}",
                                      r < 0 ? std::strerror(errno) : "end of stream");
        close_cmsg_fds(msg, nullptr);  // copies of fds already taken from the peek
        n -= static_cast<size_t>(r);
    }
    return {};
}

Status PeekTransport::consume() {
    size_t n = used_;
    peeked_ = false;
    used_ = have_ = 0;
    eof_ = false;
    fds_.clear();
    return discard(n);
}

Status PeekTransport::send_now(std::span<const uint8_t> bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::send(sock_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            pollfd p{sock_.get(), POLLOUT, 0};
            int r = ::poll(&p, 1, send_timeout_ms_);
            if (r == 0) return fail_errno(ETIMEDOUT, "send: the peer reads no replies");
            continue;
        }
        return fail_errno(errno, "send: {}", std::strerror(errno));
    }
    return {};
}

Status PeekTransport::flush(Flush how) {
    // Without the ring, or with a peek still in it (nothing was peeked this
    // round: block completions), or waiting for the rest of a frame, or a
    // peek not consumed yet: the replies, if any, go out alone.
    if (!ring_mode_ || how == Flush::Now || r_->pending || waiting_rest_ || peeked_) {
        if (replies_.empty()) return {};
        auto st = send_now(replies_);
        replies_.clear();
        return st;
    }
    // This round's peek was consumed: the replies and the next peek go in
    // together.
    r_->sending.swap(replies_);
    replies_.clear();
    if (!arm_ring()) return fail("cannot queue a receive in the loop's ring");
    return {};
}

Result<std::vector<uint8_t>> PeekTransport::peek_head(size_t max) {
    std::vector<uint8_t> out(max);
    ssize_t n;
    do {
        n = ::recv(sock_.get(), out.data(), out.size(), MSG_PEEK | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) return fail_errno(errno, "receive: {}", std::strerror(errno));
    out.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return out;
}

}  // namespace mpq::remote
