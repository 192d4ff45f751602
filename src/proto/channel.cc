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
    rx_.reset();
    rx_have_ = 0;
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

Status Channel::send(int32_t cmd, std::span<const uint8_t> payload, std::span<const int> fds) {
    if (!sock_) return fail("send {}: channel closed", cmd_name(cmd));
    if (payload.size() > kMaxPayload)
        return fail("send {}: payload of {} bytes exceeds {}", cmd_name(cmd), payload.size(), kMaxPayload);
    if (fds.size() > kMaxFdsOnWire)
        return fail("send {}: {} fds exceed {}", cmd_name(cmd), fds.size(), kMaxFdsOnWire);

    Header hdr{cmd, 0, payload.size()};
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

    size_t left = sizeof hdr + payload.size();
    iovec* cur = iov;
    while (left > 0) {
        ssize_t n = ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!wait_writable(sock_.get(), send_timeout_ms_)) {
                    int e = errno;
                    return fail_errno(e, "send {}: peer does not read ({})", cmd_name(cmd),
                                      std::strerror(e));
                }
                continue;
            }
            return fail_errno(errno, "send {}: {}", cmd_name(cmd), std::strerror(errno));
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
    rx_.reset();
    rx_have_ = 0;
    return e;
}

Result<RecvState> Channel::recv(Frame& out) {
    if (!sock_) return fail("receive: channel closed");
    for (;;) {
        size_t total = sizeof(Header) + (rx_have_ >= sizeof(Header) ? rx_.hdr.size : 0);
        if (rx_have_ >= sizeof(Header) && rx_have_ == total) break;

        iovec iov;
        if (rx_have_ < sizeof(Header)) {
            iov = {reinterpret_cast<char*>(&rx_.hdr) + rx_have_, sizeof(Header) - rx_have_};
        } else {
            size_t off = rx_have_ - sizeof(Header);
            iov = {rx_.payload.data() + off, total - rx_have_};
        }
        // Control space for up to 16 fds, as QEMU offers; only the first
        // read of a frame may carry fds (the sender attaches them to its
        // first sendmsg). Later reads pass no buffer: the kernel closes
        // anything a misbehaving peer attached there.
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kRecvFdSpace)];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        bool first = rx_have_ == 0;
        if (first) {
            msg.msg_control = ctl;
            msg.msg_controllen = sizeof ctl;
        }
        ssize_t n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return RecvState::WouldBlock;
            int e = errno;
            return rx_fail(fail_errno(e, "receive: {}", std::strerror(e)));
        }
        if (first && msg.msg_controllen > 0) {
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
                size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < cnt; i++) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    if (rx_.num_fds < kMaxFdsOnWire) {
                        rx_.fds[rx_.num_fds++].reset(fd);
                    } else {
                        ::close(fd);
                        rx_.dropped_fds++;
                    }
                }
            }
            if (msg.msg_flags & MSG_CTRUNC) rx_.ctrunc = true;
            // Too many: none of them is kept.
            if (rx_.dropped_fds || rx_.ctrunc) {
                rx_.dropped_fds += rx_.num_fds;
                rx_.close_fds();
            }
        }
        if (n == 0) {
            if (rx_have_ == 0) return RecvState::Closed;
            size_t want = sizeof(Header) + (rx_have_ >= sizeof(Header) ? rx_.hdr.size : 0);
            return rx_fail(fail("receive: EOF inside a frame ({} of {}{} bytes)", rx_have_,
                                want, rx_have_ < sizeof(Header) ? "+" : ""));
        }
        rx_have_ += static_cast<size_t>(n);
        if (rx_have_ == sizeof(Header) && rx_.hdr.size > kMaxPayload) {
            uint64_t sz = rx_.hdr.size;
            int32_t cmd = rx_.hdr.cmd;
            return rx_fail(fail("receive: {} (cmd {}) payload size {} exceeds {}", cmd_name(cmd),
                                cmd, sz, kMaxPayload));
        }
    }
    out.reset();
    out.hdr = rx_.hdr;
    std::memcpy(out.payload.data(), rx_.payload.data(), rx_.hdr.size);
    for (unsigned i = 0; i < rx_.num_fds; i++) out.fds[i] = std::move(rx_.fds[i]);
    out.num_fds = rx_.num_fds;
    out.dropped_fds = rx_.dropped_fds;
    out.ctrunc = rx_.ctrunc;
    rx_.num_fds = 0;
    rx_.reset();
    rx_have_ = 0;
    return RecvState::Frame;
}

Result<RecvState> Channel::recv_reply(Frame& out) {
    if (!sock_) return fail("receive: channel closed");
    if (rx_have_ != 0) return recv(out);
    iovec iov[2] = {{&rx_.hdr, sizeof(Header)}, {rx_.payload.data(), sizeof(uint64_t)}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    ssize_t n;
    do {
        n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return RecvState::WouldBlock;
        int e = errno;
        return rx_fail(fail_errno(e, "receive: {}", std::strerror(e)));
    }
    if (n == 0) return RecvState::Closed;
    if (msg.msg_flags & MSG_CTRUNC) rx_.ctrunc = true;  // fds offered: the kernel closed them
    rx_have_ = static_cast<size_t>(n);
    if (rx_have_ >= sizeof(Header)) {
        if (rx_.hdr.size > kMaxPayload) {
            uint64_t sz = rx_.hdr.size;
            int32_t cmd = rx_.hdr.cmd;
            return rx_fail(fail("receive: {} (cmd {}) payload size {} exceeds {}", cmd_name(cmd), cmd,
                                sz, kMaxPayload));
        }
        if (rx_have_ > sizeof(Header) + rx_.hdr.size) {
            return rx_fail(fail("receive: {} bytes beyond a {}-byte reply", rx_have_ - sizeof(Header) - rx_.hdr.size,
                                sizeof(Header) + rx_.hdr.size));
        }
    }
    return recv(out);  // completes the frame (or just hands it over)
}

const char* cmd_name(int32_t cmd) {
    switch (cmd) {
    case static_cast<int32_t>(Cmd::SyncSysmem): return "SYNC_SYSMEM";
    case static_cast<int32_t>(Cmd::Ret): return "RET";
    case static_cast<int32_t>(Cmd::PciCfgWrite): return "PCI_CFGWRITE";
    case static_cast<int32_t>(Cmd::PciCfgRead): return "PCI_CFGREAD";
    case static_cast<int32_t>(Cmd::BarWrite): return "BAR_WRITE";
    case static_cast<int32_t>(Cmd::BarRead): return "BAR_READ";
    case static_cast<int32_t>(Cmd::SetIrqfd): return "SET_IRQFD";
    case static_cast<int32_t>(Cmd::DeviceReset): return "DEVICE_RESET";
    case kCmdSelectDevice: return "SELECT_DEVICE";
    default: return "unknown command";
    }
}

bool is_eventfd(int fd) {
    char path[64], target[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = ::readlink(path, target, sizeof target - 1);
    if (n <= 0) return false;
    target[n] = '\0';
    return std::strcmp(target, "anon_inode:[eventfd]") == 0;
}

namespace {

struct Rule {
    uint64_t size;       // exact payload size
    unsigned min_fds, max_fds;
};

Status check(const Frame& f, const Rule& r) {
    if (f.size() != r.size)
        return fail("{}: payload size {}, expected {}", cmd_name(f.cmd()), f.size(), r.size);
    if (f.num_fds < r.min_fds || f.num_fds > r.max_fds) {
        if (r.min_fds == r.max_fds)
            return fail("{}: {} fds, expected {}", cmd_name(f.cmd()), f.num_fds, r.min_fds);
        return fail("{}: {} fds, expected {}..{}", cmd_name(f.cmd()), f.num_fds, r.min_fds,
                    r.max_fds);
    }
    return {};
}

// Requests (remote side), spec §1.4 plus "no fds where none belong".
Status validate_sync_sysmem(const Frame& f) { return check(f, {sizeof(SyncSysmem), 1, kMaxFdsAccepted}); }
Status validate_cfg(const Frame& f) { return check(f, {sizeof(PciConf), 0, 0}); }
Status validate_bar(const Frame& f) { return check(f, {sizeof(BarAccess), 0, 0}); }
Status validate_set_irqfd(const Frame& f) { return check(f, {0, 2, 2}); }
Status validate_device_reset(const Frame& f) { return check(f, {0, 0, 0}); }
Status validate_select_device(const Frame& f) { return check(f, {sizeof(SelectDevice), 0, 0}); }

// Replies (proxy side): RET with a u64, or empty after DEVICE_RESET.
Status validate_ret(const Frame& f) {
    if (f.size() != 0 && f.size() != sizeof(uint64_t))
        return fail("RET: payload size {}, expected 8 (or 0)", f.size());
    if (f.num_fds != 0) return fail("RET: {} fds, expected 0", f.num_fds);
    return {};
}

}  // namespace

Status validate(const Frame& f, Role receiver) {
    if (f.dropped_fds || f.ctrunc)
        return fail("{} (cmd {}): too many fds ({} received, at most {}); all closed",
                    cmd_name(f.cmd()), f.cmd(), f.dropped_fds, kMaxFdsAccepted);
    if (f.num_fds > kMaxFdsAccepted)
        return fail("{} (cmd {}): {} fds, at most {}", cmd_name(f.cmd()), f.cmd(), f.num_fds,
                    kMaxFdsAccepted);
    for (unsigned i = 0; i < f.num_fds; i++)
        if (::fcntl(f.fds[i].get(), F_GETFL) < 0)
            return fail("{}: fd {} is not valid", cmd_name(f.cmd()), i);
    if (f.size() > kMaxPayload)
        return fail("{}: payload size {} exceeds {}", cmd_name(f.cmd()), f.size(), kMaxPayload);

    if (receiver == Role::Proxy) {
        if (f.cmd() != static_cast<int32_t>(Cmd::Ret))
            return fail("{} (cmd {}): only RET is a valid reply", cmd_name(f.cmd()), f.cmd());
        return validate_ret(f);
    }
    switch (f.cmd()) {
    case static_cast<int32_t>(Cmd::SyncSysmem): return validate_sync_sysmem(f);
    case static_cast<int32_t>(Cmd::PciCfgWrite):
    case static_cast<int32_t>(Cmd::PciCfgRead): return validate_cfg(f);
    case static_cast<int32_t>(Cmd::BarWrite):
    case static_cast<int32_t>(Cmd::BarRead): return validate_bar(f);
    case static_cast<int32_t>(Cmd::SetIrqfd): return validate_set_irqfd(f);
    case static_cast<int32_t>(Cmd::DeviceReset): return validate_device_reset(f);
    case kCmdSelectDevice: return validate_select_device(f);
    case static_cast<int32_t>(Cmd::Ret): return fail("RET sent to the remote (it is a reply)");
    default: return fail("unknown command {}", f.cmd());
    }
}

}  // namespace mpq::proto
