#include "proto/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

namespace mpq::proto {

void Frame::close_fds() {
    for (unsigned i = 0; i < num_fds; i++) fds[i].reset();
    num_fds = 0;
}

void Frame::reset() {
    close_fds();
    size_t n = hdr.size <= kMaxPayload ? hdr.size : kMaxPayload;
    std::memset(payload.data(), 0, n);
    hdr = Header{};
    dropped_fds = 0;
    ctrunc = false;
}

void Channel::close() {
    sock_.reset();
    for (auto& p : pending_) p.clear();
    rx_begin_ = rx_end_ = 0;
}

void Channel::PendingFds::clear() {
    for (unsigned i = 0; i < num; i++) fds[i].reset();
    used = false;
    at = 0;
    num = dropped = 0;
    ctrunc = false;
}

namespace {

// Waits for room to write; false on timeout (errno ETIMEDOUT) or error.
bool wait_writable(int fd, int timeout_ms) {
    pollfd p{fd, POLLOUT, 0};
    for (;;) {
        int r = ::poll(&p, 1, timeout_ms);
        if (r > 0) return (p.revents & (POLLERR | POLLNVAL)) == 0 || (p.revents & POLLOUT);
        if (r == 0) {
            errno = ETIMEDOUT;
            return false;
        }
        if (errno != EINTR) return false;
    }
}

}  // namespace

Status Channel::send(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds) {
    if (!sock_) return fail("send {}: channel closed", cmd_name(cmd));
    if (payload.size() > kMaxPayload)
        return fail("send {}: payload of {} bytes exceeds {}", cmd_name(cmd), payload.size(), kMaxPayload);
    if (fds.size() > kMaxFdsOnWire)
        return fail("send {}: {} fds exceed {}", cmd_name(cmd), fds.size(), kMaxFdsOnWire);

    Header hdr{raw(cmd), 0, payload.size()};
    iovec iov[2] = {{&hdr, sizeof hdr}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
    int niov = payload.empty() ? 1 : 2;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxFdsOnWire)];
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = niov;
    if (!fds.empty()) {
        std::memset(ctl, 0, sizeof ctl);
        msg.msg_control = ctl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }

    return send_msg(cmd_name(cmd), msg, sizeof hdr + payload.size());
}

Status Channel::send_bytes(std::span<const uint8_t> frames) {
    const char* what = "replies";
    if (frames.size() >= sizeof(Header)) {
        Header h;
        std::memcpy(&h, frames.data(), sizeof h);
        what = cmd_name(static_cast<Cmd>(h.cmd));
    }
    if (!sock_) return fail("send {}: channel closed", what);
    if (frames.empty()) return {};
    iovec iov{const_cast<uint8_t*>(frames.data()), frames.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    return send_msg(what, msg, frames.size());
}

Status Channel::send_msg(const char* what, msghdr& msg, size_t left) {
    iovec* cur = msg.msg_iov;
    size_t niov = msg.msg_iovlen;
    while (left > 0) {
        ssize_t n = ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!wait_writable(sock_.get(), send_timeout_ms_)) {
                    int e = errno;
                    return fail_errno(e, "send {}: peer does not read ({})", what, std::strerror(e));
                }
                continue;
            }
            return fail_errno(errno, "send {}: {}", what, std::strerror(errno));
        }
        // The fds went with the first bytes; later pieces carry none.
        msg.msg_control = nullptr;
        msg.msg_controllen = 0;
        left -= static_cast<size_t>(n);
        size_t adv = static_cast<size_t>(n);
        while (adv > 0 && adv >= cur->iov_len) {
            adv -= cur->iov_len;
            ++cur;
            --niov;
        }
        if (niov > 0) {
            cur->iov_base = static_cast<char*>(cur->iov_base) + adv;
            cur->iov_len -= adv;
        }
        msg.msg_iov = cur;
        msg.msg_iovlen = niov;
    }
    return {};
}

Error Channel::rx_fail(Error e) {
    for (auto& p : pending_) p.clear();
    rx_begin_ = rx_end_ = 0;
    return e;
}

bool Channel::frame_ready() const {
    size_t have = rx_end_ - rx_begin_;
    if (have < sizeof(Header)) return false;
    Header h;
    std::memcpy(&h, rxbuf_.data() + rx_begin_, sizeof h);
    // An oversized header is "ready" too: recv() reports it at once.
    return h.size > kMaxPayload || have >= sizeof h + h.size;
}

Result<bool> Channel::take_frame(Frame& out) {
    size_t have = rx_end_ - rx_begin_;
    if (have < sizeof(Header)) return false;
    Header h;
    std::memcpy(&h, rxbuf_.data() + rx_begin_, sizeof h);
    if (h.size > kMaxPayload) {
        return rx_fail(fail("receive: {} (cmd {}) payload size {} exceeds {}", cmd_name(static_cast<Cmd>(h.cmd)), h.cmd,
                            h.size, kMaxPayload));
    }
    size_t len = sizeof h + h.size;
    if (have < len) return false;
    out.reset();
    out.hdr = h;
    std::memcpy(out.payload.data(), rxbuf_.data() + rx_begin_ + sizeof h, h.size);
    PendingFds& p = pending_[0];
    if (p.used && p.at == rx_begin_) {
        for (unsigned i = 0; i < p.num; i++) out.fds[i] = std::move(p.fds[i]);
        out.num_fds = p.num;
        out.dropped_fds = p.dropped;
        out.ctrunc = p.ctrunc;
        p.num = 0;
        p.clear();
        std::swap(pending_[0], pending_[1]);
    }
    rx_begin_ += len;
    if (rx_begin_ == rx_end_) rx_begin_ = rx_end_ = 0;
    return true;
}

void Channel::compact() {
    if (rx_begin_ == 0) return;
    size_t have = rx_end_ - rx_begin_;
    std::memmove(rxbuf_.data(), rxbuf_.data() + rx_begin_, have);
    for (auto& p : pending_)
        if (p.used) p.at -= rx_begin_;
    rx_begin_ = 0;
    rx_end_ = have;
}

void Channel::attach_fds(msghdr& msg, size_t old_end) {
    // The last frame starting before rx_end_ (frame boundaries follow from
    // the headers already buffered).
    size_t s = rx_begin_;
    while (rx_end_ - s >= sizeof(Header)) {
        Header h;
        std::memcpy(&h, rxbuf_.data() + s, sizeof h);
        if (h.size > kMaxPayload) break;  // take_frame() reports it
        size_t next = s + sizeof h + h.size;
        if (next >= rx_end_) break;
        s = next;
    }
    PendingFds* slot = nullptr;
    for (auto& p : pending_) {
        if (p.used && p.at == s) slot = &p;
    }
    if (!slot) {
        for (auto& p : pending_) {
            if (!p.used) {
                slot = &p;
                break;
            }
        }
    }
    bool mid = s < old_end;  // no frame starts in this read
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < cnt; i++) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (slot && !mid && slot->num < kMaxFdsOnWire) {
                slot->fds[slot->num++].reset(fd);
            } else {
                ::close(fd);
                if (slot) slot->dropped++;
            }
        }
    }
    if (!slot) return;  // cannot happen (see pending_); the fds were closed
    slot->used = true;
    slot->at = s;
    if ((msg.msg_flags & MSG_CTRUNC) || mid) slot->ctrunc = true;
    // Too many, or in the wrong place: none of them is kept.
    if (slot->dropped || slot->ctrunc) {
        slot->dropped += slot->num;
        for (unsigned i = 0; i < slot->num; i++) slot->fds[i].reset();
        slot->num = 0;
    }
}

std::span<uint8_t> Channel::rx_space() {
    compact();
    return std::span(rxbuf_.data() + rx_end_, kRxBufSize - rx_end_);
}

Result<RecvState> Channel::rx_commit(size_t n, msghdr& msg) {
    n = std::min(n, kRxBufSize - rx_end_);  // a caller's count, never trusted past the buffer
    size_t old_end = rx_end_;
    rx_end_ += n;
    if (msg.msg_controllen > 0 || (msg.msg_flags & MSG_CTRUNC)) attach_fds(msg, old_end);
    if (n > 0) return RecvState::WouldBlock;
    size_t have = rx_end_ - rx_begin_;
    if (have == 0) return RecvState::Closed;
    Header h{};
    std::memcpy(&h, rxbuf_.data() + rx_begin_, std::min(have, sizeof h));
    return rx_fail(fail("receive: EOF inside a frame ({} of {}{} bytes)", have,
                        sizeof(Header) + (have >= sizeof(Header) ? h.size : 0), have < sizeof(Header) ? "+" : ""));
}

Result<RecvState> Channel::next_buffered(Frame& out) {
    auto t = take_frame(out);
    if (!t.ok()) return t.take_error();
    return *t ? RecvState::Frame : RecvState::WouldBlock;
}

Result<RecvState> Channel::recv(Frame& out) {
    if (!sock_) return fail("receive: channel closed");
    for (;;) {
        auto t = take_frame(out);
        if (!t.ok()) return t.take_error();
        if (*t) return RecvState::Frame;

        std::span<uint8_t> space = rx_space();
        iovec iov{space.data(), space.size()};
        // Control space for up to 16 fds, as QEMU offers.
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kRecvFdSpace)];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        ssize_t n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return RecvState::WouldBlock;
            int e = errno;
            return rx_fail(fail_errno(e, "receive: {}", std::strerror(e)));
        }
        auto c = rx_commit(static_cast<size_t>(n), msg);
        if (!c.ok() || *c == RecvState::Closed) return c;
    }
}

Result<RecvState> Channel::recv_reply(Frame& out) {
    auto r = recv(out);
    if (r.ok() && *r == RecvState::Frame && mid_frame()) {
        size_t extra = rx_end_ - rx_begin_;
        return rx_fail(fail("receive: {} bytes beyond a {}-byte reply", extra, sizeof(Header) + out.size()));
    }
    return r;
}

bool Channel::rx_feed(std::span<const uint8_t> bytes) {
    compact();
    if (bytes.size() > kRxBufSize - rx_end_) return false;
    if (!bytes.empty()) std::memcpy(rxbuf_.data() + rx_end_, bytes.data(), bytes.size());
    rx_end_ += bytes.size();
    return true;
}

bool is_eventfd(int fd) {
    char path[64], target[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = ::readlink(path, target, sizeof target - 1);
    if (n <= 0) return false;
    target[n] = '\0';
    return std::strcmp(target, "anon_inode:[eventfd]") == 0;
}

Status validate(const Frame& f, Role receiver) {
    const int32_t id = f.hdr.cmd;
    const char* name = cmd_name(f.cmd());
    if (f.dropped_fds || f.ctrunc)
        return fail("{} (cmd {}): too many fds ({} received, at most {}); all closed", name, id,
                    f.dropped_fds, kMaxFdsAccepted);
    if (f.num_fds > kMaxFdsAccepted)
        return fail("{} (cmd {}): {} fds, at most {}", name, id, f.num_fds, kMaxFdsAccepted);
    for (unsigned i = 0; i < f.num_fds; i++)
        if (::fcntl(f.fds[i].get(), F_GETFL) < 0) return fail("{}: fd {} is not valid", name, i);
    if (f.size() > kMaxPayload) return fail("{}: payload size {} exceeds {}", name, f.size(), kMaxPayload);

    const Message* m = message(f.cmd());
    if (receiver == Role::Proxy) {
        if (!m || m->dir != Dir::ToProxy) return fail("{} (cmd {}): only RET is a valid reply", name, id);
    } else {
        if (!m) return fail("unknown command {}", id);
        if (m->dir != Dir::ToRemote) return fail("{} sent to the remote (it is a reply)", name);
    }
    // A reply may be empty: the answer to a request whose Answer is RetEmpty.
    bool size_ok = f.size() == m->payload_size || (m->answer == Answer::IsReply && f.size() == 0);
    if (!size_ok) {
        if (m->answer == Answer::IsReply)
            return fail("{}: payload size {}, expected {} (or 0)", name, f.size(), m->payload_size);
        return fail("{}: payload size {}, expected {}", name, f.size(), m->payload_size);
    }
    if (f.num_fds < m->min_fds || f.num_fds > m->max_fds) {
        if (m->min_fds == m->max_fds) return fail("{}: {} fds, expected {}", name, f.num_fds, m->min_fds);
        return fail("{}: {} fds, expected {}..{}", name, f.num_fds, m->min_fds, m->max_fds);
    }
    return {};
}

void encode(std::vector<uint8_t>& out, Cmd cmd, std::span<const uint8_t> payload) {
    Header h{raw(cmd), 0, payload.size()};
    const auto* hb = reinterpret_cast<const uint8_t*>(&h);
    out.insert(out.end(), hb, hb + sizeof h);
    out.insert(out.end(), payload.begin(), payload.end());
}

}  // namespace mpq::proto
