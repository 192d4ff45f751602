#include "remote/worker.h"

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <charconv>

extern char** environ;

#include "sandbox/policy.h"
#include "state/device_state.h"
#include "util/log.h"

namespace mpq::remote::worker {

namespace {

constexpr uint32_t kSlotMagic = 0x4c4e524a;  // "JRNL"
constexpr size_t kMaxConns = 64;
constexpr size_t kMaxJournalBytes = 64 * 1024;

Context* g_ctx = nullptr;

// Slot bytes are written straight into the publish area (or a vector for
// tests); a writer that runs out of room says so once, at the end.
struct Out {
    std::span<uint8_t> b;
    size_t pos = 0;
    bool ok = true;
    void put(uint64_t v, unsigned n) {
        if (!ok || b.size() - pos < n) {
            ok = false;
            return;
        }
        for (unsigned i = 0; i < n; i++) b[pos + i] = static_cast<uint8_t>(v >> (8 * i));
        pos += n;
    }
    void bytes(std::span<const uint8_t> v) {
        put(v.size(), 4);
        if (!ok || b.size() - pos < v.size()) {
            ok = false;
            return;
        }
        if (!v.empty()) std::memcpy(b.data() + pos, v.data(), v.size());
        pos += v.size();
    }
};

struct In {
    std::span<const uint8_t> b;
    size_t pos = 0;
    bool ok = true;
    uint64_t get(unsigned n) {
        if (!ok || b.size() - pos < n) {
            ok = false;
            return 0;
        }
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++) v |= uint64_t{b[pos + i]} << (8 * i);
        pos += n;
        return v;
    }
    std::span<const uint8_t> bytes(size_t max) {
        uint64_t n = get(4);
        if (!ok || n > max || b.size() - pos < n) {
            ok = false;
            return {};
        }
        auto s = b.subspan(pos, n);
        pos += n;
        return s;
    }
};

uint64_t mono_ns() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

}  // namespace

Context* context() { return g_ctx; }

Result<size_t> encode_slot_into(std::span<const ConnJournal> conns, std::span<const uint8_t> state,
                                std::span<uint8_t> out) {
    Out o{out};
    o.put(kSlotMagic, 4);
    o.put(conns.size(), 4);
    for (const auto& c : conns) {
        o.put(c.features, 8);
        o.put(c.selected, 4);
        o.put(c.posted_done, 8);
        o.bytes(c.request);
        o.bytes(c.replies);
    }
    o.bytes(state);
    if (!o.ok) return fail("published state: {} bytes of device state do not fit a {}-byte slot", state.size(), out.size());
    return o.pos;
}

size_t slot_size(std::span<const ConnJournal> conns, std::span<const uint8_t> state) {
    size_t n = 8 + 4 + state.size();
    for (const auto& c : conns) n += 8 + 4 + 8 + 4 + c.request.size() + 4 + c.replies.size();
    return n;
}

std::vector<uint8_t> encode_slot(std::span<const ConnJournal> conns, std::span<const uint8_t> state) {
    std::vector<uint8_t> o(slot_size(conns, state));
    auto n = encode_slot_into(conns, state, o);
    o.resize(n.ok() ? *n : 0);
    return o;
}

Result<SlotView> decode_slot(std::span<const uint8_t> slot) {
    In in{slot};
    if (in.get(4) != kSlotMagic) return fail("published state: bad slot magic");
    uint64_t n = in.get(4);
    if (!in.ok || n > kMaxConns) return fail("published state: {} connections", n);
    SlotView v;
    for (uint64_t i = 0; i < n; i++) {
        ConnJournal c;
        c.features = in.get(8);
        c.selected = static_cast<uint32_t>(in.get(4));
        c.posted_done = in.get(8);
        auto rq = in.bytes(kMaxJournalBytes);
        auto rp = in.bytes(kMaxJournalBytes);
        if (!in.ok) return fail("published state: connection {} journal is damaged", i);
        c.request.assign(rq.begin(), rq.end());
        c.replies.assign(rp.begin(), rp.end());
        v.conns.push_back(std::move(c));
    }
    v.state = in.bytes(kSlotBytes);
    if (!in.ok) return fail("published state: the device state is damaged");
    return v;
}

HeadVerdict judge_head(std::span<const uint8_t> head, std::span<const uint8_t> request) {
    // Nothing there: consumed (the proxy sends nothing before our reply).
    if (request.empty() || head.empty()) return HeadVerdict::AlreadyGone;
    size_t n = std::min(head.size(), request.size());
    if (!std::equal(head.begin(), head.begin() + static_cast<std::ptrdiff_t>(n), request.begin()))
        return HeadVerdict::AlreadyGone;
    return head.size() >= request.size() ? HeadVerdict::Consume : HeadVerdict::NotYet;
}

bool RestartPolicy::allow(uint64_t now_ns) {
    total_++;
    std::erase_if(recent_, [&](uint64_t t) { return now_ns - t > window_; });
    recent_.push_back(now_ns);
    return recent_.size() <= max_;
}

bool PoisonDetector::died(bool handling, uint64_t seq) {
    if (!handling) {
        last_valid_ = false;
        return false;
    }
    bool again = last_valid_ && last_seq_ == seq;
    last_valid_ = !again;  // after a poison verdict the count starts over
    last_seq_ = seq;
    return again;
}

namespace {

// `cred`: credentials to send with it (SCM_CREDENTIALS), or null.
bool send_with_fds(int sock, const void* data, size_t len, std::span<const int> fds, const ucred* cred = nullptr) {
    iovec iov{const_cast<void*>(data), len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kMaxFdsOnWire) + CMSG_SPACE(sizeof(ucred))]{};
    msg.msg_control = ctl;
    // Headers laid out by hand: CMSG_FIRSTHDR needs msg_controllen, which
    // grows with each one.
    auto* c = reinterpret_cast<cmsghdr*>(ctl);
    if (!fds.empty()) {
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        msg.msg_controllen += CMSG_SPACE(sizeof(int) * fds.size());
        c = reinterpret_cast<cmsghdr*>(ctl + msg.msg_controllen);
    }
    if (cred) {
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_CREDENTIALS;
        c->cmsg_len = CMSG_LEN(sizeof(ucred));
        std::memcpy(CMSG_DATA(c), cred, sizeof *cred);
        msg.msg_controllen += CMSG_SPACE(sizeof(ucred));
    }
    if (msg.msg_controllen == 0) msg.msg_control = nullptr;
    for (;;) {
        ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n == static_cast<ssize_t>(len)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
}

// One message and its fds; the size, 0 at EOF, -1 on error / nothing there.
// `cred_pid`: the pid the message's credentials name (on a socket with
// SO_PASSCRED), in this process's PID namespace; 0 without any.
ssize_t recv_with_fds(int sock, void* buf, size_t len, std::vector<UniqueFd>& fds, int flags,
                      pid_t* cred_pid = nullptr) {
    fds.clear();
    if (cred_pid) *cred_pid = 0;
    iovec iov{buf, len};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kMaxFdsOnWire) + CMSG_SPACE(sizeof(ucred))]{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    ssize_t n;
    do {
        n = ::recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && cred_pid &&
            c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
            ucred u;
            std::memcpy(&u, CMSG_DATA(c), sizeof u);
            *cred_pid = u.pid;
        }
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return -1;
    return n;
}

}  // namespace

bool hand_over(const HandoffMsg& m, std::span<const int> fds) {
    if (!g_ctx) return true;
    return send_with_fds(g_ctx->handoff_fd, &m, sizeof m, fds);
}

Status publish(std::span<const ConnJournal> conns, std::span<const uint8_t> state) {
    Context* c = g_ctx;
    if (!c) return {};
    uint64_t next = c->hdr->seq.load(std::memory_order_relaxed) + 1;
    uint32_t slot = static_cast<uint32_t>(next & 1);
    // Straight into the free slot: nobody reads it until `seq` names it.
    auto n = encode_slot_into(conns, state, std::span<uint8_t>(c->slots + size_t{slot} * kSlotBytes, kSlotBytes));
    if (!n.ok()) return n.take_error();
    c->hdr->slot_len[slot].store(*n, std::memory_order_relaxed);
    // One store makes it current: a worker killed before it leaves the
    // previous publish (in the other slot) in place.
    c->hdr->seq.store(next, std::memory_order_release);
    return {};
}

std::span<const uint8_t> last_published() {
    Context* c = g_ctx;
    if (!c) return {};
    uint64_t seq = c->hdr->seq.load(std::memory_order_acquire);
    if (seq == 0) return {};
    uint32_t slot = static_cast<uint32_t>(seq & 1);
    uint64_t len = std::min<uint64_t>(c->hdr->slot_len[slot].load(std::memory_order_relaxed), kSlotBytes);
    return c->slot(slot).subspan(0, len);
}

HandoffMsg make_handoff(HandoffKind kind, uint32_t conn, uint32_t dev, uint32_t nfds, uint64_t flag) {
    HandoffMsg m{};
    m.kind = static_cast<uint32_t>(kind);
    m.conn = conn;
    m.dev = dev;
    m.nfds = nfds;
    m.gpa[0] = flag;
    return m;
}

namespace {

// A new entry only while the table has room for it; a known one may be replaced.
template <typename Map>
bool has_room(const Map& m, const typename Map::key_type& key, size_t max) {
    return m.size() < max || m.count(key) != 0;
}

}  // namespace

void apply_handoff(const HandoffMsg& m, std::vector<UniqueFd>& fds, FdTable& t) {
    if (fds.size() != m.nfds || m.nfds > proto::kMaxFdsOnWire) return;
    auto key = std::make_pair(m.conn, m.dev);
    switch (static_cast<HandoffKind>(m.kind)) {
    case HandoffKind::Sysmem:
        t.sysmem.clear();
        t.sysmem_fds.clear();
        for (uint32_t i = 0; i < m.nfds; i++) {
            t.sysmem.push_back(RamRegion{m.gpa[i], m.size[i], m.offset[i], fds[i].get()});
            t.sysmem_fds.push_back(std::move(fds[i]));
        }
        break;
    case HandoffKind::Irqfd:
        if (m.nfds == 2 && has_room(t.irqfds, key, FdTable::kMaxDeviceFds))
            t.irqfds[key] = {std::move(fds[0]), std::move(fds[1])};
        break;
    case HandoffKind::Mirror:
        if (m.nfds == 1 && has_room(t.mirrors, key, FdTable::kMaxDeviceFds))
            t.mirrors[key] = std::move(fds[0]);
        break;
    case HandoffKind::MonListener:
        if (m.nfds == 1 && has_room(t.mon_listeners, m.conn, FdTable::kMaxMonitorSockets))
            t.mon_listeners[m.conn] = std::move(fds[0]);
        break;
    case HandoffKind::MonClient: {
        auto it = t.mon_clients.find(key);
        if (m.nfds == 1 && has_room(t.mon_clients, key, FdTable::kMaxMonitorSockets))
            t.mon_clients[key] = KeptMonitorClient{std::move(fds[0]), m.gpa[0] != 0};
        else if (m.nfds == 0 && it != t.mon_clients.end())
            it->second.negotiated = m.gpa[0] != 0;
        break;
    }
    case HandoffKind::MonForget:
        t.mon_clients.erase(key);
        break;
    }
}

namespace {

void relay_probe(int sock, const void* msg, std::vector<UniqueFd>& fds, int zsock);

// `zsock`: the spawner, which answers a worker's x-worker-restart binary=
// (-1 once the worker is gone: its question has no one to answer).
void take_handoff(int sock, FdTable& t, int zsock = -1) {
    std::vector<UniqueFd> fds;
    for (;;) {
        alignas(8) uint8_t buf[520];
        static_assert(sizeof buf >= sizeof(HandoffMsg));
        ssize_t n = recv_with_fds(sock, buf, sizeof buf, fds, MSG_DONTWAIT);
        if (n <= 0) return;
        if (n == static_cast<ssize_t>(sizeof(HandoffMsg))) {
            HandoffMsg m;
            std::memcpy(&m, buf, sizeof m);
            apply_handoff(m, fds, t);
        } else if (n == 520 && zsock >= 0) {
            relay_probe(sock, buf, fds, zsock);
        }
    }
}

// ---- The spawner: forked from the supervisor before the supervisor
// locks itself down, so that a new worker starts from a process that may
// still open images, map memory and start threads (a fork of the sandboxed
// supervisor would inherit its filter: seccomp filters are never dropped).
// It holds nothing between spawns; the supervisor sends it the fd table and
// the worker's hand-over socket with each request, and the worker it clones
// (CLONE_PARENT) is the supervisor's child.
constexpr uint32_t kSpawnKind = 100;
struct SpawnMsg {
    uint32_t kind;
    uint32_t successor;
    uint32_t restarts;
    int32_t last_signal;
    int32_t last_status;
    uint32_t last_valid;
    uint64_t died_ns;
    uint32_t poison;
    uint32_t poison_conn;
    uint32_t poison_off;
    char cause[60];
};
static_assert(sizeof(SpawnMsg) == 104);
// SpawnMsg::successor: what the new process is.
constexpr uint32_t kFirstWorker = 0;
constexpr uint32_t kSuccessor = 1;
constexpr uint32_t kSpare = 2;
// Supervisor -> spare, after the fd table: become the successor described
// by the rest of the message (a SpawnMsg).
constexpr uint32_t kGoKind = 102;
// A spare is started this long after a worker (re)starts serving.
constexpr uint64_t kSpareDelayNs = 100'000'000;
constexpr int kSparePollMs = 20;
static_assert(sizeof(SpawnMsg) != sizeof(HandoffMsg));

// What a new worker (or a spare made one) must know of its predecessor, as
// the supervisor's context holds it, and back.
SpawnMsg predecessor_msg(const Context& c, uint32_t kind, uint32_t what) {
    SpawnMsg m{};
    m.kind = kind;
    m.successor = what;
    m.restarts = c.restarts;
    m.last_valid = c.last_exit.valid;
    m.last_signal = c.last_exit.signal;
    m.last_status = c.last_exit.status;
    std::strncpy(m.cause, c.last_exit.cause.c_str(), sizeof m.cause - 1);
    m.died_ns = c.died_ns;
    m.poison = c.poison_pending;
    m.poison_conn = c.poison_conn;
    m.poison_off = c.poison_off;
    return m;
}

void take_predecessor(Context& c, const SpawnMsg& m) {
    c.successor = m.successor != kFirstWorker;
    c.restarts = m.restarts;
    c.last_exit.valid = m.last_valid != 0;
    c.last_exit.signal = m.last_signal;
    c.last_exit.status = m.last_status;
    c.last_exit.cause = std::string(m.cause, strnlen(m.cause, sizeof m.cause));
    c.died_ns = m.died_ns;
    c.poison_pending = m.poison != 0;
    c.poison_conn = m.poison_conn;
    c.poison_off = m.poison_off;
}

// x-worker-restart binary=...: worker -> supervisor -> spawner, with the
// binary's fd (getfd) or its path; the answer goes back the same way.
constexpr uint32_t kProbeKind = 101;
struct ProbeMsg {
    uint32_t kind;
    uint32_t has_fd;
    char path[512];
};
static_assert(sizeof(ProbeMsg) == 520 && sizeof(ProbeMsg) != sizeof(HandoffMsg));
struct ProbeReply {
    int32_t ok;
    char message[252];
};
static_assert(sizeof(ProbeReply) == 256);

// The memfd of the publish area (kept for successors exec'd from another
// binary, which cannot inherit the mapping) and, in the spawner, the binary
// successors are exec'd from (-1: forked from the spawner's own image).
int g_area_fd = -1;
int g_binary_fd = -1;
std::vector<std::string> g_argv;

void set_message(ProbeReply& r, const std::string& m) {
    std::strncpy(r.message, m.c_str(), sizeof r.message - 1);
}

int exec_fd(int fd, char* const* argv) {
    // A descriptor without close-on-exec, so that a script (#!) can be run
    // from it as well (the kernel hands its interpreter /dev/fd/N).
    int e = ::dup(fd);
    if (e < 0) return errno;
    ::syscall(SYS_execveat, e, "", argv, environ, AT_EMPTY_PATH);
    return errno;
}

// Runs `binary -x-worker-state-version` and checks its answer against the
// format this build writes. Bounded: 5 s, 256 bytes.
ProbeReply probe_binary(const ProbeMsg& m, std::vector<UniqueFd>& fds, UniqueFd& out_fd) {
    ProbeReply r{};
    std::string name = m.has_fd ? std::string("the binary passed as an fd")
                                : std::string(m.path, strnlen(m.path, sizeof m.path));
    UniqueFd f;
    if (m.has_fd) {
        if (fds.size() != 1) {
            set_message(r, "x-worker-restart: the binary's fd did not arrive");
            return r;
        }
        f = std::move(fds[0]);
    } else {
        f = UniqueFd(::open(name.c_str(), O_RDONLY | O_CLOEXEC));
        if (!f) {
            set_message(r, fmt::format("x-worker-restart: cannot open '{}': {}", name, std::strerror(errno)));
            return r;
        }
    }
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
        set_message(r, fmt::format("x-worker-restart: pipe: {}", std::strerror(errno)));
        return r;
    }
    std::string opt = "-" + std::string(kVersionOption);
    char arg0[] = "qemu-scsi-dev";
    char* av[] = {arg0, opt.data(), nullptr};
    pid_t pid = ::fork();
    if (pid == 0) {
        // The binary is not trusted yet: it gets its stdout (the pipe),
        // stderr and itself as fd 3, none of the remote's sockets.
        ::dup2(p[1], 1);
        int nul = ::open("/dev/null", O_RDONLY);
        if (nul >= 0) ::dup2(nul, 0);
        if (::dup2(f.get(), 3) != 3) ::_exit(127);
        ::syscall(SYS_close_range, 4u, ~0u, 0u);
        ::syscall(SYS_execveat, 3, "", av, environ, AT_EMPTY_PATH);
        ::_exit(127);
    }
    ::close(p[1]);
    UniqueFd rd(p[0]);
    if (pid < 0) {
        set_message(r, fmt::format("x-worker-restart: fork: {}", std::strerror(errno)));
        return r;
    }
    std::string out;
    uint64_t end = mono_ns() + 5'000'000'000ull;
    for (;;) {
        uint64_t now = mono_ns();
        if (now >= end) break;
        pollfd pf{rd.get(), POLLIN, 0};
        int n = ::poll(&pf, 1, static_cast<int>((end - now) / 1'000'000 + 1));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        char buf[256];
        ssize_t k = ::read(rd.get(), buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        out.append(buf, static_cast<size_t>(k));
        if (out.size() > 256) break;
    }
    ::kill(pid, SIGKILL);  // done or too slow: it has nothing more to say
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    auto v = parse_version_answer(out);
    if (!v) {
        set_message(r, fmt::format("x-worker-restart: {} does not report a device state format (not a "
                                   "qemu-scsi-dev?); the worker keeps running",
                                   name));
        return r;
    }
    if (*v != state::kFormatVersion) {
        set_message(r, fmt::format("x-worker-restart: {} writes device state format {}, this worker format {}: "
                                   "incompatible, refused; the worker keeps running",
                                   name, *v, state::kFormatVersion));
        return r;
    }
    r.ok = 1;
    out_fd = std::move(f);
    return r;
}

bool send_table(int sock, const FdTable& t);

// The supervisor passes a worker's question on to the spawner and its
// answer back; it never runs anything itself.
void relay_probe(int sock, const void* msg, std::vector<UniqueFd>& fds, int zsock) {
    ProbeMsg m;
    std::memcpy(&m, msg, sizeof m);
    ProbeReply r{};
    if (m.kind != kProbeKind) return;
    m.path[sizeof m.path - 1] = 0;
    std::vector<int> raw;
    if (m.has_fd && fds.size() == 1) raw.push_back(fds[0].get());
    std::vector<UniqueFd> none;
    if (!send_with_fds(zsock, &m, sizeof m, raw) || recv_with_fds(zsock, &r, sizeof r, none, 0) != sizeof r) {
        r = ProbeReply{};
        set_message(r, "x-worker-restart: the spawner did not answer");
    }
    r.message[sizeof r.message - 1] = 0;
    send_with_fds(sock, &r, sizeof r, {});
}

// In a new worker (the clone of the spawner): becomes the binary chosen with
// x-worker-restart, carrying what the clone would have had. Returns only if
// the exec failed (the clone then carries on from the spawner's image).
void exec_successor(const SpawnMsg& m, int hand_fd, const FdTable& table) {
    int tp[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, tp) != 0) return;
    if (!send_table(tp[0], table)) return;
    ::close(tp[0]);  // the successor reads the table up to the end
    int mem = ::dup(g_area_fd), hand = ::dup(hand_fd);
    if (mem < 0 || hand < 0) return;
    std::string spec = fmt::format("{},{},{},", mem, hand, tp[1]);
    const auto* b = reinterpret_cast<const uint8_t*>(&m);
    for (size_t i = 0; i < sizeof m; i++) spec += fmt::format("{:02x}", b[i]);
    std::vector<std::string> args = g_argv;
    args.push_back("-x-worker-successor");
    args.push_back(spec);
    std::vector<char*> av;
    for (auto& a : args) av.push_back(a.data());
    av.push_back(nullptr);
    int err = exec_fd(g_binary_fd, av.data());
    log::error("worker: cannot exec the new binary: {}; the successor runs the previous one", std::strerror(err));
    ::close(mem);
    ::close(hand);
    ::close(tp[1]);
}

bool send_table(int sock, const FdTable& t) {
    auto send = [sock](HandoffMsg m, std::span<const int> fds) { return send_with_fds(sock, &m, sizeof m, fds); };
    if (!t.sysmem.empty()) {
        HandoffMsg m{};
        m.kind = static_cast<uint32_t>(HandoffKind::Sysmem);
        std::vector<int> fds;
        for (size_t i = 0; i < t.sysmem.size() && i < proto::kMaxFdsOnWire; i++) {
            m.gpa[i] = t.sysmem[i].gpa;
            m.size[i] = t.sysmem[i].size;
            m.offset[i] = t.sysmem[i].offset;
            fds.push_back(t.sysmem_fds[i].get());
        }
        m.nfds = static_cast<uint32_t>(fds.size());
        if (!send(m, fds)) return false;
    }
    for (const auto& [key, p] : t.irqfds) {
        int fds[2] = {p.first.get(), p.second.get()};
        if (!send(make_handoff(HandoffKind::Irqfd, key.first, key.second, 2), fds)) return false;
    }
    for (const auto& [key, fd] : t.mirrors) {
        int f = fd.get();
        if (!send(make_handoff(HandoffKind::Mirror, key.first, key.second, 1), std::span(&f, 1))) return false;
    }
    for (const auto& [index, fd] : t.mon_listeners) {
        int f = fd.get();
        if (!send(make_handoff(HandoffKind::MonListener, index, 0, 1), std::span(&f, 1))) return false;
    }
    for (const auto& [key, c] : t.mon_clients) {
        int f = c.fd.get();
        if (!send(make_handoff(HandoffKind::MonClient, key.first, key.second, 1, c.negotiated), std::span(&f, 1)))
            return false;
    }
    return true;
}

// The spawner's answer to a spawn request: the new worker's pid, or
// -errno. With pidns=on the spawner and its workers live in a namespace of
// their own, and the number clone() gave is not one the supervisor can wait
// for: the pid then also goes as the message's credentials, which the kernel
// translates into the supervisor's namespace (naming another process there
// takes CAP_SYS_ADMIN, which pidns=on, root only, has).
enum class PidNamespace : uint8_t { Shared, Own };
bool send_answer(int sock, int32_t answer, PidNamespace ns) {
    if (answer <= 0 || ns == PidNamespace::Shared) return send_with_fds(sock, &answer, sizeof answer, {});
    const ucred u{answer, ::getuid(), ::getgid()};
    return send_with_fds(sock, &answer, sizeof answer, {}, &u);
}

// Runs in the spawner; returns only in a new worker (with g_ctx set).
void spawner(int sock, Context& ctx, PidNamespace ns) {
    static FdTable table;
    std::vector<UniqueFd> fds;
    for (;;) {
        union {
            HandoffMsg h;
            SpawnMsg s;
            ProbeMsg p;
        } u{};
        ssize_t n = recv_with_fds(sock, &u, sizeof u, fds, 0);
        if (n <= 0) ::_exit(0);  // the supervisor is gone
        if (u.s.kind == kProbeKind && n == static_cast<ssize_t>(sizeof(ProbeMsg))) {
            UniqueFd chosen;
            ProbeReply r = probe_binary(u.p, fds, chosen);
            if (r.ok) {
                // Every successor from now on (a live update's, a crash's).
                if (g_binary_fd >= 0) ::close(g_binary_fd);
                g_binary_fd = chosen.release();
                ctx.hdr->binary_chosen.store(1);
            }
            fds.clear();
            if (!send_with_fds(sock, &r, sizeof r, {})) ::_exit(1);
            continue;
        }
        if (u.s.kind != kSpawnKind) {
            if (n == static_cast<ssize_t>(sizeof(HandoffMsg))) apply_handoff(u.h, fds, table);
            continue;
        }
        if (n != static_cast<ssize_t>(sizeof(SpawnMsg)) || fds.size() != 1) ::_exit(1);
        const SpawnMsg& m = u.s;
        if (m.successor == kSpare && g_binary_fd >= 0) {
            // A spare would be this image, not the binary chosen for the
            // successors: none from here on.
            int32_t no = -ENOTSUP;
            fds.clear();
            table = FdTable{};
            if (!send_with_fds(sock, &no, sizeof no, {})) ::_exit(1);
            continue;
        }
        long pid = ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) {
            ::close(sock);
            // A spare is told apart from the worker in ps (and by tests that
            // kill the worker) until it becomes one (await_go).
            ::prctl(PR_SET_NAME, m.successor == kSpare ? "mpq-spare" : "qemu-scsi-dev", 0, 0, 0);
            if (g_binary_fd >= 0) exec_successor(m, fds[0].get(), table);
            ctx.handoff_fd = fds[0].release();
            ctx.spare = m.successor == kSpare;
            take_predecessor(ctx, m);
            ctx.table = &table;
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            sigset_t chld;
            sigemptyset(&chld);
            sigaddset(&chld, SIGCHLD);
            ::sigprocmask(SIG_UNBLOCK, &chld, nullptr);
            g_ctx = &ctx;
            return;
        }
        int32_t answer = pid < 0 ? -errno : static_cast<int32_t>(pid);
        fds.clear();
        table = FdTable{};
        if (!send_answer(sock, answer, ns)) ::_exit(1);
    }
}

[[noreturn]] void exit_like(int status) {
    if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        ::signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        ::sigprocmask(SIG_UNBLOCK, &one, nullptr);
        ::kill(::getpid(), sig);
    }
    ::_exit(1);
}

std::string describe(int status) {
    if (WIFSIGNALED(status)) {
        const char* n = sigabbrev_np(WTERMSIG(status));
        return fmt::format("signal {} (SIG{})", WTERMSIG(status), n ? n : "?");
    }
    return fmt::format("exit status {}", WEXITSTATUS(status));
}

}  // namespace

void await_go() {
    Context* c = g_ctx;
    if (!c || !c->spare) return;
    FdTable fresh;
    std::vector<UniqueFd> fds;
    for (;;) {
        union {
            HandoffMsg h;
            SpawnMsg s;
        } u{};
        ssize_t n = recv_with_fds(c->handoff_fd, &u, sizeof u, fds, 0);
        if (n <= 0) ::_exit(0);  // the supervisor no longer wants this spare
        if (n == static_cast<ssize_t>(sizeof(HandoffMsg))) {
            apply_handoff(u.h, fds, fresh);
        } else if (n == static_cast<ssize_t>(sizeof(SpawnMsg)) && u.s.kind == kGoKind) {
            take_predecessor(*c, u.s);
            break;
        }
        fds.clear();
    }
    // The table as it is now: the dead worker may have handed over fds
    // since this spare was started.
    *c->table = std::move(fresh);
    c->spare = false;
    ::prctl(PR_SET_NAME, "qemu-scsi-dev", 0, 0, 0);
}

Status run_supervisor(const SupervisorOptions& opts) {
    int mfd = ::memfd_create("mpq-worker-state", MFD_CLOEXEC);
    if (mfd < 0) return fail_errno(errno, "worker: memfd_create: {}", std::strerror(errno));
    const size_t total = kHeaderBytes + 2 * kSlotBytes;
    if (::ftruncate(mfd, static_cast<off_t>(total)) != 0) {
        ::close(mfd);
        return fail_errno(errno, "worker: cannot size the publish memfd: {}", std::strerror(errno));
    }
    void* map = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (map == MAP_FAILED) return fail_errno(errno, "worker: mmap: {}", std::strerror(errno));
    // Forked workers inherit the mapping; one exec'd from a new binary maps
    // the memfd the spawner passes it.
    g_area_fd = mfd;
    g_argv = opts.argv;
    auto* hdr = new (map) PublishHeader{};
    hdr->magic = kAreaMagic;

    static FdTable table;
    static Context ctx;
    ctx.hdr = hdr;
    ctx.slots = static_cast<uint8_t*>(map) + kHeaderBytes;
    ctx.table = &table;
    ctx.test_fault_fd = opts.test_fault_fd;
    ctx.test_poison = opts.test_poison;
    ctx.test_poison_value = opts.test_poison_value;

    sigset_t sigs;
    sigemptyset(&sigs);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&sigs, s);
    ::sigprocmask(SIG_BLOCK, &sigs, nullptr);
    const pid_t sup = ::getpid();

    // pidns=on: the spawner and every worker live in a PID namespace of
    // their own, with a PID 1 that only reaps (sandbox::run_namespace_init);
    // the supervisor stays outside, as it did for the single process. The
    // spawner is not PID 1: an init process may not clone with CLONE_PARENT.
    const bool pidns = opts.sandbox.mode == sandbox::Mode::On &&
                       opts.sandbox.pid_namespace == sandbox::Namespaces::New;
    // Inside the namespace getppid() says 0 (the parent is outside), so a
    // child learns that the supervisor died before its PR_SET_PDEATHSIG
    // took hold from a pipe only the supervisor writes to: EOF.
    UniqueFd alive_w;
    if (pidns) {
        if (::geteuid() != 0) return fail("-sandbox pidns=on needs to start as root");
        int alive[2];
        if (::pipe2(alive, O_CLOEXEC) != 0) return fail_errno(errno, "worker: pipe: {}", std::strerror(errno));
        UniqueFd alive_r(alive[0]);
        alive_w = UniqueFd(alive[1]);
        if (::unshare(CLONE_NEWPID) != 0)
            return fail_errno(errno, "worker: unshare(pid): {}", std::strerror(errno));
        pid_t init = ::fork();
        if (init < 0) return fail_errno(errno, "worker: fork the namespace's init: {}", std::strerror(errno));
        if (init == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            alive_w.reset();
            char c;
            ::fcntl(alive_r.get(), F_SETFL, O_NONBLOCK);
            if (::read(alive_r.get(), &c, 1) == 0) ::_exit(1);
            ::prctl(PR_SET_NAME, "mpq-pidns-init", 0, 0, 0);
            sandbox::run_namespace_init(opts.sandbox);
        }
    }
    int zs[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, zs) != 0)
        return fail_errno(errno, "worker: socketpair: {}", std::strerror(errno));
    // With pidns=on the spawner's answers carry the new worker's pid as
    // credentials (send_answer).
    const int one = 1;
    if (pidns && ::setsockopt(zs[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
        return fail_errno(errno, "worker: SO_PASSCRED: {}", std::strerror(errno));
    pid_t zpid = ::fork();
    if (zpid < 0) return fail_errno(errno, "worker: fork: {}", std::strerror(errno));
    if (zpid == 0) {
        ::close(zs[0]);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        // In its own PID namespace the supervisor is outside: getppid() is
        // 0, and 1 (the namespace's init) once the supervisor is gone.
        if (::getppid() != (pidns ? 0 : sup)) ::_exit(1);
        alive_w.reset();
        ::prctl(PR_SET_NAME, "mpq-spawner", 0, 0, 0);  // tells it apart from the worker in ps
        // Every worker it clones loads this instead of compiling its own
        // filter; without it they compile (slower restarts, same filter).
        if (auto st = sandbox::precompile_filter(opts.sandbox); !st.ok())
            log::debug("worker: no precompiled sandbox filter: {}", st.error().message);
        spawner(zs[1], ctx, pidns ? PidNamespace::Own : PidNamespace::Shared);
        return {};  // a new worker
    }
    ::close(zs[1]);
    UniqueFd zsock(zs[0]);
    UniqueFd sfd(::signalfd(-1, &sigs, SFD_CLOEXEC));
    if (!sfd) return fail_errno(errno, "worker: signalfd: {}", std::strerror(errno));

    if (opts.sandbox.mode == sandbox::Mode::On) {
        // From here on the supervisor only waits, passes fds on and logs.
        sandbox::SandboxOptions so;
        so.action = opts.sandbox.action == sandbox::Action::Trap ? sandbox::Action::Kill : opts.sandbox.action;
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            return fail_errno(errno, "worker: no_new_privs: {}", std::strerror(errno));
        if (auto st = sandbox::load_filter(so, sandbox::Role::WorkerSupervisor, 0); !st.ok())
            return fail("worker: supervisor sandbox: {}", st.error().message);
    }

    RestartPolicy policy(opts.max_restarts, opts.window_ns);
    PoisonDetector poison;
    bool first = true;
    // The spare: a worker started ahead of time that has built its devices
    // and waits to replace the running one (a restart is then a message,
    // not a clone that opens images and starts threads). Off for good once
    // one says it cannot be built ahead of time, fails to start twice, or
    // a live update chose another binary (a spare is this image).
    struct Spare {
        int32_t pid = 0;
        UniqueFd hand;
    } spare;
    bool spares_off = false;
    unsigned spare_failures = 0;
    auto ask_spawner = [&](uint32_t what, UniqueFd& hand) -> int32_t {
        int sp[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) return -errno;
        SpawnMsg req = predecessor_msg(ctx, kSpawnKind, what);
        int32_t pid = -EPIPE;
        std::vector<UniqueFd> none;
        pid_t cred = 0;
        if (send_table(zsock.get(), table) && send_with_fds(zsock.get(), &req, sizeof req, std::span(&sp[1], 1)))
            if (recv_with_fds(zsock.get(), &pid, sizeof pid, none, 0, &cred) != sizeof pid) pid = -EPIPE;
        // With pidns=on: the number in our namespace, not the spawner's.
        if (pidns && pid > 0) pid = cred > 0 ? cred : -EPROTO;
        ::close(sp[1]);
        if (pid <= 0) ::close(sp[0]);
        else hand = UniqueFd(sp[0]);
        return pid;
    };
    auto drop_spare = [&]() {
        hdr->spare_pid.store(0);
        if (spare.pid <= 0) return;
        ::kill(spare.pid, SIGKILL);
        int st = 0;
        while (::waitpid(spare.pid, &st, 0) < 0 && errno == EINTR) {
        }
        spare = Spare{};
    };
    auto spare_died = [&](int st) {
        hdr->spare_pid.store(0);
        spare = Spare{};
        if (WIFEXITED(st) && WEXITSTATUS(st) == kNoSpareExit) {
            spares_off = true;  // it said why in its log
        } else if (++spare_failures >= 2) {
            spares_off = true;
            log::warn("worker: spare died ({}); restarts start a new worker from now on", describe(st));
        }
    };
    for (;;) {
        hdr->serving.store(0);
        hdr->finished.store(0);
        hdr->handling.store(0);
        hdr->live_update.store(0);
        if (hdr->binary_chosen.load() && !spares_off) {
            // Successors come from the binary a live update chose; the
            // spare is the old image.
            drop_spare();
            spares_off = true;
        }
        int32_t pid = 0;
        UniqueFd hand;
        if (!first && spare.pid > 0) {
            // Promote the spare: the fd table as it is now, then its context.
            SpawnMsg go = predecessor_msg(ctx, kGoKind, kSuccessor);
            hdr->worker_pid.store(spare.pid);  // before it can answer x-query-worker
            if (send_table(spare.hand.get(), table) && send_with_fds(spare.hand.get(), &go, sizeof go, {})) {
                pid = spare.pid;
                hand = std::move(spare.hand);
                spare = Spare{};
                hdr->spare_pid.store(0);
            } else {
                drop_spare();
            }
        }
        if (pid <= 0) {
            pid = ask_spawner(first ? kFirstWorker : kSuccessor, hand);
            if (pid <= 0) {
                if (first) return fail_errno(-pid, "worker: cannot start the worker: {}", std::strerror(-pid));
                log::error("worker: cannot start a successor: {}; giving up", std::strerror(-pid));
                ::_exit(1);
            }
        }
        hdr->worker_pid.store(pid);
        // The next spare is started once this worker has served for a
        // while: built at once, it would take the CPU from the worker's
        // first requests, the very ones a restart makes the guest wait for.
        const uint64_t spare_after = mono_ns() + kSpareDelayNs;
        int status = 0;
        bool dead = false;
        while (!dead) {
            const bool want_spare = !spares_off && spare.pid <= 0;
            pollfd p[2] = {{sfd.get(), POLLIN, 0}, {hand.get(), POLLIN, 0}};
            int n = ::poll(p, 2, want_spare ? kSparePollMs : -1);
            if (n < 0) continue;
            if (want_spare && hdr->serving.load() && mono_ns() >= spare_after) {
                UniqueFd sh;
                int32_t sp = ask_spawner(kSpare, sh);
                if (sp > 0) {
                    spare = Spare{sp, std::move(sh)};
                    hdr->spare_pid.store(sp);
                } else {
                    spares_off = true;  // -ENOTSUP: successors come from a chosen binary
                }
            }
            if (n == 0) continue;
            if (p[1].revents & POLLIN) take_handoff(hand.get(), table, zsock.get());
            if (p[0].revents & POLLIN) {
                signalfd_siginfo si;
                if (::read(sfd.get(), &si, sizeof si) != sizeof si) continue;
                if (si.ssi_signo != SIGCHLD) {
                    ::kill(pid, static_cast<int>(si.ssi_signo));
                    continue;
                }
                // One SIGCHLD may stand for both children.
                int sst = 0;
                if (spare.pid > 0 && ::waitpid(spare.pid, &sst, WNOHANG) == spare.pid) spare_died(sst);
                if (::waitpid(pid, &status, WNOHANG) == pid) dead = true;
            } else if (p[1].revents & (POLLHUP | POLLERR)) {
                // The worker's end is closed: it is dying; reap it.
                if (::waitpid(pid, &status, 0) == pid) dead = true;
            }
        }
        uint64_t died = mono_ns();
        take_handoff(hand.get(), table);  // what it sent before dying
        hand.reset();
        bool finished = hdr->finished.load();
        if (finished || (first && !hdr->serving.load())) {
            drop_spare();
            exit_like(status);
        }
        ctx.last_exit.valid = true;
        ctx.last_exit.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        ctx.last_exit.status = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
        ctx.last_exit.cause = describe(status);
        ctx.died_ns = died;
        if (hdr->live_update.load()) {
            // Asked for: not a crash, not counted against the restart limit.
            ctx.restarts++;
            ctx.last_exit.cause = "live update";
            ctx.poison_pending = false;
            poison.reset();
            log::info("worker: pid {} left for a live update; starting its successor (restart {})", pid,
                      ctx.restarts);
            first = false;
            continue;
        }
        if (!policy.allow(died)) {
            log::error("worker: pid {} died ({}); {} restarts within {} s: giving up, the device is gone",
                       pid, ctx.last_exit.cause, opts.max_restarts + 1, opts.window_ns / 1'000'000'000ull);
            drop_spare();
            ::_exit(1);
        }
        ctx.poison_pending = poison.died(hdr->handling.load() != 0, hdr->seq.load());
        ctx.poison_conn = hdr->handling_conn.load();
        ctx.poison_off = hdr->handling_off.load();
        ctx.restarts++;
        log::warn("worker: pid {} died ({}) at published round {}; starting a successor (restart {}){}", pid,
                  ctx.last_exit.cause, hdr->seq.load(), ctx.restarts,
                  ctx.poison_pending ? "; the request it died on killed its predecessor too: it gets a dead device's answer"
                                     : "");
        first = false;
    }
}

std::optional<uint32_t> parse_version_answer(std::string_view out) {
    if (!out.starts_with(kVersionPrefix)) return std::nullopt;
    out.remove_prefix(kVersionPrefix.size());
    size_t nl = out.find('\n');
    if (nl == std::string_view::npos || nl == 0 || nl > 10) return std::nullopt;
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(out.data(), out.data() + nl, v);
    if (ec != std::errc{} || p != out.data() + nl) return std::nullopt;
    return v;
}

Status choose_binary(const std::string& path, int fd) {
    Context* c = g_ctx;
    if (!c) return fail("this process has no device worker (start it with -x-worker on)");
    ProbeMsg m{};
    m.kind = kProbeKind;
    m.has_fd = fd >= 0;
    if (fd < 0) {
        if (path.empty() || path.size() >= sizeof m.path) return fail("x-worker-restart: 'binary': bad path");
        std::memcpy(m.path, path.data(), path.size());
    }
    std::vector<int> raw;
    if (fd >= 0) raw.push_back(fd);
    if (!send_with_fds(c->handoff_fd, &m, sizeof m, raw)) return fail("x-worker-restart: the supervisor is gone");
    // The spawner gives up on the binary after 5 s.
    pollfd p{c->handoff_fd, POLLIN, 0};
    int n;
    do {
        n = ::poll(&p, 1, 10'000);
    } while (n < 0 && errno == EINTR);
    ProbeReply r{};
    std::vector<UniqueFd> none;
    if (n != 1 || recv_with_fds(c->handoff_fd, &r, sizeof r, none, 0) != sizeof r)
        return fail("x-worker-restart: no answer from the supervisor");
    r.message[sizeof r.message - 1] = 0;
    if (!r.ok) return fail("{}", r.message);
    return {};
}

Status adopt(const SupervisorOptions& opts, std::string_view spec) {
    // MEM,HAND,TABLE,HEX(SpawnMsg), written by exec_successor.
    int nums[3];
    for (int& v : nums) {
        size_t comma = spec.find(',');
        if (comma == std::string_view::npos) return fail("-x-worker-successor: malformed");
        auto [p, ec] = std::from_chars(spec.data(), spec.data() + comma, v);
        if (ec != std::errc{} || p != spec.data() + comma || v < 0) return fail("-x-worker-successor: malformed");
        spec.remove_prefix(comma + 1);
    }
    SpawnMsg m{};
    if (spec.size() != 2 * sizeof m) return fail("-x-worker-successor: malformed");
    auto* b = reinterpret_cast<uint8_t*>(&m);
    for (size_t i = 0; i < sizeof m; i++) {
        auto [p, ec] = std::from_chars(spec.data() + 2 * i, spec.data() + 2 * i + 2, b[i], 16);
        if (ec != std::errc{} || p != spec.data() + 2 * i + 2) return fail("-x-worker-successor: malformed");
    }
    if (m.kind != kSpawnKind) return fail("-x-worker-successor: malformed");
    const size_t total = kHeaderBytes + 2 * kSlotBytes;
    // The fds we were passed stay taken (by /dev/null) until the sandbox
    // closes what this process inherited: were they closed now, the sandbox
    // would close whatever reused their numbers.
    auto release = [](int fd) {
        int nul = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (nul < 0 || ::dup2(nul, fd) < 0) ::close(fd);
        if (nul >= 0) ::close(nul);
    };
    void* map = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, nums[0], 0);
    release(nums[0]);
    if (map == MAP_FAILED) return fail_errno(errno, "-x-worker-successor: mmap: {}", std::strerror(errno));
    auto* hdr = static_cast<PublishHeader*>(map);
    if (hdr->magic != kAreaMagic) return fail("-x-worker-successor: not a publish area");

    static FdTable table;
    {
        std::vector<UniqueFd> fds;
        for (;;) {
            HandoffMsg h{};
            ssize_t n = recv_with_fds(nums[2], &h, sizeof h, fds, 0);
            if (n <= 0) break;
            if (n == static_cast<ssize_t>(sizeof h)) apply_handoff(h, fds, table);
        }
        release(nums[2]);
    }
    static Context ctx;
    ctx.hdr = hdr;
    ctx.slots = static_cast<uint8_t*>(map) + kHeaderBytes;
    ctx.table = &table;
    ctx.test_fault_fd = opts.test_fault_fd;
    ctx.test_poison = opts.test_poison;
    ctx.test_poison_value = opts.test_poison_value;
    ctx.handoff_fd = nums[1];
    ::fcntl(ctx.handoff_fd, F_SETFD, FD_CLOEXEC);
    take_predecessor(ctx, m);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_UNBLOCK, &chld, nullptr);
    g_ctx = &ctx;
    return {};
}

}  // namespace mpq::remote::worker
