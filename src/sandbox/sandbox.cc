#include "sandbox/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <set>

#include "sandbox/policy.h"
#include "util/log.h"
#include "util/unique_fd.h"

namespace mpq::sandbox {
namespace {

// Fds open when the program started: whatever the parent passed us. Those
// not named in keep_fds are strays and get closed. Fds our own start-up code
// opened are owned by RAII objects; closing them behind the owner's back
// would turn into a double close of a reused number, so they are left alone.
std::vector<int> list_open_fds() {
    std::vector<int> fds;
    DIR* d = opendir("/proc/self/fd");
    if (!d) return fds;
    int self = dirfd(d);
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = std::atoi(e->d_name);
        if (fd != self) fds.push_back(fd);
    }
    closedir(d);
    std::sort(fds.begin(), fds.end());
    return fds;
}

const std::vector<int>& inherited_fds() {
    static const std::vector<int> fds = list_open_fds();
    return fds;
}
// Taken before main() runs, i.e. before anything of ours opened an fd.
[[maybe_unused]] const bool g_inherited_taken = (inherited_fds(), true);

bool g_namespaces_entered = false;

Status write_file(const char* path, std::string_view text) {
    int fd = ::open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno(errno, "sandbox: open {}: {}", path, std::strerror(errno));
    ssize_t n = ::write(fd, text.data(), text.size());
    int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size()))
        return fail_errno(err, "sandbox: write {}: {}", path, std::strerror(err));
    return {};
}

unsigned thread_count() {
    DIR* d = opendir("/proc/self/task");
    if (!d) return 0;
    unsigned n = 0;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

struct User {
    uid_t uid;
    gid_t gid;
};

Result<User> lookup_user(const std::string& name) {
    std::vector<char> buf(16384);
    passwd pw{};
    passwd* res = nullptr;
    int rc = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &res);
    if (rc != 0 || !res) return fail("-run-with: unknown user '{}'", name);
    return User{pw.pw_uid, pw.pw_gid};
}

Status drop_user(const User& u) {
    // glibc applies each of these to every thread of the process.
    if (setgroups(1, &u.gid) != 0)
        return fail_errno(errno, "sandbox: setgroups: {}", std::strerror(errno));
    if (setresgid(u.gid, u.gid, u.gid) != 0)
        return fail_errno(errno, "sandbox: setresgid: {}", std::strerror(errno));
    if (setresuid(u.uid, u.uid, u.uid) != 0)
        return fail_errno(errno, "sandbox: setresuid: {}", std::strerror(errno));
    // Must not be able to get root back.
    if (u.uid != 0 && setuid(0) == 0) return fail("sandbox: could regain root after dropping it");
    return {};
}

Status close_strays(std::span<const int> keep_fds, unsigned& closed) {
    closed = 0;
    for (int fd : inherited_fds()) {
        if (fd <= 2) continue;
        if (std::find(keep_fds.begin(), keep_fds.end(), fd) != keep_fds.end()) continue;
        if (::fcntl(fd, F_GETFD) < 0) continue;  // already closed by its user
        ::close(fd);
        ++closed;
    }
    return {};
}

// Replaces the (private) mount tree with an empty read-only tmpfs: nothing
// left to open even through io_uring, which seccomp cannot see. The one
// thing kept is our own /proc/self/fd (proto::is_eventfd reads its links).
Status pivot_to_empty_root() {
    if (::mount("mpq-sandbox", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "size=16k,nr_inodes=16,mode=0755") != 0)
        return fail_errno(errno, "sandbox: mount tmpfs: {}", std::strerror(errno));
#if MPQ_SANITIZER_BUILD
    // Sanitizer builds only: LSan's exit-time check and ASan's reports read
    // /proc/PID/task and /proc/self/maps, so the whole /proc stays visible.
    if (::mkdir("/tmp/proc", 0555) != 0)
        return fail_errno(errno, "sandbox: mkdir /tmp/proc: {}", std::strerror(errno));
    if (::mount("/proc", "/tmp/proc", nullptr, MS_BIND | MS_REC, nullptr) != 0)
        return fail_errno(errno, "sandbox: bind /proc: {}", std::strerror(errno));
#else
    for (const char* d : {"/tmp/proc", "/tmp/proc/self", "/tmp/proc/self/fd"})
        if (::mkdir(d, 0555) != 0) return fail_errno(errno, "sandbox: mkdir {}: {}", d, std::strerror(errno));
    if (::mount("/proc/self/fd", "/tmp/proc/self/fd", nullptr, MS_BIND, nullptr) != 0)
        return fail_errno(errno, "sandbox: bind /proc/self/fd: {}", std::strerror(errno));
#endif
    if (::chdir("/tmp") != 0) return fail_errno(errno, "sandbox: chdir: {}", std::strerror(errno));
    // pivot_root(".", ".") stacks the old root on top of the new one; the
    // detach below then drops it (see pivot_root(2) NOTES).
    if (::syscall(SYS_pivot_root, ".", ".") != 0)
        return fail_errno(errno, "sandbox: pivot_root: {}", std::strerror(errno));
    if (::umount2(".", MNT_DETACH) != 0)
        return fail_errno(errno, "sandbox: umount old root: {}", std::strerror(errno));
    if (::chdir("/") != 0) return fail_errno(errno, "sandbox: chdir /: {}", std::strerror(errno));
    if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr) != 0)
        return fail_errno(errno, "sandbox: remount root read-only: {}", std::strerror(errno));
    return {};
}

Status set_limit(int resource, rlim_t value, const char* what) {
    rlimit cur{};
    if (getrlimit(resource, &cur) != 0)
        return fail_errno(errno, "sandbox: getrlimit {}: {}", what, std::strerror(errno));
    // Never raise: an outer limit that is already tighter stays.
    rlimit lim{std::min(value, cur.rlim_max), std::min(value, cur.rlim_max)};
    if (setrlimit(resource, &lim) != 0)
        return fail_errno(errno, "sandbox: setrlimit {}: {}", what, std::strerror(errno));
    return {};
}

Status set_limits(const SandboxOptions& opts) {
    std::vector<int> open_now = list_open_fds();
    int max_fd = open_now.empty() ? 2 : std::max(open_now.back(), 2);
    MPQ_TRY(set_limit(RLIMIT_NOFILE, static_cast<rlim_t>(max_fd) + 1 + opts.nofile_margin,
                      "RLIMIT_NOFILE"));
    // Core files would hold guest memory.
    MPQ_TRY(set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE"));
    if (opts.threads == SandboxOptions::Threads::Complete)
        MPQ_TRY(set_limit(RLIMIT_NPROC, 0, "RLIMIT_NPROC"));
    return {};
}

// action=trap: report the syscall and fail it, keep running.
void on_sigsys(int, siginfo_t* info, void* uctx) {
    char msg[96] = "sandbox: blocked syscall ";
    size_t len = std::strlen(msg);
    int nr = info->si_syscall;
    char digits[16];
    size_t nd = 0;
    unsigned v = nr < 0 ? 0u : static_cast<unsigned>(nr);
    do {
        digits[nd++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v && nd < sizeof(digits));
    while (nd) msg[len++] = digits[--nd];
    msg[len++] = '\n';
    [[maybe_unused]] ssize_t w = ::write(2, msg, len);
    auto* uc = static_cast<ucontext_t*>(uctx);
    uc->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
}

Status install_trap_handler() {
    struct sigaction sa{};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, nullptr) != 0)
        return fail_errno(errno, "sandbox: sigaction SIGSYS: {}", std::strerror(errno));
    return {};
}

uint32_t default_action(Action a) {
    switch (a) {
        case Action::Kill: return SCMP_ACT_KILL_PROCESS;
        case Action::Log: return SCMP_ACT_LOG;
        case Action::Trap: return SCMP_ACT_TRAP;
    }
    return SCMP_ACT_KILL_PROCESS;
}

}  // namespace

namespace {

// The precompiled steady-state filter (precompile_filter): compiled for a
// pid no process has (pid_max is at most 2^22), which a load replaces by
// its own; the rules it came from say whether it fits a load's options.
constexpr int kPidPlaceholder = 0x3ffffff3;
struct Precompiled {
    std::vector<Rule> rules;
    std::vector<sock_filter> prog;
};
std::optional<Precompiled> g_precompiled;
bool g_loaded_precompiled = false;

bool same_rules(const std::vector<Rule>& a, const std::vector<Rule>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++) {
        const Rule& x = a[i];
        const Rule& y = b[i];
        if (std::strcmp(x.name, y.name) != 0 || x.errno_value != y.errno_value || x.args.size() != y.args.size())
            return false;
        for (size_t k = 0; k < x.args.size(); k++) {
            const ArgCmp& p = x.args[k];
            const ArgCmp& q = y.args[k];
            if (p.arg != q.arg || p.op != q.op || p.a != q.a || p.b != q.b) return false;
        }
    }
    return true;
}

// Loads the precompiled program with `pid` in place of the placeholder;
// false (nothing loaded) if it does not fit.
bool load_precompiled(const SandboxOptions& opts, int pid) {
    if (!g_precompiled) return false;
    if (!same_rules(g_precompiled->rules, build_rules(opts, Role::RemoteSteadyState, kPidPlaceholder)))
        return false;
    std::vector<sock_filter> prog = g_precompiled->prog;
    int patched = 0;
    for (sock_filter& f : prog) {
        if (BPF_CLASS(f.code) == BPF_JMP && BPF_OP(f.code) == BPF_JEQ && BPF_SRC(f.code) == BPF_K &&
            f.k == static_cast<uint32_t>(kPidPlaceholder)) {
            f.k = static_cast<uint32_t>(pid);
            patched++;
        }
    }
    // The policy names our pid exactly once (tgkill); anything else means
    // the program is not what this code expects.
    if (patched != 1) return false;
    sock_fprog fp{static_cast<unsigned short>(prog.size()), prog.data()};
    g_loaded_precompiled = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fp) == 0;
    return g_loaded_precompiled;
}

// A libseccomp filter context, released with its owner.
using Filter = std::unique_ptr<void, void (*)(scmp_filter_ctx)>;

Result<Filter> build_filter(const SandboxOptions& opts, const std::vector<Rule>& rules) {
    Filter f(seccomp_init(default_action(opts.action)), seccomp_release);
    if (!f) return fail("sandbox: seccomp_init failed");
    // Every thread (the I/O workers) gets the filter, not only this one.
    int rc = seccomp_attr_set(f.get(), SCMP_FLTATR_CTL_TSYNC, 1);
    // i386/x32 entry points are another syscall table: refuse them outright.
    if (rc == 0) rc = seccomp_attr_set(f.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (rc != 0) return fail_errno(-rc, "sandbox: seccomp attributes: {}", std::strerror(-rc));
    for (const Rule& r : rules) {
        int nr = seccomp_syscall_resolve_name(r.name);
        if (nr == __NR_SCMP_ERROR) return fail("sandbox: unknown syscall '{}' in policy", r.name);
        std::vector<scmp_arg_cmp> cmps;
        for (const ArgCmp& c : r.args) cmps.push_back(scmp_arg_cmp{c.arg, c.op, c.a, c.b});
        uint32_t action = r.errno_value ? SCMP_ACT_ERRNO(static_cast<uint16_t>(r.errno_value))
                                        : SCMP_ACT_ALLOW;
        rc = seccomp_rule_add_array(f.get(), action, nr, static_cast<unsigned>(cmps.size()),
                                    cmps.empty() ? nullptr : cmps.data());
        if (rc != 0 && rc != -EEXIST)
            return fail_errno(-rc, "sandbox: seccomp rule for {}: {}", r.name, std::strerror(-rc));
    }
    return f;
}

}  // namespace

Status precompile_filter(const SandboxOptions& opts) {
    if (opts.mode == Mode::Off) return {};
    std::vector<Rule> rules = build_rules(opts, Role::RemoteSteadyState, kPidPlaceholder);
    auto f = build_filter(opts, rules);
    if (!f.ok()) return f.take_error();
    UniqueFd fd(::memfd_create("mpq-seccomp", MFD_CLOEXEC));
    if (!fd) return fail_errno(errno, "sandbox: memfd_create: {}", std::strerror(errno));
    int rc = seccomp_export_bpf(f->get(), fd.get());
    if (rc != 0) return fail_errno(-rc, "sandbox: seccomp_export_bpf: {}", std::strerror(-rc));
    off_t len = ::lseek(fd.get(), 0, SEEK_END);
    if (len <= 0 || len % static_cast<off_t>(sizeof(sock_filter)) != 0 ||
        len > static_cast<off_t>(sizeof(sock_filter) * BPF_MAXINSNS))
        return fail("sandbox: exported filter has {} bytes", static_cast<long long>(len));
    std::vector<sock_filter> prog(static_cast<size_t>(len) / sizeof(sock_filter));
    if (::pread(fd.get(), prog.data(), static_cast<size_t>(len), 0) != len)
        return fail_errno(errno, "sandbox: reading the exported filter: {}", std::strerror(errno));
    g_precompiled = Precompiled{std::move(rules), std::move(prog)};
    return {};
}

bool filter_was_precompiled() { return g_loaded_precompiled; }

Status load_filter(const SandboxOptions& opts, Role role, int pid) {
    if (role == Role::RemoteSteadyState && load_precompiled(opts, pid)) return {};
    auto f = build_filter(opts, build_rules(opts, role, pid));
    if (!f.ok()) return f.take_error();
    int rc = seccomp_load(f->get());
    if (rc != 0) return fail_errno(-rc, "sandbox: seccomp_load: {}", std::strerror(-rc));
    return {};
}

Status prepare(const SandboxOptions& opts) {
    if (opts.mode == Mode::Off) return {};
    if (opts.pid_namespace == Namespaces::New) {
        if (thread_count() > 1)
            return fail("sandbox: pidns=on must be prepared before any thread exists");
        MPQ_TRY(enter_pid_namespace(opts));  // from here on: the child
    }
    if (opts.namespaces == Namespaces::Keep) return {};
    if (thread_count() > 1)
        return fail("sandbox: namespaces=on must be prepared before any thread exists");
    if (geteuid() != 0) {
        // An unprivileged user gets the mount/net/ipc namespaces through a
        // user namespace in which it is root (and nothing outside).
        uid_t uid = geteuid();
        gid_t gid = getegid();
        if (unshare(CLONE_NEWUSER) != 0)
            return fail_errno(errno, "sandbox: unshare(user): {}", std::strerror(errno));
        MPQ_TRY(write_file("/proc/self/setgroups", "deny"));
        MPQ_TRY(write_file("/proc/self/uid_map", fmt::format("0 {} 1\n", uid)));
        MPQ_TRY(write_file("/proc/self/gid_map", fmt::format("0 {} 1\n", gid)));
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) != 0)
        return fail_errno(errno, "sandbox: unshare(mount,net,ipc): {}", std::strerror(errno));
    // Our later mounts must not leak back to the parent namespace.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return fail_errno(errno, "sandbox: make mounts private: {}", std::strerror(errno));
    g_namespaces_entered = true;
    return {};
}

Status apply(const SandboxOptions& opts, std::span<const int> keep_fds, Role role) {
    if (opts.mode == Mode::Off) return {};
    std::optional<User> user;
    if (!opts.run_as_user.empty()) {
        if (geteuid() != 0) return fail("-run-with user= needs to start as root");
        auto u = lookup_user(opts.run_as_user);
        if (!u) return u.take_error();
        user = *u;
    }
    unsigned closed = 0;
    MPQ_TRY(close_strays(keep_fds, closed));
    if (opts.namespaces == Namespaces::New) {
        if (!g_namespaces_entered)
            return fail("sandbox: namespaces=on needs sandbox::prepare() at start-up");
        MPQ_TRY(pivot_to_empty_root());
    }
    if (user) MPQ_TRY(drop_user(*user));
    MPQ_TRY(set_limits(opts));
    if (opts.action == Action::Trap) MPQ_TRY(install_trap_handler());
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return fail_errno(errno, "sandbox: PR_SET_NO_NEW_PRIVS: {}", std::strerror(errno));
    MPQ_TRY(load_filter(opts, role, static_cast<int>(getpid())));
    log::debug("sandbox on: {} stray fd(s) closed", closed);
    return {};
}

std::vector<PolicyEntry> describe_policy(const SandboxOptions& opts, Role role) {
    std::vector<PolicyEntry> out;
    for (const Rule& r : build_rules(opts, role, 1)) {
        auto it = std::find_if(out.begin(), out.end(), [&](const PolicyEntry& e) {
            return e.name == r.name && e.scope == r.scope;
        });
        if (it == out.end()) {
            out.push_back(PolicyEntry{r.name, seccomp_syscall_resolve_name(r.name),
                                      !r.args.empty(), r.errno_value, r.why, r.scope});
        } else {
            it->has_arg_filter = it->has_arg_filter || !r.args.empty();
        }
    }
    return out;
}

Status test_forbidden_syscall(std::string_view name) {
    auto report = [&](long rc, int err) {
        fmt::print(stderr, "sandbox-test: {} survived (rc={} errno={})\n", name, rc, err);
        std::fflush(stderr);
    };
    fmt::print(stderr, "sandbox-test: attempting forbidden syscall {}\n", name);
    std::fflush(stderr);
    errno = 0;
    if (name == "execve") {
        char* const argv[] = {nullptr};
        long rc = ::syscall(SYS_execve, "/nonexistent/mpq-sandbox-test", argv, argv);
        report(rc, errno);
    } else if (name == "socket") {
        long rc = ::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
        int err = errno;
        if (rc >= 0) ::close(static_cast<int>(rc));
        report(rc, err);
    } else if (name == "openat") {
        long rc = ::syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
        int err = errno;
        if (rc >= 0) ::close(static_cast<int>(rc));
        report(rc, err);
    } else if (name == "mmap-exec") {
        void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        int err = errno;
        if (p != MAP_FAILED) ::munmap(p, 4096);
        report(p == MAP_FAILED ? -1 : 0, err);
    } else if (name == "setuid") {
        // Raw call: glibc's setuid() would first signal every thread.
        long rc = ::syscall(SYS_setuid, static_cast<uid_t>(-1));
        report(rc, errno);
    } else {
        return fail("unknown forbidden-syscall test '{}' (execve, socket, openat, mmap-exec, setuid)",
                    name);
    }
    return {};
}

}  // namespace mpq::sandbox
