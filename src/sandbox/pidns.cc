// pidns=on: the device process as PID 1 of its own PID namespace.
//
// unshare(CLONE_NEWPID) only moves future children, so the process forks:
// the child is PID 1 of the new namespace and carries on as the device
// process (it cannot see or signal any process outside); the parent stays
// behind as a supervisor with nothing open but stdio and a pipe, under its
// own tiny seccomp policy. The pid the caller knows is the supervisor's:
// SIGTERM/SIGINT/SIGHUP to it reach the device process, the device
// process's exit status or fatal signal becomes the supervisor's, and if the
// supervisor is killed the device process dies too (PR_SET_PDEATHSIG).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sandbox/policy.h"
#include "util/log.h"

namespace mpq::sandbox {
namespace {

constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP};

void close_all_but(int keep) {
    std::vector<int> fds;
    if (DIR* d = opendir("/proc/self/fd")) {
        int self = dirfd(d);
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            int fd = std::atoi(e->d_name);
            if (fd > 2 && fd != keep && fd != self) fds.push_back(fd);
        }
        closedir(d);
    }
    for (int fd : fds) ::close(fd);
}

// Exits the way the device process did.
[[noreturn]] void exit_like(int status) {
    if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        // Our own death by the same signal, so the caller sees e.g. SIGSYS.
        struct sigaction sa{};
        sa.sa_handler = SIG_DFL;
        ::sigaction(sig, &sa, nullptr);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        ::sigprocmask(SIG_UNBLOCK, &one, nullptr);
        ::kill(::getpid(), sig);
    }
    ::_exit(1);
}

// A helper process that only waits: no new processes, no files, no cores,
// and its own filter (`role`, `pid` as for build_rules). False, said on
// stderr, if the filter could not be loaded.
bool lock_down(const SandboxOptions& opts, Role role, int pid, const char* who) {
    rlimit zero{0, 0};
    ::setrlimit(RLIMIT_NPROC, &zero);
    ::setrlimit(RLIMIT_CORE, &zero);
    SandboxOptions own;
    own.action = opts.action == Action::Trap ? Action::Kill : opts.action;
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && load_filter(own, role, pid).ok()) return true;
    std::string msg = std::string("qemu-scsi-dev: ") + who + ": cannot sandbox itself\n";
    [[maybe_unused]] ssize_t w = ::write(2, msg.data(), msg.size());
    return false;
}

[[noreturn]] void supervise(const SandboxOptions& opts, pid_t child, int alive_fd) {
    close_all_but(alive_fd);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (int sig : kForwarded) sigaddset(&set, sig);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    // Unsandboxed supervision is not what was asked for: take the child down.
    if (!lock_down(opts, Role::PidNamespaceSupervisor, static_cast<int>(child), "pidns supervisor"))
        ::kill(child, SIGKILL);
    for (;;) {
        siginfo_t si{};
        int sig = ::sigwaitinfo(&set, &si);
        if (sig < 0) continue;  // EINTR
        if (sig != SIGCHLD) {
            ::kill(child, sig);
            continue;
        }
        int status = 0;
        pid_t r = ::waitpid(child, &status, WNOHANG);
        if (r == child) exit_like(status);
        if (r < 0 && errno == ECHILD) ::_exit(1);
    }
}

}  // namespace

void run_namespace_init(const SandboxOptions& opts) {
    close_all_but(-1);
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_BLOCK, &all, nullptr);
    // An unfiltered PID 1 is not what was asked for: its exit takes the
    // namespace down, and the supervisor gives up on its workers.
    if (!lock_down(opts, Role::PidNamespaceInit, 0, "pidns init")) ::_exit(1);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        siginfo_t si{};
        (void)::sigwaitinfo(&chld, &si);
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
    }
}

Status enter_pid_namespace(const SandboxOptions& opts) {
    if (::geteuid() != 0) return fail("-sandbox pidns=on needs to start as root");
    int alive[2];
    if (::pipe2(alive, O_CLOEXEC) != 0)
        return fail_errno(errno, "sandbox: pipe: {}", std::strerror(errno));
    if (::unshare(CLONE_NEWPID) != 0) {
        int e = errno;
        ::close(alive[0]);
        ::close(alive[1]);
        return fail_errno(e, "sandbox: unshare(pid): {}", std::strerror(e));
    }
    pid_t child = ::fork();
    if (child < 0) {
        int e = errno;
        ::close(alive[0]);
        ::close(alive[1]);
        return fail_errno(e, "sandbox: fork into the PID namespace: {}", std::strerror(e));
    }
    if (child > 0) {
        ::close(alive[0]);
        supervise(opts, child, alive[1]);
    }
    // The device process. Dies with its supervisor; if the supervisor is
    // already gone (killed between fork and here), its end of the pipe is
    // closed and the read sees EOF.
    ::close(alive[1]);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        return fail_errno(errno, "sandbox: PR_SET_PDEATHSIG: {}", std::strerror(errno));
    int fl = ::fcntl(alive[0], F_GETFL);
    ::fcntl(alive[0], F_SETFL, fl | O_NONBLOCK);
    char c;
    ssize_t n = ::read(alive[0], &c, 1);
    int e = errno;
    ::close(alive[0]);
    if (n == 0 || (n < 0 && e != EAGAIN)) return fail("sandbox: pidns supervisor is gone");
    log::debug("sandbox: running as PID {} of a new PID namespace", ::getpid());
    return {};
}

}  // namespace mpq::sandbox
