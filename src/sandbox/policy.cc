// The syscall allowlist of qemu-scsi-dev after start-up. Every entry says
// why the steady state needs it; anything not listed kills the process.
//
// Measured with `strace -f` on the remote serving qtest-driven SCSI I/O
// (raw, aio=threads and aio=io_uring,cache=none), sync, reset and shutdown:
// close epoll_ctl epoll_wait exit exit_group fcntl futex io_uring_enter
// madvise mmap mprotect munmap newfstatat pread64 pwrite64 read readlink
// recvmsg rt_sigprocmask sendmsg write. The other entries are the monitor's
// socket calls, qcow2/flush/discard paths and rare paths (abort, vDSO
// fallbacks), each said so below.
#include "sandbox/policy.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

namespace mpq::sandbox {
namespace {

// pthread_create's clone() flags; anything that would make a new process,
// namespace or tracee must be clear.
constexpr uint64_t kThreadFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                  CLONE_THREAD | CLONE_SYSVSEM;
constexpr uint64_t kForbiddenCloneFlags =
    CLONE_VFORK | CLONE_PARENT | CLONE_PTRACE | CLONE_UNTRACED | CLONE_PIDFD | CLONE_NEWNS |
    CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
    CLONE_NEWNET | CLONE_IO;

ArgCmp masked_eq(unsigned arg, uint64_t mask, uint64_t value) {
    return ArgCmp{arg, SCMP_CMP_MASKED_EQ, mask, value};
}
ArgCmp eq(unsigned arg, uint64_t value) { return ArgCmp{arg, SCMP_CMP_EQ, value}; }

#if MPQ_SANITIZER_BUILD
// Sanitizer builds only (they never ship): what the ASan/LSan runtime does
// on its own inside a sandboxed process. Found by running the ASan remote
// through the integration tests with action=log and reading the kernel's
// seccomp records (type=1326). Without these the sandboxed remote dies by
// SIGSYS at exit (LSan's leak check) or while printing a report.
// The runtime checks memory it is handed (e.g. at a report) by writing it
// into a pipe; the -x-worker supervisor reaches this when its worker dies.
void sanitizer_memory_probe(std::vector<Rule>& r) {
    r.push_back({"pipe2", {}, "sanitizer builds only: ASan probes memory by writing it into a pipe", 0,
                 Scope::SanitizerBuild});
}

void sanitizer_runtime(std::vector<Rule>& r) {
    const char* why_thread = "sanitizer builds only: ASan sets up each new thread";
    r.push_back({"sigaltstack", {}, why_thread, 0, Scope::SanitizerBuild});
    r.push_back({"sched_getaffinity", {}, why_thread, 0, Scope::SanitizerBuild});
    sanitizer_memory_probe(r);
    // LSan's exit-time check stops the world: a tracer task (clone with
    // CLONE_UNTRACED, no CLONE_THREAD) lists /proc/PID/task and ptrace-attaches
    // every thread to scan their registers and stacks.
    constexpr uint64_t kTracerFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED;
    r.push_back({"clone",
                 {masked_eq(0, kThreadFlags | kForbiddenCloneFlags, kTracerFlags)},
                 "sanitizer builds only: LSan's tracer task (exactly its flags)", 0,
                 Scope::SanitizerBuild});
    const char* why_lsan = "sanitizer builds only: LSan's exit-time leak check";
    for (const char* n : {"ptrace", "wait4", "getppid", "getdents64", "getdents"})
        r.push_back({n, {}, why_lsan, 0, Scope::SanitizerBuild});
    for (uint64_t opt : {PR_SET_PTRACER, PR_SET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE})
        r.push_back({"prctl", {eq(0, opt)}, why_lsan, 0, Scope::SanitizerBuild});
    // Reports and the leak check read /proc/self/maps, /proc/PID/task and
    // the binary's debug info (GCC's in-process symbolizer): read-only.
    constexpr uint64_t kWriting = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
    r.push_back({"openat", {masked_eq(2, kWriting, 0)},
                 "sanitizer builds only: /proc and debug info, read-only", 0,
                 Scope::SanitizerBuild});
    r.push_back({"open", {masked_eq(1, kWriting, 0)},
                 "sanitizer builds only: /proc and debug info, read-only", 0,
                 Scope::SanitizerBuild});
    // A report (SEGV included) stats the binary it symbolizes.
    r.push_back({"newfstatat", {}, "sanitizer builds only: a report stats the binary it symbolizes", 0,
                 Scope::SanitizerBuild});
}
#endif

void remote_steady_state(std::vector<Rule>& r, int self_pid) {
    // --- I/O on fds that are already open -------------------------------
    r.push_back({"read", {}, "wire frames, eventfd wake-ups, monitor input"});
    r.push_back({"write", {}, "replies, eventfd/irqfd signalling, log lines"});
    r.push_back({"readv", {}, "vectored reads (stdio, block layer)"});
    r.push_back({"writev", {}, "vectored writes (stdio, block layer)"});
    r.push_back({"pread64", {}, "image reads (aio=threads)"});
    r.push_back({"pwrite64", {}, "image writes (aio=threads)"});
    r.push_back({"preadv", {}, "vectored image reads"});
    r.push_back({"pwritev", {}, "vectored image writes"});
    r.push_back({"preadv2", {}, "vectored image reads with flags"});
    r.push_back({"pwritev2", {}, "vectored image writes with flags"});
    r.push_back({"recvmsg", {}, "wire frames with SCM_RIGHTS (SYNC_SYSMEM memfds, irqfds)"});
    r.push_back({"sendmsg", {}, "wire replies"});
    r.push_back({"recvfrom", {}, "recv() on monitor sockets"});
    r.push_back({"sendto", {}, "send() on monitor sockets"});
    r.push_back({"fsync", {}, "guest SYNCHRONIZE CACHE"});
    r.push_back({"fdatasync", {}, "guest SYNCHRONIZE CACHE (data only)"});
    r.push_back({"fallocate", {}, "discard / write-zeroes (punch hole, zero range)"});
    r.push_back({"ftruncate", {}, "qcow2 grows or trims its image file"});
    r.push_back({"lseek", {}, "image size and SEEK_DATA/SEEK_HOLE"});
    r.push_back({"fstat", {}, "sizing an open fd"});
    // glibc's fstat() is newfstatat(fd, "", AT_EMPTY_PATH): only that form.
    r.push_back({"newfstatat", {masked_eq(3, AT_EMPTY_PATH, AT_EMPTY_PATH)},
                 "glibc fstat() on an open fd (AT_EMPTY_PATH only, no path lookups)"});
    r.push_back({"close", {}, "closing fds (monitor clients, replaced memfds)"});
    r.push_back({"readlink", {},
                 "SET_IRQFD checks that its fds are eventfds via /proc/self/fd/N (reads a "
                 "symlink, opens nothing; namespaces=on leaves only our own fd directory)"});
    r.push_back({"shutdown", {}, "ending a monitor client or the channel"});
    r.push_back({"accept4", {}, "monitor clients on sockets that listen already"});
    r.push_back({"accept", {}, "monitor clients (older libc path)"});
    r.push_back({"getsockopt", {}, "SO_ERROR / SO_PEERCRED on existing sockets"});
    for (uint64_t cmd : {F_GETFL, F_SETFL, F_GETFD, F_SETFD})
        r.push_back({"fcntl", {eq(1, cmd)}, "O_NONBLOCK / FD_CLOEXEC on received fds"});
    r.push_back({"fcntl", {eq(1, F_DUPFD_CLOEXEC)},
                 "GuestMemory keeps its own fd of each SYNC_SYSMEM file for pread/pwrite DMA"});
    r.push_back({"fcntl", {eq(1, F_GET_SEALS)},
                 "GuestMemory asks whether guest RAM can shrink (else it checks before pwrite)"});
    // ioctl: only harmless queries. io_uring needs none.
    r.push_back({"ioctl", {eq(1, TCGETS)}, "stdio asks whether stderr is a tty"});
    r.push_back({"ioctl", {eq(1, FIONREAD)}, "bytes pending on a socket"});
    r.push_back({"ioctl", {eq(1, FIONBIO)}, "non-blocking mode on an accepted socket"});
    // --- waiting ------------------------------------------------------------
    r.push_back({"epoll_wait", {}, "the event loop"});
    r.push_back({"epoll_pwait", {}, "the event loop (glibc's epoll_wait)"});
    r.push_back({"epoll_ctl", {}, "adding/removing fds (monitor clients, irqfds)"});
    r.push_back({"poll", {}, "bounded blocking waits on one fd"});
    r.push_back({"ppoll", {}, "bounded blocking waits on one fd (glibc's poll)"});
    // --- asynchronous block I/O ----------------------------------------------
    // Rings and AIO contexts are made at start-up; after that only
    // submission and completion. io_uring_setup/register stay closed so no new
    // (unrestricted) ring can appear.
    r.push_back({"io_uring_enter", {}, "aio=io_uring submit/complete; the event loop's ring (device sockets)"});
    r.push_back({"io_submit", {}, "aio=native submission"});
    r.push_back({"io_getevents", {}, "aio=native completion"});
    r.push_back({"io_pgetevents", {}, "aio=native completion (newer libaio)"});
    // --- memory ---------------------------------------------------------------
    // Never executable: no new code may appear in the process.
    r.push_back({"mmap", {masked_eq(2, PROT_EXEC, 0)},
                 "malloc, thread stacks, SYNC_SYSMEM guest RAM (never PROT_EXEC)"});
    r.push_back({"mprotect", {masked_eq(2, PROT_EXEC, 0)},
                 "thread stack guards, malloc arenas (never PROT_EXEC)"});
    r.push_back({"munmap", {}, "freeing memory, dropping old guest RAM mappings"});
    r.push_back({"mremap", {}, "realloc of large blocks"});
    // Any advice: besides these only pre-faulting, and no advice reaches
    // beyond this process's own mappings.
    r.push_back({"madvise", {},
                 "free() and exiting threads give memory back; MADV_POPULATE_WRITE/READ "
                 "pre-fault guest RAM that DMA uses often (mem/guest_memory.cc)"});
    r.push_back({"brk", {}, "malloc's main heap"});
    // --- threads and synchronisation -----------------------------------------
    r.push_back({"futex", {}, "mutexes, condition variables, thread join"});
    r.push_back({"clone",
                 {masked_eq(0, kThreadFlags | kForbiddenCloneFlags, kThreadFlags)},
                 "new I/O worker threads only (thread flags, nothing else)"});
    // clone3 passes its flags in memory seccomp cannot read: fail it so glibc
    // falls back to the filtered clone().
    r.push_back({"clone3", {}, "glibc falls back to clone() (ENOSYS)", ENOSYS});
    r.push_back({"set_robust_list", {}, "every new thread registers its robust futexes"});
    r.push_back({"rseq", {}, "every new thread registers restartable sequences"});
    r.push_back({"sched_yield", {}, "spin-wait back-off in locks"});
    r.push_back({"exit", {}, "a worker thread ends"});
    r.push_back({"exit_group", {}, "the process ends"});
    r.push_back({"gettid", {}, "thread ids for locks and logs"});
    r.push_back({"getpid", {}, "abort() and raise() name their own process"});
    r.push_back({"rt_sigprocmask", {}, "thread creation/exit block signals around clone"});
    r.push_back({"rt_sigreturn", {}, "returning from a signal handler"});
    r.push_back({"rt_sigaction", {}, "abort() restores SIGABRT's default (rare path)"});
    r.push_back({"tgkill", {eq(0, static_cast<uint64_t>(self_pid))},
                 "abort()/raise() signal a thread of this process only"});
    r.push_back({"restart_syscall", {}, "a sleep restarted after a signal"});
    // --- time and randomness ----------------------------------------------------
    r.push_back({"clock_gettime", {}, "timers (vDSO fallback, rare path)"});
    r.push_back({"gettimeofday", {}, "timestamps (vDSO fallback, rare path)"});
    r.push_back({"clock_nanosleep", {}, "back-off sleeps"});
    r.push_back({"nanosleep", {}, "back-off sleeps (older libc path)"});
    r.push_back({"getrandom", {}, "hash seeds, std::random_device"});
    r.push_back({"prctl", {eq(0, PR_SET_NAME)}, "worker threads name themselves"});
#if MPQ_SANITIZER_BUILD
    sanitizer_runtime(r);
#endif
}

// The supervisor outside the PID namespace: waits for the device process,
// forwards SIGTERM/SIGINT/SIGHUP to it, then exits the same way. It holds no
// fd but stdio and one pipe end.
void pidns_supervisor(std::vector<Rule>& r, int child_pid) {
    r.push_back({"rt_sigtimedwait", {}, "waiting for SIGCHLD and the signals it forwards"});
    r.push_back({"wait4", {}, "reaping the device process"});
    r.push_back({"kill", {eq(0, static_cast<uint64_t>(child_pid))},
                 "forwarding a signal to the device process only"});
    r.push_back({"kill", {eq(0, static_cast<uint64_t>(getpid()))},
                 "re-raising the device process's fatal signal on itself"});
    r.push_back({"rt_sigprocmask", {}, "unblocking the signal it re-raises"});
    r.push_back({"rt_sigaction", {}, "default action for the signal it re-raises"});
    r.push_back({"write", {}, "a message on stderr"});
    r.push_back({"rt_sigreturn", {}, "returning from a signal handler"});
    r.push_back({"restart_syscall", {}, "a wait restarted after a signal"});
    r.push_back({"exit_group", {}, "exiting with the device process's status"});
    r.push_back({"exit", {}, "exiting"});
#if MPQ_SANITIZER_BUILD
    r.push_back({"sigaltstack", {}, "sanitizer builds only: ASan's signal stack on the way out",
                 0, Scope::SanitizerBuild});
#endif
}

// PID 1 of the workers' namespace (pidns=on with -x-worker on): it reaps
// orphans and nothing else.
void pidns_init(std::vector<Rule>& r) {
    r.push_back({"rt_sigtimedwait", {}, "waiting for SIGCHLD"});
    r.push_back({"wait4", {}, "reaping orphans of the namespace"});
    r.push_back({"rt_sigreturn", {}, "returning from a signal handler"});
    r.push_back({"restart_syscall", {}, "a wait restarted after a signal"});
    r.push_back({"exit_group", {}, "exiting"});
    r.push_back({"exit", {}, "exiting"});
#if MPQ_SANITIZER_BUILD
    r.push_back({"sigaltstack", {}, "sanitizer builds only: ASan's signal stack on the way out",
                 0, Scope::SanitizerBuild});
#endif
}

// The supervisor of `-x-worker on` (remote/worker.h): it waits for its
// worker, takes the fds the worker hands over, passes them to the spawner
// that forks the next worker, and logs. It never parses the device state.
void worker_supervisor(std::vector<Rule>& r) {
    r.push_back({"poll", {}, "waiting for the worker's messages and signals"});
    r.push_back({"ppoll", {}, "waiting (glibc's poll)"});
    r.push_back({"read", {}, "the signalfd"});
    r.push_back({"recvmsg", {}, "fds the worker hands over; the spawner's answer"});
    r.push_back({"sendmsg", {}, "fds and the spawn request to the spawner"});
    r.push_back({"socketpair", {eq(0, AF_UNIX)}, "the hand-over channel of each new worker"});
    r.push_back({"close", {}, "fds replaced or passed on"});
    r.push_back({"wait4", {}, "reaping a worker"});
    // A worker's pid changes with every restart: any pid >= 0 (never -1,
    // every process, or -PGID, a whole group other than our own).
    r.push_back({"kill", {masked_eq(0, 0xffffffff80000000ull, 0)},
                 "forwarding SIGTERM/SIGINT/SIGHUP to the worker; re-raising its fatal signal"});
    r.push_back({"getpid", {}, "re-raising a fatal signal on itself"});
    r.push_back({"rt_sigprocmask", {}, "unblocking the signal it re-raises"});
    r.push_back({"rt_sigaction", {}, "default action for the signal it re-raises"});
    r.push_back({"rt_sigreturn", {}, "returning from a signal handler"});
    r.push_back({"restart_syscall", {}, "a wait restarted after a signal"});
    r.push_back({"write", {}, "log lines"});
    r.push_back({"brk", {}, "malloc (log lines, the fd table)"});
    r.push_back({"mmap", {masked_eq(2, PROT_EXEC, 0)}, "malloc, never executable"});
    r.push_back({"munmap", {}, "free"});
    r.push_back({"madvise", {}, "free"});
    r.push_back({"clock_gettime", {}, "restart times (vDSO fallback)"});
    r.push_back({"exit_group", {}, "exiting with the worker's status, or giving up"});
    r.push_back({"exit", {}, "exiting"});
#if MPQ_SANITIZER_BUILD
    r.push_back({"sigaltstack", {}, "sanitizer builds only: ASan's signal stack", 0, Scope::SanitizerBuild});
    r.push_back({"futex", {}, "sanitizer builds only: the runtime's locks", 0, Scope::SanitizerBuild});
    // Without it the supervisor died by SIGSYS when a worker died.
    sanitizer_memory_probe(r);
#endif
}

void add_obsolete(std::vector<Rule>& r) {
    for (const char* n : {"_sysctl", "create_module", "get_kernel_syms", "query_module",
                          "sysfs", "uselib", "ustat"})
        r.push_back({n, {}, "obsolete=allow (QEMU compatibility)"});
}

void add_elevate_privileges(std::vector<Rule>& r) {
    for (const char* n : {"setuid", "setgid", "setpgid", "setsid", "setreuid", "setregid",
                          "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups"})
        r.push_back({n, {}, "elevateprivileges=allow (QEMU compatibility)"});
}

void add_spawn(std::vector<Rule>& r) {
    for (const char* n : {"fork", "vfork", "execve", "execveat", "setns", "unshare", "wait4"})
        r.push_back({n, {}, "spawn=allow (QEMU compatibility)"});
    r.push_back({"clone", {}, "spawn=allow: any clone"});
}

void add_resource_control(std::vector<Rule>& r) {
    for (const char* n : {"setpriority", "sched_setparam", "sched_setscheduler",
                          "sched_setaffinity", "sched_getaffinity", "getpriority"})
        r.push_back({n, {}, "resourcecontrol=allow (QEMU compatibility)"});
}

void add_open(std::vector<Rule>& r, OpenPolicy p) {
    if (p == OpenPolicy::Deny) return;
    if (p == OpenPolicy::ReadOnly) {
        constexpr uint64_t kWriting = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
        r.push_back({"openat", {masked_eq(2, kWriting, 0)}, "open=ro: read-only opens"});
        r.push_back({"open", {masked_eq(1, kWriting, 0)}, "open=ro: read-only opens"});
    } else {
        r.push_back({"openat", {}, "open=rw: any open"});
        r.push_back({"open", {}, "open=rw: any open"});
    }
}

}  // namespace

std::vector<Rule> build_rules(const SandboxOptions& opts, Role role, int self_pid) {
    std::vector<Rule> r;
    switch (role) {
        case Role::RemoteSteadyState:
            remote_steady_state(r, self_pid);
            break;
        case Role::WorkerSupervisor:
            worker_supervisor(r);
            return r;
        case Role::PidNamespaceSupervisor:
            // self_pid is the device process here: the only kill() target.
            pidns_supervisor(r, self_pid);
            return r;  // QEMU's groups and open= concern the device process only
        case Role::PidNamespaceInit:
            pidns_init(r);
            return r;
    }
    if (opts.obsolete == Group::Allow) add_obsolete(r);
    if (opts.elevate_privileges == Group::Allow) add_elevate_privileges(r);
    if (opts.spawn == Group::Allow) {
        // clone3 becomes a real allow: drop the ENOSYS rule.
        std::erase_if(r, [](const Rule& x) { return std::string_view(x.name) == "clone3"; });
        r.push_back({"clone3", {}, "spawn=allow: any clone3"});
        add_spawn(r);
    }
    if (opts.resource_control == Group::Allow) add_resource_control(r);
    add_open(r, opts.open);
    return r;
}

}  // namespace mpq::sandbox
