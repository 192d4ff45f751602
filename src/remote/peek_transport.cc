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

PeekTransport::PeekTransport(EventLoop& loop, UniqueFd sock, int send_timeout_ms)
    : loop_(loop), sock_(std::move(sock)), send_timeout_ms_(send_timeout_ms) {
    buf_.resize(kPeekBytes);
    replies_.reserve(1024);
}

PeekTransport::~PeekTransport() {
    if (watched_) loop_.remove_fd(sock_.get());
}

bool PeekTransport::start(Handlers h) {
    h_ = std::move(h);
    watched_ = loop_.add_fd(sock_.get(), FdEvents::Read, [this](uint32_t) {
        if (!peeked_) {
            if (auto st = peek(); !st.ok()) {
                auto f = h_.ended;
                f(st.error().err == ECONNRESET ? End::Orderly : End::Error, st.error().message);
                return;
            }
        }
        auto in = h_.input;
        in();
    });
    return watched_;
}

Status PeekTransport::peek() {
    fds_.clear();
    iovec iov{buf_.data(), buf_.size()};
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
    peeked_ = true;
    used_ = 0;
    if (n < 0) {
        have_ = 0;
        if (errno == EAGAIN) return {};
        return fail_errno(errno, "receive: {}", std::strerror(errno));
    }
    have_ = static_cast<size_t>(n);
    eof_ = n == 0;
    close_cmsg_fds(msg, &fds_);
    if (msg.msg_flags & MSG_CTRUNC) {
        // Too many fds: the frame they came with is refused by validate()
        // (no fds where it wants them); nothing of them is kept.
        fds_.clear();
    }
    return {};
}

bool PeekTransport::frame_ready() const {
    size_t left = have_ - used_;
    if (left < sizeof(proto::Header)) return false;
    proto::Header h;
    std::memcpy(&h, buf_.data() + used_, sizeof h);
    return h.size <= proto::kMaxPayload && left >= sizeof h + h.size;
}

Result<RecvState> PeekTransport::next(proto::Frame& f) {
    if (!peeked_) return RecvState::WouldBlock;
    if (eof_ && have_ == 0) return RecvState::Closed;
    size_t left = have_ - used_;
    if (left < sizeof(proto::Header)) return RecvState::WouldBlock;
    proto::Header h;
    std::memcpy(&h, buf_.data() + used_, sizeof h);
    if (h.size > proto::kMaxPayload)
        return fail("receive: cmd {} payload size {} exceeds {}", h.cmd, h.size, proto::kMaxPayload);
    size_t len = sizeof h + h.size;
    if (left < len) return RecvState::WouldBlock;
    f.reset();
    f.hdr = h;
    std::memcpy(f.payload.data(), buf_.data() + used_ + sizeof h, h.size);
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

Status PeekTransport::flush() {
    if (replies_.empty()) return {};
    auto st = send_now(replies_);
    replies_.clear();
    return st;
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
