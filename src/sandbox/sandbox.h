// The device process's sandbox, applied once start-up is done (images,
// sockets and monitors open, I/O threads running): no_new_privs, a seccomp
// allowlist of what the steady state needs, stray fds closed, tight rlimits,
// optionally a dropped user and fresh namespaces.
//
// Why an allowlist and not QEMU's denylist: a device process that parses
// guest-controlled SCRIPTS, DMA descriptors and images needs a few dozen
// syscalls once it runs; everything else is attack surface.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace mpq::sandbox {

enum class Mode : uint8_t { Off, On };
// What a syscall outside the allowlist does.
enum class Action : uint8_t {
    Kill,  // the whole process dies by SIGSYS (default)
    Log,   // the kernel logs it (audit/dmesg) and lets it run: for debugging a policy
    Trap,  // SIGSYS handler reports it on stderr and the syscall fails with ENOSYS
};
enum class Group : uint8_t { Deny, Allow };
// Which steady state a policy describes: the device process, or the tiny
// supervisor that stays outside when the device process gets its own PID
// namespace (`pidns=on`).
// `WorkerSupervisor`: the supervisor of `-x-worker on` (remote/worker.h).
enum class Role : uint8_t { RemoteSteadyState, PidNamespaceSupervisor, WorkerSupervisor, PidNamespaceInit };
enum class Namespaces : uint8_t { Keep, New };
enum class OpenPolicy : uint8_t { Deny, ReadOnly, ReadWrite };

// `-sandbox on|off[,obsolete=,elevateprivileges=,spawn=,resourcecontrol=,action=,
//   namespaces=,open=]` and `-run-with user=NAME`.
struct SandboxOptions {
    Mode mode = Mode::On;
    Action action = Action::Kill;
    // QEMU's switch groups. Our allowlist never contains them; `allow` adds
    // the group back (so a QEMU command line keeps its meaning).
    Group obsolete = Group::Deny;
    Group elevate_privileges = Group::Deny;
    Group spawn = Group::Deny;
    Group resource_control = Group::Deny;
    // Opening paths after start-up (off by default: everything is open by then).
    OpenPolicy open = OpenPolicy::Deny;
    // Fresh mount (empty tmpfs root), network and IPC namespaces.
    Namespaces namespaces = Namespaces::Keep;
    // `pidns=on` (root only): the device process runs as PID 1 of a new PID
    // namespace, under a supervisor that forwards signals and its exit status.
    Namespaces pid_namespace = Namespaces::Keep;
    // Run as this user (root only): setgroups/setgid/setuid. Empty = stay.
    std::string run_as_user;
    // Extra fds allowed above what is open when the sandbox closes the door
    // (monitor clients, SYNC_SYSMEM memfds, io_uring/eventfd re-creation).
    unsigned nofile_margin = 64;
    // RLIMIT_NPROC 0 stops any new process or thread. Only valid once every
    // worker thread exists; the caller says so.
    enum class Threads : uint8_t { MayGrow, Complete } threads = Threads::MayGrow;
};

// Parses the value of `-sandbox` (QEMU syntax: implied `enable`, comma list).
// Applies on top of `base` so several -sandbox options compose.
Result<SandboxOptions> parse_option(std::string_view value, SandboxOptions base = {});
// Parses the value of `-run-with` (only `user=NAME` is understood).
Status parse_run_with(std::string_view value, SandboxOptions& opts);

// Applies everything. `keep_fds` are the fds the steady state uses; stdin,
// stdout and stderr are always kept; every other fd is closed. Call from the
// main thread after the I/O worker threads exist. On failure the process may
// be partly sandboxed: the caller should exit.
Status apply(const SandboxOptions& opts, std::span<const int> keep_fds,
             Role role = Role::RemoteSteadyState);

// Compiles the steady-state filter now, for a process to be started later
// (a -x-worker successor, cloned from a spawner that calls this once): its
// load then only patches in its own pid instead of running libseccomp's
// compiler (about 0.4 ms of every restart). apply() uses the compiled filter
// only if the same options give the same rules; otherwise it compiles.
Status precompile_filter(const SandboxOptions& opts);
// Whether this process's filter came from precompile_filter() (for tests).
bool filter_was_precompiled();

// Work that must happen while the process is still single-threaded (before
// any worker thread or io_uring exists): entering namespaces. A no-op unless
// `namespaces=on` or `pidns=on`. apply() finishes the job (pivot to an empty
// root). With `pidns=on` the process forks: only the child (PID 1 of the new
// namespace) returns; the parent becomes a sandboxed supervisor that never
// returns (it exits with the child's status, or dies by the child's signal).
Status prepare(const SandboxOptions& opts);

// Whether a policy rule exists in every build or only in sanitizer builds
// (the ASan/LSan runtime's own syscalls; such builds never ship).
enum class Scope : uint8_t { Always, SanitizerBuild };

// The policy as data, for review, tests and the README count. Sanitizer-
// build rules are separate entries (scope SanitizerBuild), never merged
// into an entry of the shipping policy.
struct PolicyEntry {
    std::string name;   // syscall name
    int nr = -1;        // x86_64 number
    bool has_arg_filter = false;
    int errno_value = 0;  // != 0: the call fails with this errno instead of running
    std::string why;
    Scope scope = Scope::Always;
};
std::vector<PolicyEntry> describe_policy(const SandboxOptions& opts,
                                         Role role = Role::RemoteSteadyState);

// TEST ONLY (hidden `-x-test-forbidden-syscall NAME`): makes one syscall the
// steady-state policy forbids, to prove the filter bites. Known names:
// execve, socket, openat, mmap-exec, setuid, ptrace. Returns an error for an
// unknown name; otherwise reports on stderr what happened if it survived.
Status test_forbidden_syscall(std::string_view name);

}  // namespace mpq::sandbox
