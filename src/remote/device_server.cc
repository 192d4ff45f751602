#include "remote/device_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

#include "util/event_loop.h"
#include "util/log.h"

namespace mpq::remote {

namespace {

// Frames served per wake-up before the loop runs other work (other
// connections, block completions, timers).
constexpr int kMaxFramesPerWakeup = 64;
// A peer whose socket buffer is full of unread replies gets this long before
// it is dropped (it would otherwise stall every other connection).
constexpr int kSendTimeoutMs = 10000;

}  // namespace

struct DeviceServer::Conn {
    Conn(std::string name, std::vector<ServedDevice> devices, GuestMemory& memory, ServerStats& stats)
        : session(std::move(name), std::move(devices), memory, stats) {
        out.reserve(kMaxFramesPerWakeup * (sizeof(proto::Header) + 8));
    }
    WireSession session;
    std::unique_ptr<ConnTransport> io;
    std::vector<uint8_t> out;  // encoded replies not yet handed to the transport
};

DeviceServer::DeviceServer(EventLoop& loop, GuestMemory& memory, OnIdle on_idle)
    : loop_(loop), memory_(memory), on_idle_(std::move(on_idle)) {}

DeviceServer::~DeviceServer() {
    if (round_hooks_) loop_.set_round_hooks({}, {});
    conns_.clear();  // transports stop watching their sockets
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

    int fd = sock.get();
    std::string name = fmt::format("{} (fd {})", devices[0].id, fd);
    auto c = std::make_unique<Conn>(name, std::move(devices), memory_, stats_);
    c->io = loop_.ring_enabled() ? make_ring_transport(loop_, std::move(sock), name)
                                 : make_syscall_transport(loop_, std::move(sock), kSendTimeoutMs);
    Conn* raw = c.get();
    ConnTransport::Handlers h;
    h.input = [this, raw] { serve(*raw); };
    h.ended = [this, raw](ConnTransport::End e, const std::string& why) { ended(*raw, e, why); };
    if (!raw->io->start(std::move(h))) {
        if (loop_.ring_enabled()) return fail("fd {}: cannot queue a receive in the loop's ring", fd);
        return fail("fd {}: cannot watch it", fd);
    }
    conns_.push_back(std::move(c));
    return {};
}

void DeviceServer::serve(Conn& c) {
    for (int i = 0; i < kMaxFramesPerWakeup; i++) {
        auto r = c.io->next(frame_);
        if (!r.ok()) {
            // A peer that dies with our replies still unread (a killed VMM)
            // resets the socket: that is the proxy going away, not bad input.
            if (r.error().err == ECONNRESET) return ended(c, ConnTransport::End::Orderly, "peer went away (connection reset)");
            return ended(c, ConnTransport::End::Error, r.error().message);
        }
        switch (*r) {
        case proto::RecvState::WouldBlock:
            if (!c.io->wait()) ended(c, ConnTransport::End::Error, "cannot queue a receive in the loop's ring");
            return;
        case proto::RecvState::Closed:
            return ended(c, ConnTransport::End::Orderly, "peer closed the connection");
        case proto::RecvState::Frame:
            break;
        }
        c.session.handle(frame_, c.out);
        frame_.close_fds();  // whatever the handler did not take
        if (!c.out.empty()) {
            if (auto st = c.io->send(c.out); !st.ok()) {
                // A proxy that died with our reply on its way (EPIPE,
                // ECONNRESET) is the VM going away, anything else an error.
                int e = st.error().err;
                if (e == EPIPE || e == ECONNRESET) {
                    log::info("{}: peer went away before our reply", c.session.name());
                    return drop(c, true);
                }
                log::error("{}: {}", c.session.name(), st.error().message);
                return drop(c, false);
            }
        }
        if (c.session.has_mirrors() && !round_hooks_) install_round_hooks();
        // A peer that waits for our reply has sent nothing more, so probing
        // the socket again would only cost an EAGAIN recvmsg; a pipelining
        // peer brings us straight back unless its next frames are buffered
        // already. Frames without a reply (SYNC_SYSMEM, SET_IRQFD, posted
        // writes) are drained right away.
        if (proto::reply_due(frame_.cmd()) && !c.io->frame_ready()) {
            if (!c.io->wait()) ended(c, ConnTransport::End::Error, "cannot queue a receive in the loop's ring");
            return;
        }
    }
    // Out of budget: the rest after the other work of this round. Frames
    // already buffered would not be reported again (the socket may be empty).
    if (c.io->frame_ready()) {
        Conn* raw = &c;
        loop_.defer([this, raw] {
            for (auto& p : conns_)
                if (p.get() == raw) return serve(*raw);
        });
    } else if (!c.io->wait()) {
        ended(c, ConnTransport::End::Error, "cannot queue a receive in the loop's ring");
    }
}

void DeviceServer::ended(Conn& c, ConnTransport::End end, const std::string& why) {
    if (end == ConnTransport::End::Orderly) {
        log::info("{}: {}", c.session.name(), why);
        drop(c, true);
    } else {
        log::error("{}: {}; dropping the connection", c.session.name(), why);
        drop(c, false);
    }
}

void DeviceServer::drop(Conn& c, bool orderly) {
    auto it = std::find_if(conns_.begin(), conns_.end(), [&](auto& p) { return p.get() == &c; });
    if (it != conns_.end()) conns_.erase(it);  // destroys c and its transport
    if (conns_.empty() && on_idle_) on_idle_(orderly);
}

// REG_MIRROR: a round of the loop is where devices change, so its two ends
// are where every mirror goes odd and is published again.
void DeviceServer::install_round_hooks() {
    round_hooks_ = true;
    loop_.set_round_hooks(
        [this] {
            for (auto& c : conns_) c->session.mirrors_begin();
        },
        [this] {
            for (auto& c : conns_) c->session.mirrors_publish();
        });
}

}  // namespace mpq::remote
