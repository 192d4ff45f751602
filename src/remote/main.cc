// qemu-scsi-dev: the remote device process.
//   qemu-scsi-dev FD -device lsi53c895a,id=lsi0 -drive id=d0,file=disk.img,format=raw,if=none
//                    -device scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0 [-monitor ...] [-D log]
//   qemu-scsi-dev [FD] -machine x-remote -nodefaults -display none -device ...
//                    -object x-remote-object,id=r0,devid=lsi0,fd=FD
// Errors on the command line: one line naming the option, exit status 1,
// nothing started.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <cstdio>
#include <string>

#include "remote/monitor_hook.h"
#include "remote/remote_process.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "util/options.h"

using namespace mpq;

namespace {

constexpr std::string_view kAccepted[] = {
    "device", "drive", "object", "machine", "M", "chardev", "mon", "monitor", "qmp", "name",
    "display", "nographic", "nodefaults", "D", "d", "sandbox", "run-with", "S", "trace",
    "h", "help", "version"};

void usage() {
    std::printf(
        "usage: qemu-scsi-dev [FD] [options]\n"
        "Serves PCI devices to a VMM over QEMU 7.2's multi-process protocol.\n"
        "FD is a connected unix stream socket (or use -object x-remote-object,...,fd=FD).\n\n");
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

    auto cl = opts::parse_command_line(std::span<const char* const>(argv + 1, argc - 1), kAccepted);
    if (!cl.ok()) return die(cl.error());
    if (cl->has("h") || cl->has("help")) {
        usage();
        return 0;
    }
    if (cl->has("version")) {
        std::printf("qemu-scsi-dev (mpqemu) %s, QEMU 7.2 multi-process protocol\n", MPQ_VERSION);
        return 0;
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

    EventLoop loop;
    remote::RemoteProcess proc(loop);
    if (auto s = proc.configure(*cl, first_fd); !s.ok()) return die(s.error());

    // ==== h-mon hook: monitors ====================================================
    // monitor hook: -chardev/-mon/-monitor/-qmp open QMP/HMP monitors on the loop.
    remote::RemoteMachineView mon_view(proc);
    auto monitors = remote::start_monitors(proc, mon_view);
    if (!monitors.ok()) return die(monitors.error());
    // ==== end h-mon hook ===========================================================

    // ==== h-hard hook: sandbox =====================================================
    // -sandbox / -run-with are parsed by the shared table; apply the sandbox
    // here, after everything is open and before serving.
    if (cl->has("sandbox") || cl->has("run-with"))
        log::warn("-sandbox/-run-with: not applied by this build yet");
    // ==== end h-hard hook ==========================================================

    if (const auto* d = cl->last("D")) {
        if (!log::set_file(d->text.c_str()))
            return die(d->error("cannot open log file: {}", std::strerror(errno)));
    }
    if (auto s = proc.start(); !s.ok()) return die(s.error());
    log::info("serving {} device(s) on {} socket(s)", proc.functions().size(), proc.bindings().size());
    int rc = loop.run();
    // monitor hook: tell QMP clients why we stop, unless a monitor's quit already did.
    if (*monitors && !mon_view.quit_requested())
        (*monitors)->shutdown_event(rc == 0 ? "guest-shutdown" : "host-error");
    return rc;
}
