// The seccomp policy as reviewable data: one rule list per process role.
#pragma once

#include <seccomp.h>

#include <cstdint>
#include <vector>

#include "sandbox/sandbox.h"

// Sanitizer builds (GCC says so with __SANITIZE_ADDRESS__, clang with
// __has_feature) need a few more syscalls for their runtimes.
#if defined(__SANITIZE_ADDRESS__)
#define MPQ_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPQ_SANITIZER_BUILD 1
#endif
#endif
#ifndef MPQ_SANITIZER_BUILD
#define MPQ_SANITIZER_BUILD 0
#endif

namespace mpq::sandbox {

// One comparison on a syscall argument (libseccomp semantics).
struct ArgCmp {
    unsigned arg;
    scmp_compare op;
    uint64_t a;
    uint64_t b = 0;
};

// Several rules for one syscall are OR-ed; the comparisons inside a rule are
// AND-ed. `errno_value` != 0 makes the rule fail the call instead of allowing it.
struct Rule {
    const char* name;
    std::vector<ArgCmp> args;
    const char* why;
    int errno_value = 0;
    Scope scope = Scope::Always;
};

// The rules for `role` with the option groups applied. `self_pid` narrows
// signals to our own process.
std::vector<Rule> build_rules(const SandboxOptions& opts, Role role, int self_pid);

// no_new_privs is the caller's job; this loads the filter for `role`
// (TSYNC, non-x86_64 ABIs killed); `pid` as for build_rules. In sandbox.cc.
Status load_filter(const SandboxOptions& opts, Role role, int pid);

// pidns=on: unshare(CLONE_NEWPID) and fork; returns in the child only. In pidns.cc.
Status enter_pid_namespace(const SandboxOptions& opts);

// pidns=on with -x-worker on: PID 1 of the workers' namespace, forked by
// their supervisor. It keeps nothing open and only reaps what is
// reparented to it; when it dies (with the supervisor: PR_SET_PDEATHSIG)
// the kernel kills every process of the namespace. In pidns.cc.
[[noreturn]] void run_namespace_init(const SandboxOptions& opts);

}  // namespace mpq::sandbox
