#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

#include "util/event_loop.h"
#include "util/log.h"
#include "vmm/proxy.h"
#include "trace/trace.h"

namespace mpq::vmm {

using proto::Cmd;

Result<std::shared_ptr<ProxyLink>> ProxyLink::create(UniqueFd sock, std::string name,
                                                     uint32_t reply_timeout_ms, LinkIo io, uint64_t offer,
                                                     uint32_t poll_us) {
    int type = 0, domain = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
        return fail("proxy: fd {} is not a socket", sock.get());
    }
    len = sizeof domain;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX ||
        type != SOCK_STREAM) {
        return fail("proxy: fd {} is not a unix stream socket", sock.get());
    }
    // Requests are synchronous: a blocking socket with a receive timeout lets
    // the kernel wake us exactly when the reply lands, and bounds a hung
    // remote. O_NONBLOCK lives in our end's file description only.
    int fl = ::fcntl(sock.get(), F_GETFL);
    if (fl < 0 || ::fcntl(sock.get(), F_SETFL, fl & ~O_NONBLOCK) != 0) {
        return fail_errno(errno, "proxy: fd {}: {}", sock.get(), std::strerror(errno));
    }
    ::fcntl(sock.get(), F_SETFD, FD_CLOEXEC);
    timeval tv{static_cast<time_t>(reply_timeout_ms / 1000),
               static_cast<suseconds_t>((reply_timeout_ms % 1000) * 1000)};
    if (reply_timeout_ms == 0) tv = {0, 1000};
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::shared_ptr<ProxyLink> l(new ProxyLink());
    l->ch_ = proto::Channel(std::move(sock));
    l->ch_.set_send_timeout_ms(static_cast<int>(reply_timeout_ms));
    l->name_ = std::move(name);
    l->timeout_ms_ = reply_timeout_ms;
    l->offer_ = offer & proto::kSupportedFeatures;
    l->poll_ = PollPolicy(poll_us);
    if (io == LinkIo::Uring) l->ring_ = ProxyRing::create(l->ch_.fd());
    return l;
}

ProxyLink::~ProxyLink() {
    if (loop_) loop_->remove_fd(ch_.fd());
    // The kernel may still write into a ring whose receive could not be
    // cancelled: never free that memory.
    if (ring_ && ring_->stuck()) (void)ring_.release();
}

void ProxyLink::watch(EventLoop& loop) {
    if (loop_ || broken_) return;
    if (loop.add_fd(ch_.fd(), FdEvents::Read, [this](uint32_t ev) { on_idle_event(ev); })) loop_ = &loop;
}

void ProxyLink::on_idle_event(uint32_t events) {
    // Requests are synchronous and their replies are read inside call(), so
    // the socket is only readable here if the remote sent something on its
    // own, closed it, or failed.
    char c;
    ssize_t n = ::recv(ch_.fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(events & (EPOLLHUP | EPOLLERR))) return;
    mark_broken(n > 0 ? "unsolicited data from the remote" : "remote closed the connection");
}

void ProxyLink::detach(ProxyDevice* dev) {
    std::erase(devices_, dev);
    if (selected_ == dev) selected_ = nullptr;
}

void ProxyLink::mark_broken(const std::string& reason) {
    if (broken_) return;
    broken_ = true;
    reason_ = reason;
    if (loop_) {
        loop_->remove_fd(ch_.fd());
        loop_ = nullptr;
    }
    // The stream may be mid-frame or hold a late reply: nothing more is sent
    // on it, but the socket stays open so the remote does not see an EOF
    // it would mistake for an orderly shutdown of the VM.
    auto devs = devices_;
    for (auto* d : devs) d->link_broken(reason);
}

Result<uint64_t> ProxyLink::exchange(Cmd cmd, std::span<const uint8_t> payload, bool allow_empty,
                                     std::span<const int> fds) {
    if (broken_) return fail("{}", reason_);
    std::string why;
    if (ring_ && fds.empty()) {
        // One io_uring_enter sends the request and brings the first bytes of
        // the reply (normally all of it); the channel parses them and reads
        // the rest of a reply that came in pieces.
        proto::Header hdr{static_cast<int32_t>(cmd), 0, payload.size()};
        auto got = ring_->exchange(hdr, payload, timeout_ms_, poll_);
        if (!got.ok()) {
            why = got.error().err == ETIMEDOUT
                      ? fmt::format("no reply to {} (timeout)", proto::cmd_name(static_cast<int32_t>(cmd)))
                      : got.error().message;
        } else if (got->bytes == 0) {
            why = "remote closed the connection";
        } else if (got->ctrunc) {
            why = fmt::format("reply to {} carries fds", proto::cmd_name(static_cast<int32_t>(cmd)));
        } else if (!ch_.rx_feed(ring_->received(got->bytes))) {
            why = "reply overflows the receive buffer";
        }
        if (!why.empty()) {
            mark_broken(why);
            return fail("{}", reason_);
        }
    } else if (auto st = ch_.send(cmd, payload, fds); !st.ok()) {
        mark_broken(st.error().message);
        return fail("{}", reason_);
    }
    auto r = ch_.recv_reply(rx_);
    if (!r.ok()) {
        why = r.error().message;
    } else if (*r == proto::RecvState::WouldBlock) {
        why = fmt::format("no reply to {} (timeout)", proto::cmd_name(static_cast<int32_t>(cmd)));
    } else if (*r == proto::RecvState::Closed) {
        why = "remote closed the connection";
    } else if (auto v = proto::validate(rx_, proto::Role::Proxy); !v.ok()) {
        why = fmt::format("invalid reply to {}: {}", proto::cmd_name(static_cast<int32_t>(cmd)),
                          v.error().message);
    } else if (rx_.size() == 0 && !allow_empty) {
        why = fmt::format("empty RET for {}", proto::cmd_name(static_cast<int32_t>(cmd)));
    }
    if (!why.empty()) {
        mark_broken(why);
        return fail("{}", reason_);
    }
    posted_pending_ = false;  // the reply came after everything sent before it
    return rx_.size() == 0 ? uint64_t{0} : rx_.as<uint64_t>();
}

Status ProxyLink::select(ProxyDevice& dev) {
    if (!(features_ & proto::kFeatMultiDev) || selected_ == &dev) return {};
    proto::SelectDevice sel{};
    const std::string& id = dev.id();
    std::memcpy(sel.id, id.data(), std::min(id.size(), sizeof sel.id));
    auto r = exchange(static_cast<Cmd>(proto::kCmdSelectDevice),
                      std::span(reinterpret_cast<const uint8_t*>(&sel), sizeof sel), false);
    if (!r.ok()) return r.take_error();
    if (*r != 0) {
        selected_ = nullptr;
        return fail("remote on {} has no device '{}'", name_, id);
    }
    selected_ = &dev;
    return {};
}

Result<uint64_t> ProxyLink::call(ProxyDevice& dev, Cmd cmd, std::span<const uint8_t> payload) {
    MPQ_TRY(select(dev));
    return exchange(cmd, payload, cmd == Cmd::DeviceReset);
}

Status ProxyLink::post_write(ProxyDevice& dev, std::span<const uint8_t> bar_access) {
    if (broken_) return fail("{}", reason_);
    if (!posts_writes()) return fail("posted writes not negotiated on {}", name_);
    MPQ_TRY(select(dev));
    if (auto st = ch_.send(proto::kCmdBarWritePosted, bar_access); !st.ok()) {
        mark_broken(st.error().message);
        return fail("{}", reason_);
    }
    posted_pending_ = true;
    ++posted_sent_;
    return {};
}

Result<uint64_t> ProxyLink::call_with_fd(ProxyDevice& dev, int32_t cmd, std::span<const uint8_t> payload,
                                         int fd) {
    MPQ_TRY(select(dev));
    return exchange(static_cast<Cmd>(cmd), payload, false, std::span<const int>(&fd, 1));
}

void ProxyLink::fence() {
    if (!posted_pending_ || broken_) return;
    // A register mirror that has published every posted write says the same
    // as a round trip would, for free.
    for (auto* d : devices_) {
        if (d->mirror_caught_up(posted_sent_)) {
            posted_pending_ = false;
            return;
        }
    }
    // Any request will do: its reply comes after the remote handled every
    // frame before it. The vendor ID of whichever device is selected.
    proto::PciConf p{0, 0, 2};
    (void)exchange(Cmd::PciCfgRead, std::span(reinterpret_cast<const uint8_t*>(&p), sizeof p), false);
}

Status ProxyLink::post(ProxyDevice& dev, Cmd cmd, std::span<const uint8_t> payload,
                       std::span<const int> fds) {
    if (broken_) return fail("{}", reason_);
    MPQ_TRY(select(dev));
    if (auto st = ch_.send(cmd, payload, fds); !st.ok()) {
        mark_broken(st.error().message);
        return fail("{}", reason_);
    }
    return {};
}

Status ProxyLink::sync_sysmem(const GuestRam& ram) {
    if (broken_) return fail("{}", reason_);
    int fd = ram.shareable_fd();
    if (fd < 0) {
        return fail("pci-proxy-dev requires fd-backed guest RAM: use -object "
                    "memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem");
    }
    const auto& regions = ram.regions();
    if (regions.size() > proto::kMaxFdsAccepted) {
        return fail("guest RAM has {} regions; the protocol carries at most {}", regions.size(),
                    proto::kMaxFdsAccepted);
    }
    bool same = table_sent_ && regions.size() == sent_table_.size();
    for (size_t i = 0; same && i < regions.size(); ++i) {
        same = regions[i].gpa == sent_table_[i].gpa && regions[i].size == sent_table_[i].size &&
               regions[i].offset == sent_table_[i].offset;
    }
    if (same) return {};
    proto::SyncSysmem m{};
    int fds[proto::kMaxFdsAccepted];
    for (size_t i = 0; i < regions.size(); ++i) {
        m.gpa[i] = regions[i].gpa;
        m.size[i] = regions[i].size;
        m.offset[i] = static_cast<int64_t>(regions[i].offset);
        fds[i] = fd;  // one fd per entry, repeated for the same backend (as stock)
    }
    if (auto st = ch_.send(Cmd::SyncSysmem, std::span(reinterpret_cast<const uint8_t*>(&m), sizeof m),
                           std::span<const int>(fds, regions.size()));
        !st.ok()) {
        mark_broken(st.error().message);
        return fail("{}", reason_);
    }
    sent_table_ = regions;
    table_sent_ = true;
    return {};
}

Status ProxyLink::setup(const GuestRam& ram) {
    if (setup_done_) return broken_ ? Status(fail("{}", reason_)) : Status();
    setup_done_ = true;
    MPQ_TRY(sync_sysmem(ram));
    // MPQEXT probe: a BAR_READ of size 0, which a stock remote answers with
    // all-ones (invalid size) and survives. Sent before any device-addressed
    // frame so that, with MULTIDEV, SELECT_DEVICE can precede SET_IRQFD.
    proto::BarAccess probe{};
    probe.addr = proto::kExtProbeAddr;
    probe.val = offer_;
    probe.size = 0;
    probe.memory = 0;
    auto r = exchange(Cmd::BarRead, std::span(reinterpret_cast<const uint8_t*>(&probe), sizeof probe),
                      false);
    if (!r.ok()) return r.take_error();
    if ((*r & proto::kExtReplyMagicMask) == proto::kExtReplyMagic) {
        negotiated_ = true;
        features_ = *r & proto::kExtFeatureMask & offer_;
        MPQ_TRACE(mpq_proxy_ext_negotiated, name_.c_str(), offer_, features_);
    } else {
        MPQ_TRACE(mpq_proxy_ext_none, name_.c_str());
    }
    return {};
}

}  // namespace mpq::vmm
