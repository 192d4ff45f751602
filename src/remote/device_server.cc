#include "remote/device_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "pci/pci_device.h"
#include "remote/reg_mirror.h"
#include "trace/trace.h"
#include "util/event_loop.h"
#include "util/log.h"

namespace mpq::remote {

using proto::Cmd;
using proto::Frame;
using proto::kAllOnes;

namespace {

constexpr int kMaxFramesPerWakeup = 64;  // then let other fds run (epoll is level-triggered)
constexpr uint64_t kLogBurst = 50;       // bad-frame lines logged before thinning out
constexpr uint64_t kLogEvery = 1000;
// A peer whose socket buffer is full of unread replies gets this long before
// it is dropped (it would otherwise stall every other connection).
constexpr int kSendTimeoutMs = 10000;

constexpr int32_t cmd_of(Cmd c) { return static_cast<int32_t>(c); }

uint64_t mask_to(uint64_t v, unsigned size) {
    return size >= 8 ? v : (v & ((uint64_t{1} << (8 * size)) - 1));
}

bool valid_access_size(uint32_t s) { return s == 1 || s == 2 || s == 4 || s == 8; }

// A device id from the wire, safe to print.
std::string printable(const char* p, size_t n) {
    std::string s;
    for (size_t i = 0; i < n && p[i]; i++) {
        unsigned char ch = static_cast<unsigned char>(p[i]);
        if (ch >= 0x20 && ch < 0x7f) s.push_back(static_cast<char>(ch));
        else s += fmt::format("\\x{:02x}", ch);
    }
    return s;
}

// Requests that expect a RET whatever happens.
bool reply_due(int32_t cmd) {
    switch (cmd) {
    case cmd_of(Cmd::PciCfgRead):
    case cmd_of(Cmd::PciCfgWrite):
    case cmd_of(Cmd::BarRead):
    case cmd_of(Cmd::BarWrite):
    case cmd_of(Cmd::DeviceReset):
    case proto::kCmdSelectDevice:
    case proto::kCmdMirrorSetup:
        return true;
    default:
        return false;
    }
}

}  // namespace

struct DeviceServer::Conn {
    proto::Channel ch;
    std::shared_ptr<RingIo> ring;  // ring mode only
    std::vector<ServedDevice> devices;
    size_t selected = 0;
    uint64_t features = 0;
    uint64_t bad_frames = 0;
    bool broken = false;      // a reply could not be sent
    bool peer_gone = false;   // ... because the proxy had gone away (an orderly end)
    uint64_t posted_done = 0;  // BAR_WRITE_POSTED frames handled, valid or not (REG_MIRROR)
    std::vector<std::unique_ptr<RegMirror>> mirrors;  // by device index, empty without REG_MIRROR

    // A failed reply send: a proxy that died with our reply on its way
    // (EPIPE, ECONNRESET) is the VM going away, anything else an error.
    void send_failed(const Status& st) {
        broken = true;
        int e = st.error().err;
        peer_gone = e == EPIPE || e == ECONNRESET;
        if (peer_gone) log::info("{}: peer went away before our reply", name);
        else log::error("{}: {}", name, st.error().message);
    }
    std::string name;     // for log lines

    ServedDevice& dev() { return devices[selected]; }
    // Logs a complaint about the peer's input, thinned out after a burst so
    // a flood cannot fill the disk.
    template <typename... Args>
    void complain(fmt::format_string<Args...> f, Args&&... args) {
        bad_frames++;
        bool logged = bad_frames <= kLogBurst || bad_frames % kLogEvery == 0;
        if (!logged && !MPQ_TRACE_ON(mpq_remote_bad_frame)) return;
        std::string msg = fmt::format(f, std::forward<Args>(args)...);
        MPQ_TRACE(mpq_remote_bad_frame, ch.fd(), msg.c_str());
        if (logged)
            log::error("{}: {}{}", name, msg,
                       bad_frames == kLogBurst ? " (further errors are logged every 1000th)" : "");
    }
};

DeviceServer::DeviceServer(EventLoop& loop, GuestMemory& memory, OnIdle on_idle)
    : loop_(loop), memory_(memory), on_idle_(std::move(on_idle)) {
    regions_.reserve(proto::kMaxFdsOnWire);
}

DeviceServer::~DeviceServer() {
    if (round_hooks_) loop_.set_round_hooks({}, {});
    for (auto& c : conns_) forget(*c);
}

Status DeviceServer::add_connection(UniqueFd sock, std::vector<ServedDevice> devices) {
    if (devices.empty()) return fail("socket fd {}: no device to serve", sock.get());
    struct stat st;
    if (::fstat(sock.get(), &st) != 0 || !S_ISSOCK(st.st_mode))
        return fail("fd {} is not a socket", sock.get());
    int type = 0;
    socklen_t tl = sizeof type;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM)
        return fail("fd {} is not a stream socket", sock.get());
    int fl = ::fcntl(sock.get(), F_GETFL);
    if (fl < 0 || ::fcntl(sock.get(), F_SETFL, fl | O_NONBLOCK) != 0)
        return fail_errno(errno, "fd {}: cannot make it non-blocking", sock.get());
    ::fcntl(sock.get(), F_SETFD, FD_CLOEXEC);

    auto c = std::make_unique<Conn>();
    c->name = fmt::format("{} (fd {})", devices[0].id, sock.get());
    c->ch = proto::Channel(std::move(sock));
    c->ch.set_send_timeout_ms(kSendTimeoutMs);
    c->devices = std::move(devices);
    Conn* raw = c.get();
    if (loop_.ring_enabled()) {
        raw->ring = make_ring_io(raw);
        if (!ring_arm_recv(*raw)) {
            forget(*raw);
            return fail("fd {}: cannot queue a receive in the loop's ring", raw->ch.fd());
        }
    } else if (!loop_.add_fd(raw->ch.fd(), FdEvents::Read, [this, raw](uint32_t) { on_readable(*raw); })) {
        return fail("fd {}: cannot watch it", raw->ch.fd());
    }
    conns_.push_back(std::move(c));
    return {};
}

void DeviceServer::on_readable(Conn& c) {
    for (int i = 0; i < kMaxFramesPerWakeup; i++) {
        auto r = c.ch.recv(frame_);
        if (!r.ok()) {
            // A peer that dies with our replies still unread (a killed VMM)
            // resets the socket: that is the proxy going away, not bad input.
            if (r.error().err == ECONNRESET) {
                log::info("{}: peer went away (connection reset)", c.name);
                drop(c, true);
                return;
            }
            log::error("{}: {}; dropping the connection", c.name, r.error().message);
            drop(c, false);
            return;
        }
        switch (*r) {
        case proto::RecvState::WouldBlock:
            return;
        case proto::RecvState::Closed:
            log::info("{}: peer closed the connection", c.name);
            drop(c, true);
            return;
        case proto::RecvState::Frame:
            break;
        }
        stats_.frames++;
        handle(c, frame_);
        frame_.close_fds();  // whatever the handler did not take
        if (c.broken) {
            drop(c, c.peer_gone);
            return;
        }
        // A peer that waits for our reply has sent nothing more, so probing
        // the socket again would only cost an EAGAIN recvmsg; a pipelining
        // peer brings us straight back (epoll is level-triggered) unless its
        // next frames are in the channel's buffer already. Frames without a
        // reply (SYNC_SYSMEM, SET_IRQFD) are drained right away.
        if (reply_due(frame_.cmd()) && !c.ch.frame_ready()) return;
    }
    // Out of budget with frames still buffered: epoll will not report them
    // (the socket may be empty), so come back after the other handlers.
    if (c.ch.frame_ready()) {
        Conn* raw = &c;
        loop_.defer([this, raw] {
            for (auto& p : conns_)
                if (p.get() == raw) return on_readable(*raw);
        });
    }
}

void DeviceServer::trace(const Conn& c, const Frame& f) {
    std::string what;
    if (f.cmd() == cmd_of(Cmd::PciCfgRead) || f.cmd() == cmd_of(Cmd::PciCfgWrite)) {
        auto p = f.as<proto::PciConf>();
        what = fmt::format(" addr={:#x} val={:#x} len={}", p.addr, p.val, p.len);
    } else if (f.cmd() == cmd_of(Cmd::BarRead) || f.cmd() == cmd_of(Cmd::BarWrite)) {
        auto b = f.as<proto::BarAccess>();
        what = fmt::format(" addr={:#x} val={:#x} size={} memory={}", b.addr, b.val, b.size, b.memory);
    } else if (f.cmd() == cmd_of(Cmd::SyncSysmem)) {
        auto s = f.as<proto::SyncSysmem>();
        for (unsigned i = 0; i < f.num_fds && i < proto::kMaxFdsOnWire; i++)
            what += fmt::format(" [gpa={:#x} size={:#x} off={:#x}]", s.gpa[i], s.size[i], s.offset[i]);
    }
    log::debug("{}: <- {} size={} fds={}{}", c.name, proto::cmd_name(f.cmd()), f.size(), f.num_fds, what);
}

bool DeviceServer::handle(Conn& c, Frame& f) {
    if (log::enabled(log::Level::Debug)) trace(c, f);
    MPQ_TRACE(mpq_remote_frame, c.ch.fd(), proto::cmd_name(f.cmd()), f.size(), f.num_fds);
    // The proxy counts every posted frame it sent; so do we, whatever its
    // fate, or its mirror reads would wait for one that never comes.
    if (f.cmd() == proto::kCmdBarWritePosted) c.posted_done++;
    auto v = proto::validate(f, proto::Role::Remote);
    if (!v.ok()) {
        stats_.bad_frames++;
        c.complain("invalid frame: {}", v.error().message);
        if (reply_due(f.cmd())) reply(c, kAllOnes);
        return true;
    }
    switch (f.cmd()) {
    case cmd_of(Cmd::PciCfgRead): do_cfg_read(c, f); break;
    case cmd_of(Cmd::PciCfgWrite): do_cfg_write(c, f); break;
    case cmd_of(Cmd::BarRead): do_bar_read(c, f); break;
    case cmd_of(Cmd::BarWrite): do_bar_write(c, f, Ack::Ret); break;
    case proto::kCmdBarWritePosted:
        if (c.features & proto::kFeatPostedWrites) do_bar_write(c, f, Ack::None);
        else c.complain("BAR_WRITE_POSTED without a negotiated POSTED_WRITES; ignored");
        break;
    case cmd_of(Cmd::SyncSysmem): do_sync_sysmem(c, f); break;
    case cmd_of(Cmd::SetIrqfd): do_set_irqfd(c, f); break;
    case cmd_of(Cmd::DeviceReset): do_device_reset(c); break;
    case proto::kCmdSelectDevice: do_select_device(c, f); break;
    case proto::kCmdMirrorSetup: do_mirror_setup(c, f); break;
    default: break;  // validate() admits nothing else
    }
    return true;
}

void DeviceServer::reply(Conn& c, uint64_t v) {
    if (log::enabled(log::Level::Debug)) log::debug("{}: -> RET {:#x}", c.name, v);
    if (c.ring) {
        ring_queue(c, proto::Header{cmd_of(Cmd::Ret), 0, sizeof v},
                   std::span(reinterpret_cast<const uint8_t*>(&v), sizeof v));
        return;
    }
    if (auto s = c.ch.send_ret(v); !s.ok()) c.send_failed(s);
}

void DeviceServer::reply_empty(Conn& c) {
    if (c.ring) {
        ring_queue(c, proto::Header{cmd_of(Cmd::Ret), 0, 0}, {});
        return;
    }
    if (auto s = c.ch.send_empty(Cmd::Ret); !s.ok()) c.send_failed(s);
}

void DeviceServer::drop(Conn& c, bool orderly) {
    forget(c);
    auto it = std::find_if(conns_.begin(), conns_.end(), [&](auto& p) { return p.get() == &c; });
    if (it != conns_.end()) conns_.erase(it);  // destroys c
    if (conns_.empty() && on_idle_) on_idle_(orderly);
}

// Config space: like single-process QEMU, any width that fits in the 256
// bytes works; everything else reads as all-ones (stock's remote would exit).
void DeviceServer::do_cfg_read(Conn& c, const Frame& f) {
    auto p = f.as<proto::PciConf>();
    if (p.len < 1 || p.len > 4 || uint64_t{p.addr} + static_cast<uint64_t>(p.len) > pci::kConfigSpaceSize) {
        c.complain("PCI_CFGREAD at {:#x} len {}: outside the {}-byte config space", p.addr, p.len,
                   pci::kConfigSpaceSize);
        reply(c, kAllOnes);
        return;
    }
    reply(c, c.dev().dev->config_read(p.addr, static_cast<unsigned>(p.len)));
}

void DeviceServer::do_cfg_write(Conn& c, const Frame& f) {
    auto p = f.as<proto::PciConf>();
    if (p.len < 1 || p.len > 4 || uint64_t{p.addr} + static_cast<uint64_t>(p.len) > pci::kConfigSpaceSize) {
        c.complain("PCI_CFGWRITE at {:#x} len {}: outside the {}-byte config space", p.addr, p.len,
                   pci::kConfigSpaceSize);
        reply(c, kAllOnes);
        return;
    }
    c.dev().dev->config_write(p.addr, p.val, static_cast<unsigned>(p.len));
    reply(c, 0);
}

void DeviceServer::do_bar_read(Conn& c, const Frame& f) {
    auto b = f.as<proto::BarAccess>();
    if (b.addr == proto::kExtProbeAddr && b.size == 0) {
        // MPQEXT negotiation (a stock remote answers all-ones here).
        c.features = b.val & proto::kSupportedFeatures & proto::kExtFeatureMask;
        MPQ_TRACE(mpq_remote_ext_negotiated, c.ch.fd(), b.val, c.features);
        log::info("{}: MPQEXT v1 negotiated, features {:#x}", c.name, c.features);
        reply(c, proto::kExtReplyMagic | c.features);
        return;
    }
    if (!valid_access_size(b.size) || b.memory > 1) {
        c.complain("BAR_READ at {:#x}: bad access size {} / space {}", b.addr, b.size, b.memory);
        reply(c, kAllOnes);
        return;
    }
    auto space = b.memory ? pci::AddressSpace::Memory : pci::AddressSpace::Io;
    auto hit = c.dev().dev->decode(space, b.addr, b.size);
    if (!hit) {
        // Unclaimed I/O ports float high without an error, as on real buses.
        if (b.memory) c.complain("BAR_READ at {:#x} size {}: no BAR decodes this memory address", b.addr, b.size);
        reply(c, kAllOnes);
        return;
    }
    reply(c, mask_to(c.dev().dev->bar_read(hit->bar, hit->offset, b.size), b.size));
}

void DeviceServer::ack(Conn& c, Ack a, uint64_t v) {
    if (a == Ack::Ret) reply(c, v);
}

void DeviceServer::do_bar_write(Conn& c, const Frame& f, Ack a) {
    auto b = f.as<proto::BarAccess>();
    if (!valid_access_size(b.size) || b.memory > 1) {
        c.complain("BAR_WRITE at {:#x}: bad access size {} / space {}", b.addr, b.size, b.memory);
        ack(c, a, kAllOnes);
        return;
    }
    auto space = b.memory ? pci::AddressSpace::Memory : pci::AddressSpace::Io;
    auto hit = c.dev().dev->decode(space, b.addr, b.size);
    if (!hit) {
        if (b.memory) {
            c.complain("BAR_WRITE at {:#x} size {}: no BAR decodes this memory address", b.addr, b.size);
            ack(c, a, kAllOnes);
        } else {
            ack(c, a, 0);  // writes to unclaimed ports are dropped
        }
        return;
    }
    c.dev().dev->bar_write(hit->bar, hit->offset, mask_to(b.val, b.size), b.size);
    ack(c, a, 0);
}

void DeviceServer::do_sync_sysmem(Conn& c, Frame& f) {
    auto s = f.as<proto::SyncSysmem>();
    regions_.clear();
    for (unsigned i = 0; i < f.num_fds; i++)
        regions_.push_back(RamRegion{s.gpa[i], s.size[i], s.offset[i], f.fds[i].get()});
    stats_.sysmem_updates++;
    auto st = memory_.set_regions(regions_);
    if (!st.ok()) c.complain("SYNC_SYSMEM: {}; no guest RAM is mapped now", st.error().message);
    // The mappings keep the memory; the frame closes the fds.
}

void DeviceServer::do_set_irqfd(Conn& c, Frame& f) {
    for (unsigned i = 0; i < 2; i++) {
        if (!proto::is_eventfd(f.fds[i].get())) {
            c.complain("SET_IRQFD: fd {} is not an eventfd; keeping the previous pair", i);
            return;
        }
    }
    c.dev().irq->set_fds(f.take_fd(0), f.take_fd(1));
}

void DeviceServer::do_device_reset(Conn& c) {
    stats_.resets++;
    log::info("{}: DEVICE_RESET of {}", c.name, c.dev().id);
    c.dev().dev->device_reset();
    reply_empty(c);
}

void DeviceServer::do_select_device(Conn& c, const Frame& f) {
    if (!(c.features & proto::kFeatMultiDev)) {
        c.complain("SELECT_DEVICE without a negotiated MULTIDEV");
        reply(c, kAllOnes);
        return;
    }
    auto sel = f.as<proto::SelectDevice>();
    size_t n = strnlen(sel.id, sizeof sel.id);
    std::string_view id(sel.id, n);
    for (size_t i = 0; i < c.devices.size(); i++) {
        if (c.devices[i].id == id) {
            c.selected = i;
            reply(c, 0);
            return;
        }
    }
    c.complain("SELECT_DEVICE: no device '{}' on this socket", printable(sel.id, n));
    reply(c, kAllOnes);
}

void DeviceServer::do_mirror_setup(Conn& c, Frame& f) {
    if (!(c.features & proto::kFeatRegMirror)) {
        c.complain("MIRROR_SETUP without a negotiated REG_MIRROR");
        reply(c, kAllOnes);
        return;
    }
    auto setup = f.as<proto::MirrorSetup>();
    if (setup.page_size != proto::kMirrorPageSize) {
        c.complain("MIRROR_SETUP: page size {}, expected {}", setup.page_size, proto::kMirrorPageSize);
        reply(c, kAllOnes);
        return;
    }
    auto m = RegMirror::attach(f.take_fd(0), *c.dev().dev, c.dev().irq);
    if (!m.ok()) {
        // Not the peer's fault when the device has no window: no complaint.
        log::info("{}: no register mirror for {}: {}", c.name, c.dev().id, m.error().message);
        reply(c, kAllOnes);
        return;
    }
    if (c.mirrors.size() != c.devices.size()) c.mirrors.resize(c.devices.size());
    c.mirrors[c.selected] = std::move(*m);  // a second page replaces the first
    if (!round_hooks_) {
        loop_.set_round_hooks([this] { mirrors_begin(); }, [this] { mirrors_publish(); });
        round_hooks_ = true;
    }
    reply(c, 0);
}

void DeviceServer::mirrors_begin() {
    for (auto& c : conns_)
        for (auto& m : c->mirrors)
            if (m) m->begin();
}

void DeviceServer::mirrors_publish() {
    for (auto& c : conns_)
        for (auto& m : c->mirrors)
            if (m) m->publish(c->posted_done);
}

// ---- Ring mode: the socket is read and written through the event loop's
// io_uring (see device_server.h). Each round of a connection is one linked
// pair in the ring: the replies to the frames just served, then a receive
// for the next request. Everything the kernel may still touch after a
// connection is gone (the replies being sent, the receive's iovec, control
// buffer and msghdr) lives in RingIo, which the receive's completion keeps
// alive.

namespace {

constexpr int kMaxFramesPerRound = 64;  // then the loop runs other work first

}  // namespace

struct DeviceServer::RingIo {
    Conn* conn = nullptr;  // null once the connection is gone
    bool pending = false;  // a send+receive pair is in the ring
    iovec iov{};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * proto::kRecvFdSpace)> ctl{};
    msghdr msg{};
    std::vector<uint8_t> sending;  // handed to the kernel with the pending pair
    std::vector<uint8_t> queued;   // replies to the frames being served
    int send_error = 0;            // errno of a failed reply send (its receive is then cancelled)
};

std::shared_ptr<DeviceServer::RingIo> DeviceServer::make_ring_io(Conn* c) {
    auto r = std::make_shared<RingIo>();
    r->conn = c;
    // Replies of a whole round (at most kMaxFramesPerRound RETs): never
    // reallocated on the register path.
    r->sending.reserve(kMaxFramesPerRound * (sizeof(proto::Header) + 8));
    r->queued.reserve(kMaxFramesPerRound * (sizeof(proto::Header) + 8));
    return r;
}

void DeviceServer::forget(Conn& c) {
    if (!c.ring) {
        loop_.remove_fd(c.ch.fd());
        return;
    }
    c.ring->conn = nullptr;
    if (c.ring->pending) loop_.ring_cancel(c.ch.fd());
}

bool DeviceServer::ring_arm_recv(Conn& c) {
    RingIo& r = *c.ring;
    std::span<uint8_t> space = c.ch.rx_space();
    if (space.empty()) return false;  // cannot happen: every whole frame was taken first
    r.iov = {space.data(), space.size()};
    r.msg = msghdr{};
    r.msg.msg_iov = &r.iov;
    r.msg.msg_iovlen = 1;
    r.msg.msg_control = r.ctl.data();
    r.msg.msg_controllen = r.ctl.size();
    r.sending.swap(r.queued);
    r.queued.clear();
    std::shared_ptr<RingIo> keep = c.ring;
    auto send_failed = [keep](int res) {
        keep->send_error = -res;
        // A proxy that died with our reply on its way is the VM going away,
        // as ECONNRESET on a receive (said in ring_received).
        if (keep->conn && res != -EPIPE && res != -ECONNRESET)
            log::error("{}: send: {}", keep->conn->name, std::strerror(-res));
        // The receive linked behind it completes with -ECANCELED and drops
        // the connection.
    };
    auto received = [this, keep](int res) {
        keep->pending = false;
        keep->sending.clear();  // the send finished before the receive began
        if (keep->conn) ring_received(*keep->conn, res);
    };
    if (!loop_.ring_send_recvmsg(c.ch.fd(), r.sending, &r.msg, send_failed, received)) return false;
    r.pending = true;
    return true;
}

void DeviceServer::ring_received(Conn& c, int res) {
    if (res < 0) {
        if (res == -EINTR || res == -EAGAIN) {
            if (!ring_arm_recv(c)) drop(c, false);
            return;
        }
        int send_error = std::exchange(c.ring->send_error, 0);
        if (res == -ECONNRESET || (res == -ECANCELED && (send_error == EPIPE || send_error == ECONNRESET))) {
            // As on_readable(): the proxy went away.
            log::info("{}: peer went away (connection reset)", c.name);
            drop(c, true);
            return;
        }
        log::error("{}: receive: {}; dropping the connection", c.name, std::strerror(-res));
        drop(c, false);
        return;
    }
    auto st = c.ch.rx_commit(static_cast<size_t>(res), c.ring->msg);
    if (!st.ok()) {
        log::error("{}: {}; dropping the connection", c.name, st.error().message);
        drop(c, false);
        return;
    }
    if (*st == proto::RecvState::Closed) {
        log::info("{}: peer closed the connection", c.name);
        drop(c, true);
        return;
    }
    ring_serve_buffered(c);
}

void DeviceServer::ring_serve_buffered(Conn& c) {
    for (int i = 0; i < kMaxFramesPerRound; i++) {
        auto r = c.ch.next_buffered(frame_);
        if (!r.ok()) {
            log::error("{}: {}; dropping the connection", c.name, r.error().message);
            drop(c, false);
            return;
        }
        if (*r != proto::RecvState::Frame) {
            // No whole frame is buffered: only now may the kernel write into
            // the receive buffer again.
            if (!ring_arm_recv(c)) {
                log::error("{}: cannot queue a receive in the loop's ring; dropping the connection", c.name);
                drop(c, false);
            }
            return;
        }
        stats_.frames++;
        handle(c, frame_);
        frame_.close_fds();
        if (c.broken) {
            drop(c, c.peer_gone);
            return;
        }
    }
    // A pipelining peer filled the buffer with frames: the rest after the
    // other work of this round.
    std::shared_ptr<RingIo> keep = c.ring;
    loop_.defer([this, keep] {
        if (keep->conn) ring_serve_buffered(*keep->conn);
    });
}

void DeviceServer::ring_queue(Conn& c, const proto::Header& h, std::span<const uint8_t> payload) {
    // Sent with the receive armed at the end of this round (ring_arm_recv).
    RingIo& r = *c.ring;
    const auto* hb = reinterpret_cast<const uint8_t*>(&h);
    r.queued.insert(r.queued.end(), hb, hb + sizeof h);
    r.queued.insert(r.queued.end(), payload.begin(), payload.end());
}

}  // namespace mpq::remote
