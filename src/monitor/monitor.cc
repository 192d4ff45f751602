#include "monitor/monitor.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <cstring>

#include "trace/trace.h"
#include "util/log.h"

namespace mpq::monitor {

struct Monitors::Client {
    UniqueFd fd;             // the socket, or stdin for stdio
    int out_fd = -1;         // == fd for sockets; stdout for stdio
    bool socket = true;
    bool write_armed = false;
    uint32_t key = 0;         // 0: not kept (stdio, or no keeper)
    bool kept_negotiated = false;
    bool dead = false;
    std::string out;         // queued output, from out_off on
    size_t out_off = 0;
    std::unique_ptr<QmpSession> qmp;
    std::unique_ptr<HmpSession> hmp;
    // Descriptors the client passed with its messages (SCM_RIGHTS), oldest
    // first, for add-fd / getfd; bounded, the oldest is closed beyond that.
    std::deque<UniqueFd> fds;
    static constexpr size_t kMaxPendingFds = 8;
    size_t pending() const { return out.size() - out_off; }
};

struct Monitors::Chardev {
    MonitorSpec spec;
    uint32_t index = 0;  // position among the process's monitors (SocketKeeper)
    UniqueFd listen;
    std::vector<std::unique_ptr<Client>> clients;
    bool unlink_on_exit = false;
};

namespace {

Status set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return fail_errno(errno, "fcntl(O_NONBLOCK): {}", std::strerror(errno));
    return {};
}

Result<UniqueFd> open_unix(ChardevSpec& spec, bool& unlink_on_exit) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (spec.path.size() >= sizeof(sa.sun_path)) return fail("socket path too long: {}", spec.path);
    std::memcpy(sa.sun_path, spec.path.data(), spec.path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_errno(errno, "socket: {}", std::strerror(errno));
    if (spec.server == ServerMode::Client) {
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0)
            return fail_errno(errno, "Failed to connect to '{}': {}", spec.path, std::strerror(errno));
        MPQ_TRY(set_nonblock(fd.get()));
        return fd;
    }
    // A stale socket from an earlier run is replaced, as QEMU does; any
    // other kind of file is left alone.
    struct stat st {};
    if (::lstat(spec.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(spec.path.c_str());
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0)
        return fail_errno(errno, "Failed to bind socket to {}: {}", spec.path, std::strerror(errno));
    unlink_on_exit = true;
    if (::listen(fd.get(), 8) < 0)
        return fail_errno(errno, "listen({}): {}", spec.path, std::strerror(errno));
    MPQ_TRY(set_nonblock(fd.get()));
    return fd;
}

Result<UniqueFd> open_tcp(ChardevSpec& spec) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = spec.server == ServerMode::Server ? AI_PASSIVE : 0;
    std::string host = spec.host.empty() ? "127.0.0.1" : spec.host;
    std::string port = std::to_string(spec.port);
    addrinfo* res = nullptr;
    int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) return fail("address resolution failed for {}:{}: {}", host, port, gai_strerror(rc));
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, freeaddrinfo);
    std::string last_err = "no address";
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) continue;
        if (spec.server == ServerMode::Client) {
            if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
                last_err = std::strerror(errno);
                continue;
            }
            MPQ_TRY(set_nonblock(fd.get()));
            return fd;
        }
        int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd.get(), 8) < 0) {
            last_err = std::strerror(errno);
            continue;
        }
        sockaddr_storage ss{};
        socklen_t len = sizeof(ss);
        if (spec.port == 0 && ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
            if (ss.ss_family == AF_INET)
                spec.port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
            else if (ss.ss_family == AF_INET6)
                spec.port = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
        }
        MPQ_TRY(set_nonblock(fd.get()));
        return fd;
    }
    return fail("Failed to {} {}:{}: {}", spec.server == ServerMode::Server ? "listen on" : "connect to",
                host, port, last_err);
}

Json timestamp_now() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return Json{{"seconds", static_cast<int64_t>(ts.tv_sec)},
                {"microseconds", static_cast<int64_t>(ts.tv_nsec / 1000)}};
}

}  // namespace

Monitors::Monitors(EventLoop& loop, MachineView& view, UnlinkAtExit unlink)
    : loop_(loop), view_(view), hmp_(qmp_, view.role()), env_{view, *this, {}, {}, {}},
      alive_(std::make_shared<bool>(true)), unlink_at_exit_(unlink) {
    env_.monitor_chardevs = [this] { return chardevs(); };
    env_.defer = [this](std::function<void()> cb) {
        std::weak_ptr<bool> alive = alive_;
        loop_.defer([alive, cb = std::move(cb)] {
            if (alive.lock()) cb();
        });
    };
    env_.run_hmp = [this](const std::string& line) { return run_hmp(line); };
    register_commands(qmp_, env_);
}

Monitors::~Monitors() {
    flush();
    if (poll_timer_) loop_.cancel_timer(poll_timer_);
    for (auto& cd : chardevs_) {
        for (auto& c : cd->clients) {
            loop_.remove_fd(c->fd.get());
            if (!c->socket) {
                if (c->write_armed) loop_.remove_fd(c->out_fd);
                (void)c->fd.release();  // never close the process's stdin
            }
        }
        if (cd->listen) loop_.remove_fd(cd->listen.get());
        // A kept listener lives on in the successor: its path stays.
        if (cd->unlink_on_exit && unlink_at_exit_ == UnlinkAtExit::Yes && !keeper_.active())
            ::unlink(cd->spec.chardev.path.c_str());
    }
    alive_.reset();
}

Status Monitors::start(MonitorOptions& opts) {
    MPQ_TRY(opts.finish());
    uint32_t index = 0;
    for (const auto& m : opts.monitors()) MPQ_TRY(add_at(m, index++));
    return {};
}

Status Monitors::add(const MonitorSpec& spec) { return add_at(spec, static_cast<uint32_t>(chardevs_.size())); }

Status Monitors::add_at(const MonitorSpec& spec, uint32_t index) {
    auto cd = std::make_unique<Chardev>();
    cd->spec = spec;
    cd->index = index;
    ChardevSpec& cs = cd->spec.chardev;
    Chardev* raw = cd.get();
    switch (cs.kind) {
    case ChardevKind::Null: return {};
    case ChardevKind::Stdio: {
        chardevs_.push_back(std::move(cd));
        MPQ_TRY(set_nonblock(STDIN_FILENO));
        attach_client(*raw, UniqueFd(STDIN_FILENO), STDOUT_FILENO, false);
        break;
    }
    case ChardevKind::Unix:
    case ChardevKind::Tcp: {
        // A predecessor's sockets, when there was one: the same listener
        // (no new bind, no wait=on) and the clients it was serving.
        std::vector<SocketKeeper::Kept> kept;
        UniqueFd kept_listener;
        if (keeper_.active()) {
            kept = keeper_.take_clients(index);
            kept_listener = keeper_.take_listener(index);
        }
        const bool resumed = kept_listener || (cs.server == ServerMode::Client && !kept.empty());
        for (const auto& k : kept) next_key_ = std::max(next_key_, k.key + 1);
        chardevs_.push_back(std::move(cd));
        for (auto& k : kept) {
            int out = k.fd.get();
            attach_client(*raw, std::move(k.fd), out, true, Arrival::Resumed, k.key, k.negotiated);
        }
        if (resumed) {
            if (cs.server == ServerMode::Client) break;
            raw->listen = std::move(kept_listener);
        } else {
            auto fd = cs.kind == ChardevKind::Unix ? open_unix(cs, raw->unlink_on_exit) : open_tcp(cs);
            if (!fd) {
                Error e = fail("chardev '{}': {}", cs.id, fd.error().message);
                chardevs_.pop_back();  // `cs` and `raw` with it
                return e;
            }
            if (cs.server == ServerMode::Client) {
                int out = fd->get();
                attach_client(*raw, std::move(*fd), out, true);
                break;
            }
            raw->listen = std::move(*fd);
            if (keeper_.active()) keeper_.keep_listener(index, raw->listen.get());
        }
        if (!resumed && cs.wait == WaitMode::Wait) {
            log::info("waiting for connection on: {}", cs.describe());
            pollfd p{raw->listen.get(), POLLIN, 0};
            while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
            }
            accept_clients(*raw);
        }
        if (!loop_.add_fd(raw->listen.get(), FdEvents::Read,
                          [this, raw](uint32_t) { accept_clients(*raw); }))
            return fail("chardev '{}': cannot watch the listening socket", cs.id);
        break;
    }
    }
    if (spec.mode == MonitorMode::Qmp && !poll_timer_) {
        for (const auto& b : view_.block_devices())
            err_snap_.push_back({b.device, b.stats.failed_rd_ops, b.stats.failed_wr_ops,
                                 b.stats.failed_flush_ops});
        arm_poll();
    }
    return {};
}

void Monitors::accept_clients(Chardev& cd) {
    for (int i = 0; i < 16; ++i) {
        UniqueFd fd(::accept4(cd.listen.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log::warn("monitor {}: accept: {}", cd.spec.chardev.id, std::strerror(errno));
            return;
        }
        size_t live = std::count_if(cd.clients.begin(), cd.clients.end(),
                                    [](const auto& c) { return !c->dead; });
        if (live >= kMaxClientsPerChardev) {
            log::warn("monitor {}: too many clients, refusing one", cd.spec.chardev.id);
            continue;  // closes it
        }
        int out = fd.get();
        attach_client(cd, std::move(fd), out, true);
    }
}

void Monitors::attach_client(Chardev& cd, UniqueFd in, int out_fd, bool own_out, Arrival arrival,
                             uint32_t key, bool negotiated) {
    auto c = std::make_unique<Client>();
    Client* raw = c.get();
    c->fd = std::move(in);
    c->out_fd = out_fd;
    c->socket = own_out;
    c->key = key;
    c->kept_negotiated = negotiated;
    Chardev* cdp = &cd;
    auto writer = [this, cdp, raw](std::string_view bytes) { queue(*cdp, *raw, bytes); };
    if (cd.spec.mode == MonitorMode::Qmp)
        c->qmp = std::make_unique<QmpSession>(qmp_, cd.spec.pretty, writer);
    else
        c->hmp = std::make_unique<HmpSession>(hmp_, own_out ? Echo::On : Echo::Off, writer);
    if (!loop_.add_fd(raw->fd.get(), FdEvents::Read,
                      [this, cdp, raw](uint32_t ev) { on_client_io(*cdp, *raw, ev); })) {
        log::warn("monitor {}: cannot watch a client", cd.spec.chardev.id);
        if (!own_out) (void)c->fd.release();
        return;
    }
    cd.clients.push_back(std::move(c));
    if (arrival == Arrival::Resumed) {
        // Greeted by the predecessor: carries on where that one left off
        // (a command it was running when it died gets no answer).
        if (raw->qmp) raw->qmp->resume(negotiated);
        return;
    }
    // Kept before it is served: a successor finds every client that could
    // have seen an answer from this process.
    if (keeper_.active() && own_out) {
        raw->key = next_key_++;
        keeper_.keep_client(cd.index, raw->key, raw->fd.get(), false);
    }
    if (raw->qmp) raw->qmp->start();
    else raw->hmp->start();
}

void Monitors::on_client_io(Chardev& cd, Client& c, uint32_t events) {
    if (c.dead) return;
    if (c.socket && (events & EPOLLOUT)) {
        try_write(c);
        if (c.dead) return;
        update_interest(c);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    char buf[4096];
    ssize_t n;
    if (c.socket) {
        // A QMP client may pass fds (add-fd, getfd) with its bytes.
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 4)];
        iovec iov{buf, sizeof(buf)};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof(ctl);
        n = ::recvmsg(c.fd.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n >= 0) {
            for (cmsghdr* h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
                if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
                size_t count = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < count; ++i) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
                    c.fds.emplace_back(fd);
                    if (c.fds.size() > Client::kMaxPendingFds) c.fds.pop_front();
                }
            }
            if (msg.msg_flags & MSG_CTRUNC) log::warn("monitor {}: too many fds in one message; extra ones dropped",
                                                     cd.spec.chardev.id);
        }
    } else {
        n = ::read(c.fd.get(), buf, sizeof(buf));
    }
    if (n == 0) {
        drop(cd, c);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) drop(cd, c);
        return;
    }
    std::string_view data(buf, static_cast<size_t>(n));
    // Commands run inside feed(): add-fd takes this client's fds.
    Client* cp = &c;
    env_.take_fd = [cp]() {
        if (cp->fds.empty()) return UniqueFd();
        UniqueFd f = std::move(cp->fds.front());
        cp->fds.pop_front();
        return f;
    };
    bool keep = c.qmp ? c.qmp->feed(data) : c.hmp->feed(data);
    env_.take_fd = nullptr;
    if (c.key && c.qmp && c.qmp->negotiated() != c.kept_negotiated) {
        c.kept_negotiated = c.qmp->negotiated();
        keeper_.keep_client(cd.index, c.key, -1, c.kept_negotiated);
    }
    if (!keep) {
        log::warn("monitor {}: client sent oversized input, dropped", cd.spec.chardev.id);
        try_write(c);
        drop(cd, c);
    }
}

void Monitors::queue(Chardev& cd, Client& c, std::string_view bytes) {
    if (c.dead) return;
    c.out.append(bytes);
    try_write(c);
    if (c.dead) {
        drop(cd, c);
        return;
    }
    if (c.pending() > kMaxPendingOutput) {
        log::warn("monitor {}: client does not read its output, dropped", cd.spec.chardev.id);
        drop(cd, c);
        return;
    }
    update_interest(c);
}

void Monitors::try_write(Client& c) {
    while (c.pending() > 0) {
        const char* p = c.out.data() + c.out_off;
        ssize_t n = c.socket ? ::send(c.out_fd, p, c.pending(), MSG_NOSIGNAL | MSG_DONTWAIT)
                             : ::write(c.out_fd, p, c.pending());
        if (n > 0) {
            c.out_off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        c.dead = true;  // the peer is gone; the caller drops it
        break;
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    } else if (c.out_off > (64u << 10) && c.out_off > c.out.size() / 2) {
        c.out.erase(0, c.out_off);
        c.out_off = 0;
    }
}

void Monitors::update_interest(Client& c) {
    bool want = c.pending() > 0;
    if (want == c.write_armed) return;
    c.write_armed = want;
    if (c.socket) {
        loop_.modify_fd(c.fd.get(), want ? FdEvents::ReadWrite : FdEvents::Read);
        return;
    }
    if (want) {
        Client* raw = &c;
        loop_.add_fd(c.out_fd, FdEvents::Write, [this, raw](uint32_t) {
            if (raw->dead) return;
            try_write(*raw);
            if (!raw->dead) update_interest(*raw);
        });
    } else {
        loop_.remove_fd(c.out_fd);
    }
}

void Monitors::drop(Chardev&, Client& c) {
    c.dead = true;
    if (reap_pending_) return;
    reap_pending_ = true;
    std::weak_ptr<bool> alive = alive_;
    // Handlers may be running for this client: remove it after they return.
    loop_.defer([this, alive] {
        if (alive.lock()) reap();
    });
}

void Monitors::reap() {
    reap_pending_ = false;
    for (auto& cd : chardevs_) {
        auto& v = cd->clients;
        for (auto& c : v) {
            if (!c->dead) continue;
            loop_.remove_fd(c->fd.get());
            if (c->key) keeper_.forget_client(cd->index, c->key);
            if (!c->socket) {
                if (c->write_armed) loop_.remove_fd(c->out_fd);
                (void)c->fd.release();
            }
        }
        v.erase(std::remove_if(v.begin(), v.end(), [](const auto& c) { return c->dead; }), v.end());
    }
}

size_t Monitors::client_count() const {
    size_t n = 0;
    for (const auto& cd : chardevs_)
        for (const auto& c : cd->clients) n += c->dead ? 0 : 1;
    return n;
}

void Monitors::flush() {
    for (auto& cd : chardevs_) {
        for (auto& c : cd->clients) {
            // Bounded: a peer that does not read gets at most ~0.5 s in total.
            for (int round = 0; round < 10 && !c->dead && c->pending() > 0; ++round) {
                try_write(*c);
                if (c->pending() == 0 || c->dead) break;
                pollfd p{c->out_fd, POLLOUT, 0};
                ::poll(&p, 1, 50);
            }
        }
    }
}

std::vector<ChardevInfo> Monitors::chardevs() const {
    std::vector<ChardevInfo> out;
    for (const auto& cd : chardevs_) {
        const ChardevSpec& cs = cd->spec.chardev;
        bool connected = std::any_of(cd->clients.begin(), cd->clients.end(),
                                     [](const auto& c) { return !c->dead; });
        std::string desc = cs.describe();
        if (cs.kind != ChardevKind::Stdio && !connected) desc = "disconnected:" + desc;
        out.push_back(ChardevInfo{cs.id, desc, true});
    }
    return out;
}

void Monitors::emit(std::string_view event, Json data) {
    MPQ_TRACE(mpq_monitor_event, std::string(event).c_str());
    Json ev = Json::object();
    ev["timestamp"] = timestamp_now();
    ev["event"] = event;
    if (!data.is_null()) ev["data"] = std::move(data);
    for (auto& cd : chardevs_) {
        if (cd->spec.mode != MonitorMode::Qmp) continue;
        // Index loop: a send may drop a client but never erases from `clients` here.
        for (size_t i = 0; i < cd->clients.size(); ++i) {
            Client& c = *cd->clients[i];
            if (!c.dead && c.qmp) c.qmp->send_event(ev);
        }
    }
}

void Monitors::shutdown_event(std::string_view reason, bool guest) {
    emit(kEventShutdown, Json{{"guest", guest}, {"reason", reason}});
}

void Monitors::reset_event(std::string_view reason, bool guest) {
    emit(kEventReset, Json{{"guest", guest}, {"reason", reason}});
}

void Monitors::remote_disconnected(std::string_view device_id, std::string_view reason) {
    emit(kEventRemoteDisconnected, Json{{"id", device_id}, {"reason", reason}});
}

void Monitors::block_io_error(std::string_view device, std::string_view node, std::string_view op,
                              std::string_view reason) {
    emit(kEventBlockIoError, Json{{"device", device},
                                  {"node-name", node},
                                  {"operation", op},
                                  {"action", "report"},
                                  {"nospace", false},
                                  {"reason", reason}});
}

void Monitors::arm_poll() {
    std::weak_ptr<bool> alive = alive_;
    poll_timer_ = loop_.add_timer(kIoErrorPollNs, [this, alive] {
        if (!alive.lock()) return;
        poll_timer_ = 0;
        poll_io_errors();
        arm_poll();
    });
}

void Monitors::poll_io_errors() {
    // Only worth the work while someone can receive the events.
    bool listener = false;
    for (const auto& cd : chardevs_)
        for (const auto& c : cd->clients) listener = listener || (!c->dead && c->qmp && c->qmp->negotiated());
    auto devs = view_.block_devices();
    for (const auto& b : devs) {
        auto it = std::find_if(err_snap_.begin(), err_snap_.end(),
                               [&](const ErrSnapshot& s) { return s.device == b.device; });
        if (it == err_snap_.end()) {
            err_snap_.push_back({b.device, b.stats.failed_rd_ops, b.stats.failed_wr_ops,
                                 b.stats.failed_flush_ops});
            continue;
        }
        if (listener) {
            // One event per failed request, bounded per round.
            uint64_t rd = std::min<uint64_t>(b.stats.failed_rd_ops - it->rd, 16);
            uint64_t wr = std::min<uint64_t>(b.stats.failed_wr_ops + b.stats.failed_flush_ops -
                                                 it->wr - it->flush, 16);
            if (b.stats.failed_rd_ops < it->rd) rd = 0;
            if (b.stats.failed_wr_ops + b.stats.failed_flush_ops < it->wr + it->flush) wr = 0;
            for (uint64_t i = 0; i < rd; ++i)
                block_io_error(b.device, b.node_name, "read", "Input/output error");
            for (uint64_t i = 0; i < wr; ++i)
                block_io_error(b.device, b.node_name, "write", "Input/output error");
        }
        it->rd = b.stats.failed_rd_ops;
        it->wr = b.stats.failed_wr_ops;
        it->flush = b.stats.failed_flush_ops;
    }
}

}  // namespace mpq::monitor
