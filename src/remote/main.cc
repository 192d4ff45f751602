// qemu-scsi-dev: the remote device process.
//   qemu-scsi-dev FD -device lsi53c895a,id=lsi0 -drive id=d0,file=disk.img,format=raw,if=none
//                    -device scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0 [-monitor ...] [-D log]
//   qemu-scsi-dev FD -device edu,id=edu0
//   qemu-scsi-dev [FD] -machine x-remote -nodefaults -display none -device ...
//                    -object x-remote-object,id=r0,devid=lsi0,fd=FD
// Errors on the command line: one line naming the option, exit status 1,
// nothing started.
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <string>
#include <vector>

#include "block/runtime.h"
#include "devices/registry.h"
#include "mem/guest_memory.h"
#include "remote/monitor_view.h"
#include "remote/remote_process.h"
#include "remote/state_io.h"
#include "remote/worker.h"
#include "remote/device_server.h"
#include "state/device_state.h"
#include "sandbox/sandbox.h"
#include "trace/trace.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "util/options.h"
#include "util/thread_reserve.h"

using namespace mpq;
namespace worker = mpq::remote::worker;

namespace {

constexpr std::string_view kAccepted[] = {
    "device", "drive", "object", "machine", "M", "chardev", "mon", "monitor", "qmp", "name",
    "display", "nographic", "nodefaults", "D", "d", "sandbox", "run-with", "S", "trace", "msg",
    "no-shutdown", "incoming-state", "x-worker",
    "h", "help", "version"};

// Test-only (not in --help): the sandbox integration test makes the process
// attempt a forbidden syscall right after the sandbox is applied.
constexpr std::string_view kHidden[] = {"x-test-forbidden-syscall", "x-test-worker-fault",
                                        "x-test-worker-poison", "x-worker-successor",
                                        "x-worker-state-version"};
// Parked I/O threads for drives added under the sandbox (2 per drive).
constexpr unsigned kLateDriveWorkers = 6;

void usage() {
    std::printf(
        "usage: qemu-scsi-dev [FD] [options]\n"
        "Serves PCI devices to a VMM over QEMU 7.2's multi-process protocol.\n"
        "FD is a connected unix stream socket (or use -object x-remote-object,...,fd=FD).\n"
        "Device types: -device help.\n\n");
    for (std::string_view n : kAccepted) {
        const auto* d = opts::find_option(n);
        std::printf("  -%-12.*s %.*s\n", static_cast<int>(n.size()), n.data(),
                    static_cast<int>(d->help.size()), d->help.data());
    }
}

int die(const Error& e) {
    log::error("{}", e.message);
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    log::set_program_name("qemu-scsi-dev");
    // A peer that vanishes mid-reply must give us EPIPE, not kill us.
    ::signal(SIGPIPE, SIG_IGN);
    // SIGTERM/SIGINT/SIGHUP end the loop like QEMU does ("terminating on
    // signal N"), so drives are flushed on the way out. Blocked before any
    // I/O thread exists, so that only the loop's signalfd sees them.
    sigset_t sigs;
    sigemptyset(&sigs);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&sigs, sig);
    ::pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

    std::vector<std::string_view> accepted(std::begin(kAccepted), std::end(kAccepted));
    accepted.insert(accepted.end(), std::begin(kHidden), std::end(kHidden));
    auto cl = opts::parse_command_line(std::span<const char* const>(argv + 1, argc - 1), accepted);
    if (!cl.ok()) return die(cl.error());
    if (cl->has("h") || cl->has("help")) {
        usage();
        return 0;
    }
    // Asked by a running remote's spawner before a live update to this
    // binary: the format of the state it would have to read.
    if (cl->has(worker::kVersionOption)) {
        std::printf("%.*s%u\n", static_cast<int>(worker::kVersionPrefix.size()), worker::kVersionPrefix.data(),
                    state::kFormatVersion);
        return 0;
    }
    if (cl->has("version")) {
        std::printf("qemu-scsi-dev (mpqemu) %s, QEMU 7.2 multi-process protocol\n", MPQ_VERSION);
        return 0;
    }
    for (const auto* d : cl->all("device")) {
        if (d->kv.get("driver") == "help" || d->kv.get("driver") == "?") {
            std::printf("%s\n", devices::device_help().c_str());
            return 0;
        }
    }

    int first_fd = -1;
    if (!cl->positional.empty()) {
        if (cl->positional.size() > 1 || std::string_view(argv[1]) != cl->positional[0])
            return die(fail("'{}': only the socket fd may be given without an option, as the first argument",
                            cl->positional.back()));
        auto fd = opts::parse_uint(cl->positional[0], "fd", INT_MAX);
        if (!fd.ok()) return die(fail("'{}' is not a socket fd number", cl->positional[0]));
        first_fd = static_cast<int>(*fd);
    }

    if (const auto* d = cl->last("d")) {
        if (d->text == "help") {
            std::printf("Log items (comma separated):\nremote  debug messages of the device server\n"
                        "all     everything\n");
            return 0;
        }
        log::set_level(log::Level::Debug);
    }

    // -trace and -msg: events are on before any device exists (its reset
    // is traced, as QEMU's).
    std::string trace_file;
    auto tr = trace::configure(*cl, &trace_file);
    if (!tr.ok()) return die(tr.error());
    if (*tr == trace::OptionOutcome::ExitSuccess) return 0;

    // The log file (-D, or -trace file=) is open before the devices exist, so
    // that their first events land in it.
    if (const auto* d = cl->last("D"); d && trace_file.empty()) trace_file = d->text;
    if (!trace_file.empty() && !log::set_file(trace_file.c_str()))
        return die(fail("-D {}: cannot open log file: {}", trace_file, std::strerror(errno)));

    // Sandbox options are read before any thread exists.
    sandbox::SandboxOptions sandbox_opts;  // default for qemu-scsi-dev: on
    for (const auto* o : cl->all("sandbox")) {
        auto r = sandbox::parse_option(o->text, sandbox_opts);
        if (!r.ok()) return die(o->error(r.error()));
        sandbox_opts = std::move(*r);
    }
    for (const auto* o : cl->all("run-with"))
        if (auto s = sandbox::parse_run_with(o->text, sandbox_opts); !s.ok())
            return die(o->error(s.error()));
    // The I/O worker pool is fixed once the drives are open: no thread after.
    sandbox_opts.threads = sandbox::SandboxOptions::Threads::Complete;

    // -x-worker on: from here on this is a worker process; the caller's pid
    // is the supervisor's, which restarts a worker that dies (remote/worker.h).
    bool worker_mode = false;
    if (const auto* w = cl->last("x-worker")) {
        if (w->text == "on") worker_mode = true;
        else if (w->text != "off") return die(w->error("'{}': expected on or off", w->text));
    }
    if (worker_mode) {
        worker::SupervisorOptions so;
        so.sandbox = sandbox_opts;
        if (const auto* t = cl->last("x-test-worker-fault")) {
            std::string_view v = t->text;
            if (v.starts_with("path=")) {
                // A FIFO the test writes to (for harnesses that cannot pass
                // an fd through to us). Read-write so that the open does not
                // wait for a writer; inherited by every worker, like fd=N.
                std::string path(v.substr(5));
                int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK);
                if (fd < 0) return die(t->error("cannot open '{}': {}", path, std::strerror(errno)));
                so.test_fault_fd = fd;
            } else {
                if (!v.starts_with("fd=")) return die(t->error("expected fd=N or path=FIFO"));
                auto fd = opts::parse_uint(v.substr(3), "fd", INT_MAX);
                if (!fd.ok()) return die(t->error(fd.error()));
                so.test_fault_fd = static_cast<int>(*fd);
            }
        }
        if (const auto* t = cl->last("x-test-worker-poison")) {
            auto v = opts::parse_uint(t->text, "value", UINT32_MAX);
            if (!v.ok()) return die(t->error(v.error()));
            so.test_poison = true;
            so.test_poison_value = *v;
        }
        so.argv.assign(argv, argv + argc);
        if (const auto* t = cl->last("x-worker-successor")) {
            // Exec'd by the spawner of a running remote (live update to this binary).
            if (auto s = worker::adopt(so, t->text); !s.ok()) return die(s.error());
        } else if (auto s = worker::run_supervisor(so); !s.ok()) {
            return die(s.error());
        }
    }
    worker::Context* wctx = worker::context();
    // A worker is in the supervisor's PID namespace already (pidns=on).
    if (wctx) sandbox_opts.pid_namespace = sandbox::Namespaces::Keep;
    if (auto s = sandbox::prepare(sandbox_opts); !s.ok()) return die(s.error());

    EventLoop loop;
    // The device sockets are served through the loop's io_uring (one syscall
    // per request); MPQ_REMOTE_LOOP=epoll keeps the plain epoll loop, for
    // comparison runs. Made before the sandbox closes io_uring_setup.
    if (const char* m = std::getenv("MPQ_REMOTE_LOOP"); !m || std::string_view(m) != "epoll") {
        if (!loop.enable_ring()) log::debug("event loop: epoll (no usable io_uring)");
    }
    // Declared before the process so that its drives give their borrowed
    // threads back before the reserve goes.
    std::unique_ptr<ThreadReserve> late_workers;
    remote::RemoteProcess proc(loop);
    if (auto s = proc.configure(*cl, first_fd); !s.ok()) return die(s.error());
    if (wctx && wctx->spare) {
        // Devices built: wait to replace a dead worker. Only raw images can
        // be opened this early: a format's metadata (qcow2's tables) may
        // change under the running worker until then.
        for (auto& d : proc.drives()) {
            std::string fmt_name = d.backend ? d.backend->driver().format_name() : "none";
            if (fmt_name != "raw") {
                log::info("worker: no spare worker (drive '{}' is {}); a restart starts a new worker", d.opts.id,
                          fmt_name);
                ::_exit(worker::kNoSpareExit);
            }
        }
        worker::await_go();
    }
    // -incoming-state FILE: the devices carry on from a saved state instead
    // of from power-on. Read before the sandbox closes open().
    if (wctx && wctx->successor) {
        // A successor carries on from its predecessor's last published round.
        auto last = worker::last_published();
        if (!last.empty()) {
            auto slot = worker::decode_slot(last);
            if (!slot.ok()) return die(slot.error());
            auto img = state::decode(slot->state, state::ChecksumPolicy::MayBeOmitted);
            if (!img.ok()) return die(fail("published state: {}", img.error().message));
            if (auto s = remote::apply_state(proc, *img); !s.ok())
                return die(fail("published state: {}", s.error().message));
        }
    } else if (const auto* in = cl->last("incoming-state")) {
        if (auto s = remote::load_state_file(proc, in->text); !s.ok())
            return die(in->error(s.error()));
    }

    // -chardev/-mon/-monitor/-qmp open QMP/HMP monitors on the loop.
    remote::RemoteMachineView mon_view(proc);
    if (sandbox_opts.mode == sandbox::Mode::On && sandbox_opts.open != sandbox::OpenPolicy::ReadWrite)
        mon_view.set_file_creation_refused("the sandbox forbids it (use -sandbox on,open=rw or -sandbox off)");
    auto monitors = remote::start_monitors(proc, mon_view);
    if (!monitors.ok()) return die(monitors.error());
    // -no-shutdown, as QEMU's: when the proxy goes away the process stays up
    // (status "shutdown") until a monitor's quit or a signal, so that its
    // monitors can still be read, e.g. the final block statistics.
    bool shutdown_reported = false;
    if (cl->has("no-shutdown")) {
        proc.on_last_connection_gone([&](int code) {
            log::info("no connection left; stopped (-no-shutdown), waiting for quit");
            mon_view.set_state(monitor::RunState::Shutdown);
            // Stock's remote asks for a shutdown with cause guest-shutdown
            // (guest: true) when its proxy goes away.
            if (*monitors)
                (*monitors)->shutdown_event(code == 0 ? "guest-shutdown" : "host-error", code == 0);
            shutdown_reported = true;
        });
    }

    UniqueFd sfd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd || !loop.add_fd(sfd.get(), FdEvents::Read, [&](uint32_t) {
            signalfd_siginfo si;
            if (::read(sfd.get(), &si, sizeof si) != sizeof si) return;
            log::info("terminating on signal {} from pid {}", si.ssi_signo, si.ssi_pid);
            proc.quit(0);
        }))
        return die(fail("cannot watch signals"));

    if (auto s = proc.start(); !s.ok()) return die(s.error());
    if (wctx) {
        // A worker builds its state (a chunk in flight is up to 128 KiB) and
        // frees it every round: keep those pages in the heap instead of
        // giving them back and faulting them in again next round (glibc
        // trims and mmaps blocks this size by default).
        ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
        ::mallopt(M_TRIM_THRESHOLD, 16 << 20);
        // Every device must be able to carry its state to a successor.
        if (auto img = remote::capture_state(proc); !img.ok())
            return die(fail("-x-worker on: {}", img.error().message));
        auto drain = [&proc] {
            for (auto& d : proc.drives())
                if (d.backend) d.backend->drain();
        };
        // Every round waits for its I/O before it publishes (drain): the
        // loop thread does the I/O itself instead of waking a thread for it
        // and waiting to be woken in turn.
        for (auto& d : proc.drives())
            if (d.backend) d.backend->set_submission(block::BlockBackend::Submission::Caller);
        proc.server()->enable_publishing(drain, [&proc]() -> Result<std::vector<uint8_t>> {
            auto img = remote::capture_state(proc);
            if (!img.ok()) return img.take_error();
            return state::encode(*img, state::Checksum::Omit);
        });
        if (auto s = proc.server()->take_over(); !s.ok()) return die(s.error());
    }

    // Drives added later (blockdev-add, drive_add) cannot start threads once
    // the sandbox is on: their I/O workers wait here, started now. Not in a
    // -x-worker worker: it refuses hot-plug, and every successor would start
    // the whole reserve before it serves again.
    const bool sandboxed = sandbox_opts.mode == sandbox::Mode::On;
    if (sandboxed && !wctx) late_workers = std::make_unique<ThreadReserve>(kLateDriveWorkers);
    // Guest buffers the guest reuses are pre-faulted by a thread of their
    // own instead of on a request's path (mem/guest_memory.cc); started
    // while threads can still be made.
    if (!GuestMemory::start_background_populate())
        log::info("no populate thread: reused guest buffers are pre-faulted inline");

    // Everything is open (images, sockets, monitors, log file) and the I/O
    // threads run: close the door. Kept fds: the sockets we were handed.
    {
        std::vector<int> keep;
        for (const auto& b : proc.bindings()) keep.push_back(b.fd);
        if (wctx) {
            keep.push_back(wctx->handoff_fd);
            if (wctx->test_fault_fd >= 0) {
                // TEST ONLY (-x-test-worker-fault fd=N): a byte read from N
                // makes this worker fault: 's' SIGSEGV, 'x' a forbidden
                // syscall, 'p'/'c' SIGKILL inside the next round's publish
                // (see DeviceServer::publish_round). Read first, so that
                // its successor does not.
                int tfd = wctx->test_fault_fd;
                keep.push_back(tfd);
                loop.add_fd(tfd, FdEvents::Read, [tfd, wctx](uint32_t) {
                    char c = 0;
                    if (::read(tfd, &c, 1) != 1) return;
                    if (c == 'p' || c == 'c') wctx->test_die_at = c;  // in the next round with a request
                    if (c == 's') ::raise(SIGSEGV);
                    if (c == 'x') (void)sandbox::test_forbidden_syscall("execve");
                });
            }
        }
        // TEST ONLY: "-x-test-forbidden-syscall NAME[,fd=N]": attempt NAME
        // now, or once the inherited fd N becomes readable (the test says when).
        std::string test_syscall;
        int test_fd = -1;
        if (const auto* t = cl->last("x-test-forbidden-syscall")) {
            std::string_view v = t->text;
            size_t comma = v.find(",fd=");
            test_syscall = std::string(v.substr(0, comma));
            if (comma != std::string_view::npos) {
                auto fd = opts::parse_uint(v.substr(comma + 4), "fd", INT_MAX);
                if (!fd.ok()) return die(t->error(fd.error()));
                test_fd = static_cast<int>(*fd);
                keep.push_back(test_fd);
            }
        }
        if (auto s = sandbox::apply(sandbox_opts, keep); !s.ok()) return die(s.error());
        if (sandboxed) {
            block::RuntimeLimits lim;
            lim.active = true;
            lim.path_open = sandbox_opts.open == sandbox::OpenPolicy::ReadWrite  ? block::PathOpen::Any
                            : sandbox_opts.open == sandbox::OpenPolicy::ReadOnly ? block::PathOpen::ReadOnly
                                                                                 : block::PathOpen::Deny;
            lim.workers = late_workers.get();
            block::set_runtime_limits(lim);
        }
        if (!test_syscall.empty()) {
            if (test_fd < 0) {
                if (auto s = sandbox::test_forbidden_syscall(test_syscall); !s.ok()) return die(s.error());
            } else {
                loop.add_fd(test_fd, FdEvents::Read, [&loop, test_fd, test_syscall](uint32_t) {
                    loop.remove_fd(test_fd);
                    if (auto s = sandbox::test_forbidden_syscall(test_syscall); !s.ok())
                        log::error("{}", s.error().message);
                });
            }
        }
    }

    log::info("serving {} device(s) on {} socket(s){}", proc.functions().size(), proc.bindings().size(),
              wctx ? fmt::format(" (worker pid {}{})", ::getpid(), wctx->successor ? ", successor" : "") : "");
    if (wctx) {
        wctx->hdr->serving.store(1);
        if (wctx->successor && wctx->died_ns) {
            uint64_t us = (EventLoop::now_ns() - wctx->died_ns) / 1000;
            log::info("worker: serving again {} us after the predecessor's death", us);
            // Its monitor clients are the predecessor's (the supervisor
            // kept their sockets): they see the event on the same connection.
            if (*monitors)
                (*monitors)->emit("WORKER_RESTARTED",
                                  monitor::Json{{"cause", wctx->last_exit.cause}, {"unavailable-us", us},
                                                {"restarts", wctx->restarts}});
        }
    }
    int rc = loop.run();
    if (wctx && wctx->leave_after_publish) {
        // x-worker-restart: the drives are flushed (the qcow2 metadata this
        // worker caches reaches the image), then the supervisor starts the
        // successor, which carries on from the state published last.
        proc.shutdown();
        wctx->hdr->live_update.store(1);
        ::_exit(0);
    }
    // Ending on purpose: the supervisor exits with our status instead of
    // starting a successor.
    if (wctx) wctx->hdr->finished.store(1);
    // Tell QMP clients why we stop, unless a monitor's quit already did.
    if (*monitors && !mon_view.quit_requested() && !shutdown_reported)
        (*monitors)->shutdown_event(rc == 0 ? "guest-shutdown" : "host-error", rc == 0);
    loop.remove_fd(sfd.get());
    proc.shutdown();
    return rc;
}
