// The register path of the remote: one proxy request -> DeviceServer ->
// PciDevice -> RET, over a socketpair, with the server's event loop on its
// own thread (as in the real process). Baselines: the same access as a
// direct call, and a bare socket ping-pong of the same frame sizes.
#include <sys/socket.h>

#include <thread>

#include <benchmark/benchmark.h>

#include "pci/pci_device.h"
#include "proto/channel.h"
#include "remote/device_server.h"
#include "util/event_loop.h"

using namespace mpq;
using namespace mpq::proto;

namespace {

pci::PciIdentity ident() {
    pci::PciIdentity id;
    id.vendor = 0x1000;
    id.device = 0x0012;
    id.bars[1] = {pci::BarKind::Mem32, 1024};
    return id;
}

class ScratchDev : public pci::PciDevice {
public:
    ScratchDev() : PciDevice(ident()) {}
    uint64_t bar_read(int, uint64_t off, unsigned) override { return regs[off % 256]; }
    void bar_write(int, uint64_t off, uint64_t v, unsigned) override { regs[off % 256] = static_cast<uint8_t>(v); }
    void device_reset() override {}
    uint8_t regs[256] = {};
};

struct Rig {
    EventLoop loop;
    GuestMemory mem;
    ScratchDev dev;
    remote::DeviceServer server{loop, mem, [this](bool) { loop.stop(); }};
    Channel proxy;
    std::thread th;

    Rig() {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
        proxy = Channel(UniqueFd(sv[0]));
        if (!server.add_connection(UniqueFd(sv[1]), {{"lsi0", &dev, nullptr}}).ok()) std::abort();
        th = std::thread([this] { loop.run(); });
        call_cfg(Cmd::PciCfgWrite, 0x14, 0xfebf0000, 4);
        call_cfg(Cmd::PciCfgWrite, 0x04, 2, 2);
    }
    ~Rig() {
        proxy.close();
        th.join();
    }
    uint64_t wait_ret() {
        Frame f;
        auto r = proxy.recv(f);
        if (!r.ok() || *r != RecvState::Frame) std::abort();
        return f.as<uint64_t>();
    }
    uint64_t call_cfg(Cmd c, uint32_t addr, uint32_t val, int32_t len) {
        PciConf p{addr, val, len};
        if (!proxy.send_struct(c, p).ok()) std::abort();
        return wait_ret();
    }
    uint64_t call_bar(Cmd c, uint64_t addr, uint64_t val, uint32_t size) {
        BarAccess b{addr, val, size, 1, {}};
        if (!proxy.send_struct(c, b).ok()) std::abort();
        return wait_ret();
    }
};

void BM_RemoteCfgRead(benchmark::State& st) {
    Rig rig;
    for (auto _ : st) benchmark::DoNotOptimize(rig.call_cfg(Cmd::PciCfgRead, 0, 0, 4));
}
BENCHMARK(BM_RemoteCfgRead)->UseRealTime();

void BM_RemoteBarRead(benchmark::State& st) {
    Rig rig;
    for (auto _ : st) benchmark::DoNotOptimize(rig.call_bar(Cmd::BarRead, 0xfebf0034, 0, 4));
}
BENCHMARK(BM_RemoteBarRead)->UseRealTime();

void BM_RemoteBarWrite(benchmark::State& st) {
    Rig rig;
    for (auto _ : st) benchmark::DoNotOptimize(rig.call_bar(Cmd::BarWrite, 0xfebf0034, 0x5a, 1));
}
BENCHMARK(BM_RemoteBarWrite)->UseRealTime();

// Lower bound: the same bytes bounced by a thread doing plain read/write.
void BM_SocketPingPong(benchmark::State& st) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    std::thread echo([fd = sv[1]] {
        char buf[40];
        for (;;) {
            if (::read(fd, buf, 40) != 40) break;
            if (::write(fd, buf, 24) != 24) break;
        }
    });
    char req[40] = {}, rep[24];
    for (auto _ : st) {
        if (::write(sv[0], req, 40) != 40 || ::read(sv[0], rep, 24) != 24) std::abort();
    }
    ::shutdown(sv[0], SHUT_RDWR);
    echo.join();
    ::close(sv[0]);
    ::close(sv[1]);
}
BENCHMARK(BM_SocketPingPong)->UseRealTime();

void BM_DirectCfgRead(benchmark::State& st) {
    ScratchDev dev;
    for (auto _ : st) benchmark::DoNotOptimize(dev.config_read(0, 4));
}
BENCHMARK(BM_DirectCfgRead);

}  // namespace
