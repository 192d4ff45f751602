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
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "sandbox/policy.h"
#include "util/log.h"

namespace mpq::remote::worker {

namespace {

constexpr uint32_t kSlotMagic = 0x4c4e524a;  // "JRNL"
constexpr size_t kMaxConns = 64;
constexpr size_t kMaxJournalBytes = 64 * 1024;

Context* g_ctx = nullptr;

void put32(std::vector<uint8_t>& o, uint32_t v) {
    for (int i = 0; i < 4; i++) o.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& o, uint64_t v) {
    for (int i = 0; i < 8; i++) o.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void putbytes(std::vector<uint8_t>& o, std::span<const uint8_t> b) {
    put32(o, static_cast<uint32_t>(b.size()));
    o.insert(o.end(), b.begin(), b.end());
}

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

std::vector<uint8_t> encode_slot(std::span<const ConnJournal> conns, std::span<const uint8_t> state) {
    std::vector<uint8_t> o;
    o.reserve(64 + state.size());
    put32(o, kSlotMagic);
    put32(o, static_cast<uint32_t>(conns.size()));
    for (const auto& c : conns) {
        put64(o, c.features);
        put32(o, c.selected);
        put64(o, c.posted_done);
        putbytes(o, c.request);
        putbytes(o, c.replies);
    }
    putbytes(o, state);
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

bool send_with_fds(int sock, const void* data, size_t len, std::span<const int> fds) {
    iovec iov{const_cast<void*>(data), len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kMaxFdsOnWire)]{};
    if (!fds.empty()) {
        msg.msg_control = ctl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n == static_cast<ssize_t>(len)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
}

// One message and its fds; the size, 0 at EOF, -1 on error / nothing there.
ssize_t recv_with_fds(int sock, void* buf, size_t len, std::vector<UniqueFd>& fds, int flags) {
    fds.clear();
    iovec iov{buf, len};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kMaxFdsOnWire)]{};
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

Status publish(std::span<const uint8_t> bytes) {
    Context* c = g_ctx;
    if (!c) return {};
    if (bytes.size() > kSlotBytes) return fail("published state: {} bytes do not fit a slot", bytes.size());
    uint64_t next = c->hdr->seq.load(std::memory_order_relaxed) + 1;
    uint32_t slot = static_cast<uint32_t>(next & 1);
    std::memcpy(c->slots + size_t{slot} * kSlotBytes, bytes.data(), bytes.size());
    c->hdr->slot_len[slot].store(bytes.size(), std::memory_order_relaxed);
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

namespace {

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
        if (m.nfds == 2) t.irqfds[key] = {std::move(fds[0]), std::move(fds[1])};
        break;
    case HandoffKind::Mirror:
        if (m.nfds == 1) t.mirrors[key] = std::move(fds[0]);
        break;
    }
}

void take_handoff(int sock, FdTable& t) {
    std::vector<UniqueFd> fds;
    for (;;) {
        HandoffMsg m{};
        ssize_t n = recv_with_fds(sock, &m, sizeof m, fds, MSG_DONTWAIT);
        if (n <= 0) return;
        if (n == static_cast<ssize_t>(sizeof m)) apply_handoff(m, fds, t);
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

bool send_table(int sock, const FdTable& t) {
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
        if (!send_with_fds(sock, &m, sizeof m, fds)) return false;
    }
    for (const auto& [key, p] : t.irqfds) {
        HandoffMsg m{};
        m.kind = static_cast<uint32_t>(HandoffKind::Irqfd);
        m.conn = key.first;
        m.dev = key.second;
        m.nfds = 2;
        int fds[2] = {p.first.get(), p.second.get()};
        if (!send_with_fds(sock, &m, sizeof m, fds)) return false;
    }
    for (const auto& [key, fd] : t.mirrors) {
        HandoffMsg m{};
        m.kind = static_cast<uint32_t>(HandoffKind::Mirror);
        m.conn = key.first;
        m.dev = key.second;
        m.nfds = 1;
        int f = fd.get();
        if (!send_with_fds(sock, &m, sizeof m, std::span(&f, 1))) return false;
    }
    return true;
}

// Runs in the spawner; returns only in a new worker (with g_ctx set).
void spawner(int sock, Context& ctx) {
    static FdTable table;
    std::vector<UniqueFd> fds;
    for (;;) {
        union {
            HandoffMsg h;
            SpawnMsg s;
        } u{};
        ssize_t n = recv_with_fds(sock, &u, sizeof u, fds, 0);
        if (n <= 0) ::_exit(0);  // the supervisor is gone
        if (u.s.kind != kSpawnKind) {
            if (n == static_cast<ssize_t>(sizeof(HandoffMsg))) apply_handoff(u.h, fds, table);
            continue;
        }
        if (n != static_cast<ssize_t>(sizeof(SpawnMsg)) || fds.size() != 1) ::_exit(1);
        const SpawnMsg& m = u.s;
        long pid = ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) {
            ::close(sock);
            ::prctl(PR_SET_NAME, "qemu-scsi-dev", 0, 0, 0);
            ctx.handoff_fd = fds[0].release();
            ctx.successor = m.successor != 0;
            ctx.restarts = m.restarts;
            ctx.last_exit.valid = m.last_valid != 0;
            ctx.last_exit.signal = m.last_signal;
            ctx.last_exit.status = m.last_status;
            ctx.last_exit.cause = std::string(m.cause, strnlen(m.cause, sizeof m.cause));
            ctx.died_ns = m.died_ns;
            ctx.poison_pending = m.poison != 0;
            ctx.poison_conn = m.poison_conn;
            ctx.poison_off = m.poison_off;
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
        if (!send_with_fds(sock, &answer, sizeof answer, {})) ::_exit(1);
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

Status run_supervisor(const SupervisorOptions& opts) {
    int mfd = ::memfd_create("mpq-worker-state", MFD_CLOEXEC);
    if (mfd < 0) return fail_errno(errno, "worker: memfd_create: {}", std::strerror(errno));
    const size_t total = kHeaderBytes + 2 * kSlotBytes;
    if (::ftruncate(mfd, static_cast<off_t>(total)) != 0) {
        ::close(mfd);
        return fail_errno(errno, "worker: cannot size the publish memfd: {}", std::strerror(errno));
    }
    void* map = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    ::close(mfd);  // the mapping keeps it; workers inherit the mapping
    if (map == MAP_FAILED) return fail_errno(errno, "worker: mmap: {}", std::strerror(errno));
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

    int zs[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, zs) != 0)
        return fail_errno(errno, "worker: socketpair: {}", std::strerror(errno));
    pid_t zpid = ::fork();
    if (zpid < 0) return fail_errno(errno, "worker: fork: {}", std::strerror(errno));
    if (zpid == 0) {
        ::close(zs[0]);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (::getppid() != sup) ::_exit(1);
        ::prctl(PR_SET_NAME, "mpq-spawner", 0, 0, 0);  // tells it apart from the worker in ps
        spawner(zs[1], ctx);
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
    for (;;) {
        int sp[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
            return fail_errno(errno, "worker: socketpair: {}", std::strerror(errno));
        hdr->serving.store(0);
        hdr->finished.store(0);
        hdr->handling.store(0);
        hdr->live_update.store(0);
        SpawnMsg req{};
        req.kind = kSpawnKind;
        req.successor = first ? 0 : 1;
        req.restarts = ctx.restarts;
        req.last_valid = ctx.last_exit.valid;
        req.last_signal = ctx.last_exit.signal;
        req.last_status = ctx.last_exit.status;
        std::strncpy(req.cause, ctx.last_exit.cause.c_str(), sizeof req.cause - 1);
        req.died_ns = ctx.died_ns;
        req.poison = ctx.poison_pending;
        req.poison_conn = ctx.poison_conn;
        req.poison_off = ctx.poison_off;
        int32_t pid = -EPIPE;
        std::vector<UniqueFd> none;
        if (send_table(zsock.get(), table) && send_with_fds(zsock.get(), &req, sizeof req, std::span(&sp[1], 1)))
            if (recv_with_fds(zsock.get(), &pid, sizeof pid, none, 0) != sizeof pid) pid = -EPIPE;
        if (pid <= 0) {
            ::close(sp[0]);
            ::close(sp[1]);
            if (first) return fail_errno(-pid, "worker: cannot start the worker: {}", std::strerror(-pid));
            log::error("worker: cannot start a successor: {}; giving up", std::strerror(-pid));
            ::_exit(1);
        }
        ::close(sp[1]);
        UniqueFd hand(sp[0]);
        int status = 0;
        bool dead = false;
        while (!dead) {
            pollfd p[2] = {{sfd.get(), POLLIN, 0}, {hand.get(), POLLIN, 0}};
            int n = ::poll(p, 2, -1);
            if (n < 0) continue;
            if (p[1].revents & POLLIN) take_handoff(hand.get(), table);
            if (p[0].revents & POLLIN) {
                signalfd_siginfo si;
                if (::read(sfd.get(), &si, sizeof si) != sizeof si) continue;
                if (si.ssi_signo != SIGCHLD) {
                    ::kill(pid, static_cast<int>(si.ssi_signo));
                    continue;
                }
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
        if (finished || (first && !hdr->serving.load())) exit_like(status);
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

}  // namespace mpq::remote::worker
