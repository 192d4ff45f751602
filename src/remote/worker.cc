#include "remote/worker.h"

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

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

bool hand_over(const HandoffMsg& m, std::span<const int> fds) {
    if (!g_ctx) return true;
    iovec iov{const_cast<HandoffMsg*>(&m), sizeof m};
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
        ssize_t n = ::sendmsg(g_ctx->handoff_fd, &msg, MSG_NOSIGNAL);
        if (n == static_cast<ssize_t>(sizeof m)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
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

void take_handoff(int sock, FdTable& t) {
    for (;;) {
        HandoffMsg m{};
        iovec iov{&m, sizeof m};
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * proto::kMaxFdsOnWire)]{};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        ssize_t n = ::recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        std::vector<UniqueFd> fds;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                fds.emplace_back(fd);
            }
        }
        if (n != static_cast<ssize_t>(sizeof m) || fds.size() != m.nfds || m.nfds > proto::kMaxFdsOnWire) continue;
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
    UniqueFd sfd(::signalfd(-1, &sigs, SFD_CLOEXEC));
    if (!sfd) return fail_errno(errno, "worker: signalfd: {}", std::strerror(errno));
    const pid_t sup = ::getpid();

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
        pid_t pid = ::fork();
        if (pid < 0) {
            int e = errno;
            ::close(sp[0]);
            ::close(sp[1]);
            if (first) return fail_errno(e, "worker: fork: {}", std::strerror(e));
            log::error("worker: cannot fork a successor: {}; giving up", std::strerror(e));
            ::_exit(1);
        }
        if (pid == 0) {
            ::close(sp[0]);
            ctx.handoff_fd = sp[1];
            ctx.successor = !first;
            sfd.reset();
            // The worker's signals are its own again (main blocks the ones
            // its loop reads through a signalfd).
            sigset_t chld;
            sigemptyset(&chld);
            sigaddset(&chld, SIGCHLD);
            ::sigprocmask(SIG_UNBLOCK, &chld, nullptr);
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            if (::getppid() != sup) ::_exit(1);
            g_ctx = &ctx;
            return {};
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
