// mpqemu-system-x86_64: the VMM program. See vmm/vmm.h.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "devices/registry.h"
#include "trace/trace.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "util/options.h"
#include "vmm/vmm.h"

// The monitors (src/monitor) start once the machine is built: vmm.monitors()
// lists -qmp, -monitor and -mon; vmm.events() carries on_remote_disconnect /
// on_reset; vmm.devices(), vmm.system_reset(), vmm.quit() serve the commands.
#include "monitor/vmm_monitor.h"
#define MPQ_HAVE_VMM_MONITOR 1

namespace {

constexpr const char* kProg = "mpqemu-system-x86_64";

void usage() {
    std::printf(
        "usage: %s [options]\n"
        "A PC machine (i440FX + PIIX3) without vCPU, driven by qtest; PCI devices run\n"
        "in-process or in remote processes over the QEMU 7.2 multi-process protocol.\n\n"
        "  -machine pc[,memory-backend=ID][,accel=qtest|tcg]   -m SIZE\n"
        "  -object memory-backend-memfd,id=ID,size=SIZE[,share=on]\n"
        "  -accel qtest | -accel tcg -S      -qtest unix:PATH[,server=on] | stdio\n"
        "  -qtest-log FILE|none   -display none   -nodefaults   -D LOGFILE\n"
        "  -device pci-proxy-dev,id=ID,socket=FD[,addr=SLOT]   (our form)\n"
        "  -device x-pci-proxy-dev,id=ID,fd=FD[,addr=SLOT]     (stock form)\n"
        "  -device lsi53c895a,id=ID   -drive if=none,id=D,file=F[,format=raw|qcow2]\n"
        "  -device scsi-hd,drive=D,bus=ID.0[,scsi-id=N]   -device edu[,id=ID][,dma_mask=M]\n"
        "  -device help                                   (every in-process device type)\n"
        "  -qmp CHARDEV  -monitor CHARDEV  -mon chardev=ID,mode=control\n",
        kProg);
}

}  // namespace

int main(int argc, char** argv) {
    using namespace mpq;
    log::set_program_name(kProg);
    ::signal(SIGPIPE, SIG_IGN);
    auto cl = opts::parse_command_line(std::span<const char* const>(argv + 1, argc - 1),
                                       vmm::vmm_accepted_options());
    if (!cl.ok()) {
        log::error("{}", cl.error().message);
        return 1;
    }
    if (cl->has("h") || cl->has("help")) {
        usage();
        return 0;
    }
    if (cl->has("version")) {
        std::printf("%s version %s (QEMU 7.2 multi-process protocol)\n", kProg, MPQ_VERSION);
        return 0;
    }
    for (const auto* d : cl->all("device")) {
        if (d->kv.get("driver") == "help" || d->kv.get("driver") == "?") {
            std::printf("%s\n  pci-proxy-dev, x-pci-proxy-dev: a device served by a remote process\n",
                        devices::device_help().c_str());
            return 0;
        }
    }
    if (!cl->positional.empty()) {
        log::error("{}: invalid option", cl->positional.front());
        return 1;
    }
    std::string trace_file;
    auto tr = trace::configure(*cl, &trace_file);
    if (!tr.ok()) {
        log::error("{}", tr.error().message);
        return 1;
    }
    if (*tr == trace::OptionOutcome::ExitSuccess) return 0;
    if (const auto* d = cl->last("D"); d && trace_file.empty()) trace_file = d->text;
    if (!trace_file.empty() && !log::set_file(trace_file.c_str())) {
        log::error("-D {}: cannot open", trace_file);
        return 1;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    ::sigprocmask(SIG_BLOCK, &sigs, nullptr);
    UniqueFd sfd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));

    EventLoop loop;
    auto vmm = vmm::Vmm::create(loop, *cl);
    if (!vmm.ok()) {
        log::error("{}", vmm.error().message);
        return 1;
    }
    if (sfd) {
        loop.add_fd(sfd.get(), FdEvents::Read, [&](uint32_t) {
            signalfd_siginfo si;
            if (::read(sfd.get(), &si, sizeof si) != sizeof si) return;
            log::info("terminating on signal {} from pid {}", si.ssi_signo, si.ssi_pid);
            loop.stop(0);
        });
    }
#ifdef MPQ_HAVE_VMM_MONITOR
    if (auto st = monitor::start_vmm_monitors(**vmm); !st.ok()) {
        log::error("{}", st.error().message);
        return 1;
    }
#else
    if (!(*vmm)->monitors().empty()) {
        log::warn("monitor options are accepted but no monitor is built in yet");
    }
#endif
    if (auto st = (*vmm)->start(); !st.ok()) {
        log::error("{}", st.error().message);
        return 1;
    }
    if (const auto* p = cl->last("pidfile")) {
        if (FILE* f = std::fopen(p->text.c_str(), "w")) {
            std::fprintf(f, "%d\n", static_cast<int>(::getpid()));
            std::fclose(f);
        }
    }
    int rc = loop.run();
    if (sfd) loop.remove_fd(sfd.get());
    vmm->reset();
    return rc;
}
