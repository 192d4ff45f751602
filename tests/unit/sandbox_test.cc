// The sandbox: option parsing, the policy as data, and the filter applied in
// forked children (the filter cannot be removed once loaded).
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "sandbox/sandbox.h"

namespace sb = mpq::sandbox;

namespace {

sb::SandboxOptions parse_ok(std::string_view v) {
    auto r = sb::parse_option(v);
    EXPECT_TRUE(r.ok()) << v << ": " << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : sb::SandboxOptions{};
}

struct ChildResult {
    int status = 0;
    std::string output;  // what the child wrote to its pipe
    bool exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
    bool killed_by(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
};

// Runs `body` in a forked child; it returns the exit code and may write to
// `out_fd`. Sandboxing the test process itself would be irreversible.
ChildResult run_child(const std::function<int(int out_fd)>& body) {
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        _exit(body(p[1]));
    }
    close(p[1]);
    ChildResult res;
    char buf[512];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) > 0) res.output.append(buf, static_cast<size_t>(n));
    close(p[0]);
    EXPECT_EQ(waitpid(pid, &res.status, 0), pid);
    return res;
}

void say(int fd, std::string_view s) { [[maybe_unused]] ssize_t n = write(fd, s.data(), s.size()); }

int apply_or_exit(const sb::SandboxOptions& o, int out_fd) {
    int keep[] = {out_fd};
    auto st = sb::apply(o, keep);
    if (!st.ok()) {
        say(out_fd, "apply failed: " + st.error().message);
        return 90;
    }
    return 0;
}

}  // namespace

TEST(SandboxOptions, DefaultsAreOnAndDenyEverything) {
    sb::SandboxOptions o;
    EXPECT_EQ(o.mode, sb::Mode::On);
    EXPECT_EQ(o.action, sb::Action::Kill);
    EXPECT_EQ(o.spawn, sb::Group::Deny);
    EXPECT_EQ(o.open, sb::OpenPolicy::Deny);
}

TEST(SandboxOptions, ParsesQemuSyntax) {
    EXPECT_EQ(parse_ok("off").mode, sb::Mode::Off);
    EXPECT_EQ(parse_ok("on").mode, sb::Mode::On);
    EXPECT_EQ(parse_ok("enable=off").mode, sb::Mode::Off);
    auto o = parse_ok("on,obsolete=allow,elevateprivileges=children,spawn=allow,resourcecontrol=deny");
    EXPECT_EQ(o.obsolete, sb::Group::Allow);
    EXPECT_EQ(o.elevate_privileges, sb::Group::Deny);
    EXPECT_EQ(o.spawn, sb::Group::Allow);
    EXPECT_EQ(o.resource_control, sb::Group::Deny);
    EXPECT_EQ(parse_ok("on,action=log").action, sb::Action::Log);
    EXPECT_EQ(parse_ok("on,action=trap").action, sb::Action::Trap);
    EXPECT_EQ(parse_ok("on,namespaces=on").namespaces, sb::Namespaces::New);
    EXPECT_EQ(parse_ok("on,open=ro").open, sb::OpenPolicy::ReadOnly);
    EXPECT_EQ(parse_ok("on,nofile-margin=8").nofile_margin, 8u);
    EXPECT_EQ(parse_ok("on,pidns=on").pid_namespace, sb::Namespaces::New);
    EXPECT_EQ(parse_ok("on").pid_namespace, sb::Namespaces::Keep);
    EXPECT_FALSE(sb::parse_option("on,pidns=maybe").ok());
}

TEST(SandboxOptions, LaterOptionsComposeOnEarlierOnes) {
    auto a = sb::parse_option("on,spawn=allow");
    ASSERT_TRUE(a.ok());
    auto b = sb::parse_option("on,action=log", *a);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->spawn, sb::Group::Allow);
    EXPECT_EQ(b->action, sb::Action::Log);
}

TEST(SandboxOptions, RejectsBadInputWithAMessage) {
    for (std::string_view bad :
         {"maybe", "on,spawn=perhaps", "on,unknown=1", "on,action=explode", "on,off",
          "on,nofile-margin=-1", "on,nofile-margin=99999999999", "on,nofile-margin=",
          "on,open=write", "on,spawn", "on,,spawn=allow", ""}) {
        auto r = sb::parse_option(bad);
        EXPECT_FALSE(r.ok()) << "accepted '" << bad << "'";
        if (!r.ok()) {
            EXPECT_FALSE(r.error().message.empty());
        }
    }
    EXPECT_FALSE(sb::parse_option(std::string(5000, 'a')).ok());
}

TEST(SandboxOptions, RunWithUser) {
    sb::SandboxOptions o;
    ASSERT_TRUE(sb::parse_run_with("user=nobody", o).ok());
    EXPECT_EQ(o.run_as_user, "nobody");
    EXPECT_FALSE(sb::parse_run_with("user=", o).ok());
    EXPECT_FALSE(sb::parse_run_with("chroot=/x", o).ok());
}

// The shipping policy: sanitizer builds add the ASan/LSan runtime's own
// syscalls as separate SanitizerBuild entries, left out here.
std::vector<sb::PolicyEntry> shipping_policy(const sb::SandboxOptions& o) {
    auto p = sb::describe_policy(o);
    std::erase_if(p, [](const sb::PolicyEntry& e) { return e.scope != sb::Scope::Always; });
    return p;
}

TEST(SandboxPolicy, SteadyStateIsASmallAllowlistWithArgumentFilters) {
    auto p = shipping_policy({});
    auto find = [&](std::string_view n) -> const sb::PolicyEntry* {
        for (const auto& e : p)
            if (e.name == n) return &e;
        return nullptr;
    };
    for (const auto& e : p) {
        EXPECT_GE(e.nr, 0) << e.name << " is not an x86_64 syscall";
        EXPECT_FALSE(e.why.empty()) << e.name << " has no reason";
    }
    for (std::string_view n : {"execve", "execveat", "fork", "vfork", "socket", "connect",
                               "bind", "open", "openat", "openat2", "ptrace", "setuid",
                               "io_uring_setup", "io_uring_register", "unshare", "setns",
                               "mount", "bpf", "process_vm_writev", "memfd_create", "kill"})
        EXPECT_EQ(find(n), nullptr) << n << " must not be allowed";
    for (std::string_view n : {"mmap", "mprotect", "clone", "ioctl", "fcntl", "tgkill"}) {
        ASSERT_NE(find(n), nullptr) << n;
        EXPECT_TRUE(find(n)->has_arg_filter) << n << " must be argument-filtered";
    }
    ASSERT_NE(find("clone3"), nullptr);
    EXPECT_EQ(find("clone3")->errno_value, ENOSYS);
    size_t allowed = 0;
    for (const auto& e : p) allowed += e.errno_value == 0;
    std::printf("remote steady state allows %zu syscalls\n", allowed);
    EXPECT_LE(allowed, 80u);
}

TEST(SandboxPolicy, QemuGroupsAddTheirSyscallsBack) {
    auto has = [](const sb::SandboxOptions& o, std::string_view n) {
        for (const auto& e : shipping_policy(o))
            if (e.name == n) return e.errno_value == 0;
        return false;
    };
    EXPECT_TRUE(has(parse_ok("on,spawn=allow"), "execve"));
    EXPECT_TRUE(has(parse_ok("on,spawn=allow"), "clone3"));
    EXPECT_TRUE(has(parse_ok("on,elevateprivileges=allow"), "setuid"));
    EXPECT_TRUE(has(parse_ok("on,resourcecontrol=allow"), "sched_setaffinity"));
    EXPECT_TRUE(has(parse_ok("on,obsolete=allow"), "ustat"));
    EXPECT_TRUE(has(parse_ok("on,open=ro"), "openat"));
    EXPECT_FALSE(has(parse_ok("on"), "openat"));
}

TEST(SandboxPolicy, WorkerSupervisorWaitsPassesFdsAndLogs) {
    // -x-worker on: the supervisor never opens, executes, forks or maps
    // executable memory; the README gives its count.
    auto p = sb::describe_policy(parse_ok("on,spawn=allow,open=rw"), sb::Role::WorkerSupervisor);
    size_t n = 0;
    for (const auto& e : p) {
        if (e.scope != sb::Scope::Always) continue;
        ++n;
        EXPECT_FALSE(e.why.empty()) << e.name;
        EXPECT_GE(e.nr, 0) << e.name;
        for (std::string_view bad : {"execve", "execveat", "openat", "open", "socket", "clone", "clone3",
                                     "fork", "vfork", "ptrace", "connect", "accept4", "bind", "mprotect",
                                     "io_uring_setup", "memfd_create"})
            EXPECT_NE(e.name, bad) << "supervisor must not have " << bad;
        if (e.name == "kill" || e.name == "mmap" || e.name == "socketpair") {
            EXPECT_TRUE(e.has_arg_filter) << e.name;
        }
    }
    EXPECT_EQ(n, 22u);
}

TEST(SandboxPolicy, PidNamespaceSupervisorCanOnlyWaitAndSignal) {
    // Whatever -sandbox groups say: they concern the device process.
    auto p = sb::describe_policy(parse_ok("on,spawn=allow,open=rw"),
                                 sb::Role::PidNamespaceSupervisor);
    size_t n = 0;
    for (const auto& e : p) {
        if (e.scope != sb::Scope::Always) continue;
        ++n;
        EXPECT_FALSE(e.why.empty()) << e.name;
        for (std::string_view bad : {"execve", "openat", "open", "socket", "clone", "clone3",
                                     "fork", "ptrace", "mmap", "read", "connect", "accept4"})
            EXPECT_NE(e.name, bad) << "supervisor must not have " << bad;
        if (e.name == "kill") {
            EXPECT_TRUE(e.has_arg_filter) << "kill only to the device process and itself";
        }
    }
    EXPECT_GT(n, 0u);
    EXPECT_LE(n, 12u);
}

TEST(SandboxPolicy, PidNamespaceInitOnlyReaps) {
    // PID 1 of the workers' namespace (pidns=on with -x-worker on); the
    // README gives its count.
    auto p = sb::describe_policy(parse_ok("on,spawn=allow,open=rw"), sb::Role::PidNamespaceInit);
    std::set<std::string> names;
    for (const auto& e : p) {
        if (e.scope != sb::Scope::Always) continue;
        EXPECT_FALSE(e.why.empty()) << e.name;
        names.insert(std::string(e.name));
    }
    EXPECT_EQ(names, (std::set<std::string>{"rt_sigtimedwait", "wait4", "rt_sigreturn", "restart_syscall",
                                            "exit_group", "exit"}));
}

TEST(SandboxPolicy, SanitizerAdditionsOnlyInSanitizerBuilds) {
    size_t extra = 0;
    for (const auto& e : sb::describe_policy({})) {
        if (e.scope != sb::Scope::SanitizerBuild) continue;
        ++extra;
        EXPECT_NE(e.why.find("sanitizer builds only"), std::string::npos) << e.name;
        // Even there: no exec, no new sockets, no writable opens.
        EXPECT_NE(e.name, "execve");
        EXPECT_NE(e.name, "socket");
        if (e.name == "openat" || e.name == "open" || e.name == "clone" || e.name == "prctl") {
            EXPECT_TRUE(e.has_arg_filter) << e.name;
        }
    }
#if defined(__SANITIZE_ADDRESS__)
    EXPECT_GT(extra, 0u);
#else
    EXPECT_EQ(extra, 0u) << "a release build must not carry sanitizer rules";
#endif
}

TEST(SandboxApply, OffDoesNothing) {
    auto r = run_child([](int out) {
        if (apply_or_exit(parse_ok("off"), out)) return 90;
        char* const argv[] = {nullptr};
        syscall(SYS_execve, "/nonexistent/x", argv, argv);
        return errno == ENOENT ? 0 : 1;
    });
    EXPECT_TRUE(r.exited(0)) << r.output;
}

TEST(SandboxApply, SteadyStateWorkKeepsRunning) {
    auto r = run_child([](int out) {
        std::vector<char> before(1 << 20, 'x');
        if (apply_or_exit({}, out)) return 90;
        // Allocation, big blocks (mmap/munmap), realloc, threads (clone3
        // falls back to filtered clone), futexes, pipes.
        std::vector<std::string> v;
        for (int i = 0; i < 1000; ++i) v.push_back(std::string(static_cast<size_t>(i) * 37, 'y'));
        std::vector<char> big(8 << 20, 'z');
        int sum = 0;
        std::thread t([&] { sum = static_cast<int>(big[123] + before[5]); });
        t.join();
        void* rw = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (rw == MAP_FAILED) return 2;
        munmap(rw, 4096);
        say(out, "ok");
        return sum == 'z' + 'x' ? 0 : 3;
    });
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
    EXPECT_EQ(r.output, "ok");
}

TEST(SandboxApply, ForbiddenSyscallsKillTheProcessBySigsys) {
    for (std::string_view name : {"execve", "socket", "openat", "mmap-exec", "setuid"}) {
        auto r = run_child([&](int out) {
            if (apply_or_exit({}, out)) return 90;
            auto st = sb::test_forbidden_syscall(name);
            return st.ok() ? 0 : 91;
        });
        EXPECT_TRUE(r.killed_by(SIGSYS)) << name << ": status " << r.status << " " << r.output;
    }
}

TEST(SandboxApply, WorkerThreadsAreFilteredToo) {
    auto r = run_child([](int out) {
        std::thread t;
        std::atomic<bool> go{false};
        t = std::thread([&] {
            while (!go.load()) std::this_thread::yield();
            syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
            say(out, "thread survived");
        });
        if (apply_or_exit({}, out)) return 90;
        go = true;
        t.join();
        return 0;
    });
    EXPECT_TRUE(r.killed_by(SIGSYS)) << "status " << r.status << " " << r.output;
}

TEST(SandboxApply, NewProcessesAreRefusedEvenThroughClone) {
    auto r = run_child([](int out) {
        if (apply_or_exit({}, out)) return 90;
        // fork() is clone(SIGCHLD) without thread flags.
        pid_t p = static_cast<pid_t>(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
        if (p == 0) _exit(0);
        return 0;
    });
    EXPECT_TRUE(r.killed_by(SIGSYS)) << "status " << r.status << " " << r.output;
}

// A -x-worker successor loads the filter its spawner compiled, with its own
// pid patched in: the same policy as a filter compiled in place.
TEST(SandboxApply, PrecompiledFilterIsTheSamePolicyForTheProcessThatLoadsIt) {
    auto r = run_child([](int out) {
        if (auto st = sb::precompile_filter({}); !st.ok()) {
            say(out, "precompile failed: " + st.error().message);
            return 90;
        }
        // Loaded by another process than the one that compiled it.
        int p[2];
        if (pipe(p) != 0) return 92;
        pid_t child = fork();
        if (child == 0) {
            close(p[0]);
            if (apply_or_exit({}, p[1])) _exit(90);
            if (!sb::filter_was_precompiled()) {
                say(p[1], "compiled in place");
                _exit(93);
            }
            // Its own process may be signalled (raise(), abort()) ...
            if (syscall(SYS_tgkill, getpid(), gettid(), 0) != 0) _exit(94);
            say(p[1], "self ok;");
            // ... another may not, nor may it do what the policy forbids.
            syscall(SYS_tgkill, getppid(), getppid(), 0);
            say(p[1], "other survived");
            _exit(0);
        }
        close(p[1]);
        char buf[256];
        ssize_t n;
        while ((n = read(p[0], buf, sizeof buf)) > 0) say(out, std::string_view(buf, static_cast<size_t>(n)));
        int st = 0;
        waitpid(child, &st, 0);
        return WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS ? 0 : 95;
    });
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
    EXPECT_EQ(r.output, "self ok;");
}

TEST(SandboxApply, LogModeLetsTheProcessRun) {
    auto r = run_child([](int out) {
        if (apply_or_exit(parse_ok("on,action=log"), out)) return 90;
        char* const argv[] = {nullptr};
        long rc = syscall(SYS_execve, "/nonexistent/mpq", argv, argv);
        return rc == -1 && errno == ENOENT ? 0 : 1;
    });
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
}

TEST(SandboxApply, TrapModeReportsAndFailsTheCall) {
    auto r = run_child([](int out) {
        if (apply_or_exit(parse_ok("on,action=trap"), out)) return 90;
        long rc = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
        return rc == -1 && errno == ENOSYS ? 0 : 1;
    });
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
}

TEST(SandboxApply, SpawnAllowAddsExecveBack) {
    auto r = run_child([](int out) {
        if (apply_or_exit(parse_ok("on,spawn=allow"), out)) return 90;
        char* const argv[] = {nullptr};
        long rc = syscall(SYS_execve, "/nonexistent/mpq", argv, argv);
        return rc == -1 && errno == ENOENT ? 0 : 1;
    });
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
}

TEST(SandboxApply, OpenReadOnlyAllowsReadsButNotWrites) {
    auto r = run_child([](int out) {
        if (apply_or_exit(parse_ok("on,open=ro"), out)) return 90;
        int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 2;
        close(fd);
        open("/dev/null", O_WRONLY);
        return 0;
    });
    EXPECT_TRUE(r.killed_by(SIGSYS)) << "status " << r.status << " " << r.output;
}

TEST(SandboxApply, FileLimitIsWhatIsOpenPlusTheMargin) {
    auto r = run_child([](int out) {
        if (apply_or_exit(parse_ok("on,open=ro,nofile-margin=5"), out)) return 90;
        int last = -1, err = 0;
        for (int i = 0; i < 100; ++i) {
            int fd = open("/dev/null", O_RDONLY);
            if (fd < 0) {
                err = errno;
                break;
            }
            last = fd;
        }
        say(out, std::to_string(last) + " " + std::to_string(err));
        return err == EMFILE ? 0 : 1;
    });
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
}

TEST(SandboxApply, RunWithUserDropsRoot) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    auto r = run_child([](int out) {
        auto o = parse_ok("on,open=ro");
        o.run_as_user = "nobody";
        if (apply_or_exit(o, out)) return 90;
        int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 2;
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) return 3;
        buf[n] = 0;
        const char* uid = strstr(buf, "\nUid:");
        if (!uid) return 4;
        say(out, std::string(uid + 1, strcspn(uid + 1, "\n")));
        return 0;
    });
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
    EXPECT_EQ(r.output.find("Uid:\t0"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("65534"), std::string::npos) << r.output;
}

TEST(SandboxApply, NamespacesLeaveNothingToOpen) {
    auto r = run_child([](int out) {
        auto o = parse_ok("on,namespaces=on,open=ro");
        auto st = sb::prepare(o);
        if (!st.ok()) {
            say(out, "prepare: " + st.error().message);
            return 77;
        }
        int before = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
        if (before < 0) return 2;
        close(before);
        if (apply_or_exit(o, out)) return 90;
        int after = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
        if (!(after < 0 && errno == ENOENT)) return 3;
        // Our own fd links stay readable (eventfd checks need them).
        char link[64];
        return readlink("/proc/self/fd/1", link, sizeof link) > 0 ? 0 : 4;
    });
    if (r.exited(77)) GTEST_SKIP() << r.output;
    EXPECT_TRUE(r.exited(0)) << "status " << r.status << " " << r.output;
}

TEST(SandboxApply, NamespacesRefuseAThreadedProcess) {
    auto r = run_child([](int out) {
        std::atomic<bool> stop{false};
        std::thread t([&] {
            while (!stop) std::this_thread::yield();
        });
        auto st = sb::prepare(parse_ok("on,namespaces=on"));
        stop = true;
        t.join();
        say(out, st.ok() ? "accepted" : st.error().message);
        return st.ok() ? 1 : 0;
    });
    EXPECT_TRUE(r.exited(0)) << r.output;
}
