#include "remote/device_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

#include <csignal>

#include "remote/peek_transport.h"
#include "remote/worker.h"
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
// Batches of device work a worker's publish runs after its drain
// (publish_round), and any server before it answers a read (serve).
constexpr int kSettleBatches = 4;

}  // namespace

struct DeviceServer::Conn {
    Conn(std::string name, std::vector<ServedDevice> devices, GuestMemory& memory, ServerStats& stats)
        : session(std::move(name), std::move(devices), memory, stats) {
        out.reserve(kMaxFramesPerWakeup * (sizeof(proto::Header) + 8));
    }
    WireSession session;
    std::unique_ptr<ConnTransport> io;
    PeekTransport* peek = nullptr;  // io, in worker mode
    uint32_t index = 0;             // position among the process's sockets (stable across workers)
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
    c->index = next_index_++;
    if (worker::context()) {
        auto p = std::make_unique<PeekTransport>(loop_, std::move(sock), kSendTimeoutMs);
        c->peek = p.get();
        c->io = std::move(p);
        uint32_t conn = c->index;
        // Fds the VMM sends go to the supervisor before the worker uses
        // them: a successor finds them in its table.
        c->session.set_fd_handoff([conn](HeldFd kind, size_t dev, const proto::Frame& f) {
            worker::HandoffMsg m{};
            m.conn = conn;
            m.dev = static_cast<uint32_t>(dev);
            std::vector<int> fds;
            switch (kind) {
            case HeldFd::Sysmem: {
                m.kind = static_cast<uint32_t>(worker::HandoffKind::Sysmem);
                auto sm = f.as<proto::Payload<proto::Cmd::SyncSysmem>>();
                for (unsigned i = 0; i < f.num_fds && i < proto::kMaxFdsOnWire; i++) {
                    m.gpa[i] = sm.gpa[i];
                    m.size[i] = sm.size[i];
                    m.offset[i] = static_cast<int64_t>(sm.offset[i]);
                    fds.push_back(f.fds[i].get());
                }
                break;
            }
            case HeldFd::Irqfd:
                m.kind = static_cast<uint32_t>(worker::HandoffKind::Irqfd);
                fds = {f.fds[0].get(), f.fds[1].get()};
                break;
            case HeldFd::Mirror:
                m.kind = static_cast<uint32_t>(worker::HandoffKind::Mirror);
                fds = {f.fds[0].get()};
                break;
            }
            m.nfds = static_cast<uint32_t>(fds.size());
            if (!worker::hand_over(m, fds)) {
                // Without the supervisor nobody could carry on after us.
                log::error("worker: the supervisor is gone; exiting");
                ::_exit(1);
            }
        });
    } else {
        c->io = loop_.ring_enabled() ? make_ring_transport(loop_, std::move(sock), name)
                                     : make_syscall_transport(loop_, std::move(sock), kSendTimeoutMs);
    }
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

// Device work deferred by a frame (SCRIPTS started by a posted DSP write, a
// command whose data the page cache had at once) would otherwise run after
// this wake-up's replies have left and its register mirror was published: a
// register read that arrived with the write that started the work, or that
// found the mirror published in between, would report the device as it was
// before it, and the guest polls again. So the work runs before a read is
// answered and before the server waits for the next frame, as an in-process
// device runs its SCRIPTS inside the register write: a few batches of it at
// most, the same bound as a worker's round end.
void DeviceServer::settle() {
    int batches = 0;
    while (batches++ < kSettleBatches && loop_.run_deferred_now()) {
    }
}

// serve(c) from the loop's deferred work, if c still exists then.
void DeviceServer::defer_serve(Conn& c) {
    Conn* raw = &c;
    loop_.defer([this, raw] {
        for (auto& p : conns_)
            if (p.get() == raw) return serve(*raw);
    });
}

void DeviceServer::serve(Conn& c) {
    if (serving_) {
        // Reached from deferred work that settle() runs inside
        // another serve(): frame_ is taken, so this connection's turn comes
        // after that one's.
        return defer_serve(c);
    }
    serving_ = true;
    struct Done {
        bool& flag;
        ~Done() { flag = false; }
    } done{serving_};
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
            settle();
            if (!c.io->wait()) ended(c, ConnTransport::End::Error, "cannot queue a receive in the loop's ring");
            return;
        case proto::RecvState::Closed:
            return ended(c, ConnTransport::End::Orderly, "peer closed the connection");
        case proto::RecvState::Frame:
            break;
        }
        if (proto::reply_due(frame_.cmd())) settle();
        if (c.peek) {
            worker::Context* w = worker::context();
            uint32_t off = static_cast<uint32_t>(c.peek->last_frame_offset());
            if (w->poison_pending && w->poison_conn == c.index && w->poison_off == off) {
                w->poison_pending = false;
                answer_as_dead(c, frame_);
            } else {
                w->hdr->handling_conn.store(c.index, std::memory_order_relaxed);
                w->hdr->handling_off.store(off, std::memory_order_relaxed);
                w->hdr->handling.store(1, std::memory_order_relaxed);
                if (w->test_poison &&
                    (frame_.cmd() == proto::Cmd::BarWrite || frame_.cmd() == proto::Cmd::BarWritePosted) &&
                    frame_.as<proto::BarAccess>().val == w->test_poison_value)
                    ::raise(SIGSEGV);  // TEST ONLY: -x-test-worker-poison
                c.session.handle(frame_, c.out);
                w->hdr->handling.store(0, std::memory_order_relaxed);
            }
        } else {
            c.session.handle(frame_, c.out);
        }
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
            settle();
            if (!c.io->wait()) ended(c, ConnTransport::End::Error, "cannot queue a receive in the loop's ring");
            return;
        }
    }
    // Out of budget: the rest after the other work of this round. Frames
    // already buffered would not be reported again (the socket may be empty).
    if (c.io->frame_ready()) {
        defer_serve(c);
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
// are where every mirror goes odd and is published again. Worker mode adds
// the state publish to the round's end.
void DeviceServer::install_round_hooks() {
    round_hooks_ = true;
    loop_.set_round_hooks(
        [this] {
            for (auto& c : conns_) c->session.mirrors_begin();
        },
        [this] {
            if (capture_) return publish_round();
            for (auto& c : conns_) c->session.mirrors_publish();
        });
}

void DeviceServer::enable_publishing(Drain drain, CaptureState capture) {
    drain_ = std::move(drain);
    capture_ = std::move(capture);
    install_round_hooks();
}

// The end of a worker's round, in the order that makes a restart invisible:
//  1. the device state is captured (block I/O drained) and published with
//     the round's request bytes and replies (one store makes it current);
//  2. the request bytes are consumed from the sockets, then consumed_seq
//     says so;
//  3. sent_seq is set, THEN the replies go out (in ring mode one
//     io_uring_enter sends them and arms the next peek). Marking "sent"
//     before the send means a worker killed between the two leaves a reply
//     that was never sent recorded as sent: the VMM waits for ever on that
//     request. Marking it after would leave the opposite window, a reply
//     sent twice, which desyncs the peer's stream for good. A lost reply is
//     only possible in the few instructions between the store and the
//     syscall. The consume stays a recvmsg of its own, before the marks.
//     Linked ahead of the send in the ring, the send would be issued only
//     from the ring's deferred task work at the next wait (the ring is
//     IORING_SETUP_DEFER_TASKRUN): a worker killed before it left a reply
//     marked sent but unsent (the restart test caught it). Unlinked, both
//     would run inline in one submission, but "consumed" could then only
//     be said after the reply left, and a VMM that got the reply and sent
//     the same bytes again before the mark would see that new request
//     taken for the old one by a successor (judge_head).
// A successor (take_over) settles each connection from these marks and the
// head of its socket.
void DeviceServer::publish_round() {
    worker::Context* w = worker::context();
    uint64_t t0 = EventLoop::now_ns();
    // The state is taken with the drives drained, and their completions
    // queue device work (SCRIPTS resuming after a READ's data or a WRITE's
    // status) that would otherwise wait for another round, and another
    // publish. It runs now, in this round, a few batches at most (a device
    // that keeps deferring work gets the next round like any other); the
    // capture drains whatever the last batch started.
    drain_();
    for (int i = 0; i < kSettleBatches && loop_.run_deferred_now(); i++) drain_();
    auto blob = capture_();
    if (!blob.ok()) {
        // Carrying on unpublished would leave a successor an older state
        // than what the VMM was answered: leave now instead, with this
        // round's requests still in the socket for the successor.
        log::error("worker: cannot publish the device state: {}; leaving it to a successor", blob.error().message);
        ::_exit(70);
    }
    // After the capture: its drain may have run device work.
    for (auto& c : conns_) c->session.mirrors_publish();
    std::vector<worker::ConnJournal> js;
    js.reserve(conns_.size());
    bool any_request = false;
    for (auto& c : conns_) {
        worker::ConnJournal j;
        SessionState ss = c->session.state();
        j.features = ss.features;
        j.selected = ss.selected;
        j.posted_done = ss.posted_done;
        if (c->peek) {
            auto rq = c->peek->request_bytes();
            auto rp = c->peek->queued_replies();
            j.request.assign(rq.begin(), rq.end());
            j.replies.assign(rp.begin(), rp.end());
            any_request |= !rq.empty();
        }
        js.push_back(std::move(j));
    }
    if (auto st = worker::publish(js, *blob); !st.ok()) {
        log::error("worker: {}; leaving it to a successor", st.error().message);
        ::_exit(70);
    }
    uint64_t seq = w->hdr->seq.load(std::memory_order_relaxed);
    w->hdr->publish_ns_total.fetch_add(EventLoop::now_ns() - t0, std::memory_order_relaxed);
    w->hdr->publishes.fetch_add(1, std::memory_order_relaxed);
    if (!any_request) {
        w->hdr->consumed_seq.store(seq, std::memory_order_release);
        w->hdr->sent_seq.store(seq, std::memory_order_release);
    }
    // The request a poison verdict named was in the first round's bytes
    // (they start at the same socket head); it never applies to a later one.
    if (any_request) w->poison_pending = false;
    if (any_request && w->successor && w->died_ns && !w->first_served) {
        // What a restart costs the VMM: its first request carried out
        // (the replies follow right below).
        w->first_served = true;
        log::info("worker: first request served {} us after the predecessor's death",
                  (EventLoop::now_ns() - w->died_ns) / 1000);
    }
    if (any_request && w->test_die_at == 'p') ::raise(SIGKILL);  // TEST ONLY
    std::vector<Conn*> failed;
    for (auto& c : conns_)
        if (c->peek && !c->peek->request_bytes().empty())
            if (auto st = c->peek->consume(); !st.ok()) failed.push_back(c.get());
    if (any_request && w->test_die_at == 'c') ::raise(SIGKILL);  // TEST ONLY
    if (any_request) {
        w->hdr->consumed_seq.store(seq, std::memory_order_release);
        w->hdr->sent_seq.store(seq, std::memory_order_release);
    }
    // Before a live update the replies must be out before the loop ends;
    // otherwise the ring may carry them (submitted now, with the next peek).
    const auto how = w->leave_after_publish ? PeekTransport::Flush::Now : PeekTransport::Flush::Queued;
    for (auto& c : conns_) {
        if (!c->peek) continue;
        if (auto st = c->peek->flush(how); !st.ok()) failed.push_back(c.get());
    }
    if (w->leave_after_publish) {
        // Live update: everything of this round is published, consumed and
        // sent; the loop ends here and main() hands over (remote/main.cc).
        loop_.stop(0);
        return;
    }
    for (Conn* c : failed) {
        for (auto& p : conns_)
            if (p.get() == c) {
                log::info("{}: peer went away", c->session.name());
                drop(*c, true);
                break;
            }
    }
}

void DeviceServer::answer_as_dead(Conn& c, const proto::Frame& f) {
    std::string hex;
    const auto* hb = reinterpret_cast<const uint8_t*>(&f.hdr);
    for (size_t i = 0; i < sizeof f.hdr; i++) hex += fmt::format("{:02x}", hb[i]);
    for (size_t i = 0; i < f.size() && i < proto::kMaxPayload; i++) hex += fmt::format("{:02x}", f.payload[i]);
    log::error("{}: request {} took down two workers in a row; answered as a dead device, never retried. "
               "Bytes: {}", c.session.name(), proto::cmd_name(f.cmd()), hex);
    const proto::Message* m = proto::message(f.cmd());
    if (!m || !proto::reply_due(f.cmd())) return;
    uint64_t v = proto::kAllOnes;
    if (f.cmd() == proto::Cmd::BarWrite || f.cmd() == proto::Cmd::PciCfgWrite) v = 0;  // the write is dropped
    if (m->answer == proto::Answer::RetEmpty) proto::encode(c.out, proto::Cmd::Ret, {});
    else proto::encode(c.out, proto::Cmd::Ret, proto::bytes_of(v));
}

Status DeviceServer::take_over() {
    worker::Context* w = worker::context();
    if (!w || !w->successor) return {};
    auto last = worker::last_published();
    worker::SlotView view;
    if (!last.empty()) {
        auto v = worker::decode_slot(last);
        if (!v.ok()) return v.take_error();
        view = std::move(*v);
    }
    worker::FdTable& t = *w->table;
    if (!t.sysmem.empty())
        if (auto st = memory_.set_regions(t.sysmem); !st.ok())
            log::error("worker: guest RAM map from the supervisor: {}", st.error().message);
    uint64_t seq = w->hdr->seq.load(std::memory_order_acquire);
    bool consumed = w->hdr->consumed_seq.load() == seq;
    bool sent = w->hdr->sent_seq.load() == seq;
    for (auto& c : conns_) {
        for (auto& [key, fds] : t.irqfds) {
            if (key.first != c->index) continue;
            c->session.restore_irqfds(key.second, UniqueFd(::dup(fds.first.get())), UniqueFd(::dup(fds.second.get())));
        }
        for (auto& [key, fd] : t.mirrors) {
            if (key.first != c->index) continue;
            if (auto st = c->session.restore_mirror(key.second, UniqueFd(::dup(fd.get()))); !st.ok())
                log::error("{}: register mirror not restored: {}", c->session.name(), st.error().message);
        }
        if (c->index >= view.conns.size()) continue;
        const worker::ConnJournal& j = view.conns[c->index];
        MPQ_TRY(c->session.restore_state({j.features, j.selected, j.posted_done}));
        if (!c->peek || j.request.empty()) continue;
        if (!consumed) {
            auto head = c->peek->peek_head(j.request.size());
            if (!head.ok()) return head.take_error();
            if (worker::judge_head(*head, j.request) == worker::HeadVerdict::Consume) {
                MPQ_TRY(c->peek->discard(j.request.size()));
                log::info("{}: the last round's request ({} bytes) was carried out already; consumed",
                          c->session.name(), j.request.size());
            }
        }
        if (!sent && !j.replies.empty()) {
            MPQ_TRY(c->peek->send_now(j.replies));
            log::info("{}: re-sent the last round's replies ({} bytes)", c->session.name(), j.replies.size());
        }
    }
    w->hdr->consumed_seq.store(seq);
    w->hdr->sent_seq.store(seq);
    return {};
}

}  // namespace mpq::remote
