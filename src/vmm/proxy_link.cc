#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

#include "trace/trace.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "vmm/proxy.h"

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
    l->io_ = make_link_transport(std::move(sock), io, reply_timeout_ms, poll_us);
    l->session_ = LinkSession(offer);
    l->name_ = std::move(name);
    l->timeout_ms_ = reply_timeout_ms;
    return l;
}

ProxyLink::~ProxyLink() {
    *alive_ = false;
    if (loop_) loop_->remove_fd(io_->fd());
}

void ProxyLink::watch(EventLoop& loop) {
    if (loop_ || broken_) return;
    if (loop.add_fd(io_->fd(), FdEvents::Read, [this](uint32_t ev) { on_idle_event(ev); })) loop_ = &loop;
}

void ProxyLink::on_idle_event(uint32_t events) {
    // Requests are synchronous and their replies are read inside call(), so
    // the socket is only readable here if the remote sent something on its
    // own, closed it, or failed.
    char c;
    ssize_t n = ::recv(io_->fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(events & (EPOLLHUP | EPOLLERR))) return;
    mark_broken(n > 0 ? "unsolicited data from the remote" : "remote closed the connection");
}

void ProxyLink::detach(ProxyDevice* dev) {
    std::erase(devices_, dev);
    session_.forget(dev);
}

void ProxyLink::mark_broken(const std::string& reason) {
    if (broken_) return;
    broken_ = true;
    reason_ = reason;
    if (loop_) {
        loop_->remove_fd(io_->fd());
        loop_ = nullptr;
    }
    // The stream may be mid-frame or hold a late reply: nothing more is sent
    // on it, but the socket stays open so the remote does not see an EOF
    // it would mistake for an orderly shutdown of the VM.
    auto devs = devices_;
    for (auto* d : devs) d->link_broken(reason);
}

Result<uint64_t> ProxyLink::exchange(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds) {
    if (broken_) return fail("{}", reason_);
    MPQ_TRY(flush_held());
    if (auto st = io_->exchange(cmd, payload, fds, rx_); !st.ok()) {
        mark_broken(st.error().message);
        return fail("{}", reason_);
    }
    auto v = session_.reply(cmd, rx_);
    // A RET carries no fds; any that came with one (refused by reply())
    // would otherwise stay open until a receive that a broken link never makes.
    rx_.close_fds();
    if (!v.ok()) {
        mark_broken(v.error().message);
        return fail("{}", reason_);
    }
    return *v;
}

Status ProxyLink::send(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds) {
    if (broken_) return fail("{}", reason_);
    MPQ_TRY(flush_held());
    if (auto st = io_->send(cmd, payload, fds); !st.ok()) {
        mark_broken(st.error().message);
        return fail("{}", reason_);
    }
    return {};
}

Status ProxyLink::select(ProxyDevice& dev) {
    auto sel = session_.select_for(&dev, dev.id());
    if (!sel) return {};
    auto r = exchange(Cmd::SelectDevice, proto::bytes_of(*sel));
    if (!r.ok()) return r.take_error();
    if (auto st = session_.select_answered(&dev, dev.id(), *r); !st.ok())
        return fail("remote on {} has {}", name_, st.error().message);
    return {};
}

Result<uint64_t> ProxyLink::call(ProxyDevice& dev, Cmd cmd, std::span<const uint8_t> payload) {
    MPQ_TRY(select(dev));
    return exchange(cmd, payload);
}

Status ProxyLink::post_write(ProxyDevice& dev, std::span<const uint8_t> bar_access) {
    if (broken_) return fail("{}", reason_);
    if (!posts_writes()) return fail("posted writes not negotiated on {}", name_);
    MPQ_TRY(select(dev));
    MPQ_TRY(send(Cmd::BarWritePosted, bar_access));
    session_.posted_write_sent();
    return {};
}

Status ProxyLink::post_read(ProxyDevice& dev, const proto::PostedRead& read) {
    if (broken_) return fail("{}", reason_);
    if (!(features() & proto::kFeatRegMirror)) return fail("register mirror not negotiated on {}", name_);
    MPQ_TRY(select(dev));
    if (!loop_) {
        MPQ_TRY(send(Cmd::BarReadPosted, proto::bytes_of(read)));
        session_.posted_write_sent();
        return {};
    }
    // Held back: sending it now would wake the remote (an IPI when it runs
    // on another CPU) before the guest has its answer, and nothing needs it
    // there sooner than the next frame, which sends it first. The proxy's
    // overlay answers for it meanwhile.
    MPQ_TRY(flush_held());
    held_read_ = read;
    session_.posted_write_sent();
    loop_->defer([this, alive = alive_] {
        if (*alive) (void)flush_held();
    });
    return {};
}

Status ProxyLink::flush_held() {
    if (!held_read_) return {};
    proto::PostedRead r = *held_read_;
    held_read_.reset();  // first: send() flushes, and finds nothing held
    return send(Cmd::BarReadPosted, proto::bytes_of(r));
}

Result<uint64_t> ProxyLink::call_with_fd(ProxyDevice& dev, Cmd cmd, std::span<const uint8_t> payload, int fd) {
    MPQ_TRY(select(dev));
    return exchange(cmd, payload, std::span<const int>(&fd, 1));
}

void ProxyLink::fence() {
    if (!session_.posted_pending() || broken_) return;
    // A register mirror that has published every posted write says the same
    // as a round trip would, for free.
    for (auto* d : devices_) {
        if (d->mirror_caught_up(session_.posted_sent())) {
            session_.posted_caught_up();
            return;
        }
    }
    auto p = LinkSession::fence_request();
    (void)exchange(Cmd::PciCfgRead, proto::bytes_of(p));
}

Status ProxyLink::post(ProxyDevice& dev, Cmd cmd, std::span<const uint8_t> payload,
                       std::span<const int> fds) {
    if (broken_) return fail("{}", reason_);
    MPQ_TRY(select(dev));
    return send(cmd, payload, fds);
}

Status ProxyLink::sync_sysmem(const GuestRam& ram) {
    if (broken_) return fail("{}", reason_);
    int fd = ram.shareable_fd();
    if (fd < 0) {
        return fail("pci-proxy-dev requires fd-backed guest RAM: use -object "
                    "memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem");
    }
    const auto& regions = ram.regions();
    auto m = session_.sysmem_update(regions);
    if (!m.ok()) return m.take_error();
    if (!*m) return {};
    int fds[proto::kMaxFdsAccepted];
    for (size_t i = 0; i < regions.size(); ++i) fds[i] = fd;  // one fd per entry, repeated for the same backend (as stock)
    MPQ_TRY(send(Cmd::SyncSysmem, proto::bytes_of(**m), std::span<const int>(fds, regions.size())));
    session_.sysmem_sent(regions);
    return {};
}

Status ProxyLink::setup(const GuestRam& ram) {
    if (setup_done_) return broken_ ? Status(fail("{}", reason_)) : Status();
    setup_done_ = true;
    MPQ_TRY(sync_sysmem(ram));
    // The MPQEXT probe, sent before any device-addressed frame so that, with
    // MULTIDEV, SELECT_DEVICE can precede SET_IRQFD.
    auto probe = session_.probe();
    auto r = exchange(Cmd::BarRead, proto::bytes_of(probe));
    if (!r.ok()) return r.take_error();
    session_.probe_answered(*r);
    if (session_.negotiated()) MPQ_TRACE(mpq_proxy_ext_negotiated, name_.c_str(), probe.val, session_.features());
    else MPQ_TRACE(mpq_proxy_ext_none, name_.c_str());
    return {};
}

}  // namespace mpq::vmm
