// DeviceServer + EventfdIrqLine against a fake PCI function, in-process.
#include <sys/eventfd.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "pci/pci_device.h"
#include "proto/channel.h"
#include "remote/device_server.h"
#include "remote/irq_line.h"
#include "util/event_loop.h"

using namespace mpq;
using namespace mpq::proto;

namespace {

pci::PciIdentity ident() {
    pci::PciIdentity id;
    id.vendor = 0x1234;
    id.device = 0x5678;
    id.bars[0] = {pci::BarKind::Io, 16};
    id.bars[1] = {pci::BarKind::Mem32, 4096};
    return id;
}

// BAR1 offset 0: writing 1 raises INTx, 0 lowers; BAR1 offset 8: DMA test.
class FakeDev : public pci::PciDevice {
public:
    FakeDev() : PciDevice(ident()) {}
    uint64_t bar_read(int bar, uint64_t off, unsigned size) override {
        last = {bar, off, size};
        return 0x1122334455667788ull;
    }
    void bar_write(int bar, uint64_t off, uint64_t val, unsigned size) override {
        last = {bar, off, size};
        last_val = val;
        if (bar == 1 && off == 0) set_irq(val != 0);
        if (bar == 1 && off == 8) {
            uint8_t b = static_cast<uint8_t>(val);
            dma_ok = dma_write(0x100, std::span<const uint8_t>(&b, 1)).ok();
        }
    }
    void device_reset() override { resets++; }
    struct Access {
        int bar = -1;
        uint64_t off = 0;
        unsigned size = 0;
    } last;
    uint64_t last_val = 0;
    int resets = 0;
    bool dma_ok = false;
};

uint64_t read_counter(int fd) {
    uint64_t v = 0;
    if (::read(fd, &v, 8) != 8) return 0;
    return v;
}

// Both ways a connection is served: epoll + recvmsg/sendmsg, and the loop's
// io_uring (a receive always pending, replies sent with the next wait).
enum class LoopMode { Epoll, Ring };

struct Fixture : ::testing::TestWithParam<LoopMode> {
    EventLoop loop;
    GuestMemory mem;
    FakeDev dev;
    remote::EventfdIrqLine irq{loop};
    bool idle = false, orderly = false;
    remote::DeviceServer server{loop, mem, [this](bool o) {
                                    idle = true;
                                    orderly = o;
                                }};
    Channel proxy;

    void SetUp() override {
        if (GetParam() == LoopMode::Ring) {
            ASSERT_TRUE(loop.enable_ring());
        }
        int sv[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        proxy = Channel(UniqueFd(sv[0]));
        dev.attach_irq(&irq);
        dev.attach_dma(&mem);
        ASSERT_TRUE(server.add_connection(UniqueFd(sv[1]), {{"dev0", &dev, &irq}}).ok());
    }
    // One loop round, then a round that does not wait: in ring mode that
    // one submits the replies queued by the first.
    void pump(int timeout_ms) {
        loop.run_once(timeout_ms);
        loop.run_once(0);
    }
    // Sends a request and runs the loop until its reply arrives.
    uint64_t call(Cmd cmd, std::span<const uint8_t> payload, bool empty_reply = false) {
        EXPECT_TRUE(proxy.send(cmd, payload).ok());
        for (int i = 0; i < 200 && !proxy.frame_ready(); ++i) {
            loop.run_once(10);
            pollfd pf{proxy.fd(), POLLIN, 0};
            if (::poll(&pf, 1, 0) == 1) break;
        }
        Frame f;
        auto r = proxy.recv(f);
        EXPECT_TRUE(r.ok());
        EXPECT_EQ(f.cmd(), Cmd::Ret);
        EXPECT_EQ(f.size(), empty_reply ? 0u : 8u);
        return f.size() == 8 ? f.as<uint64_t>() : 0;
    }
    uint64_t cfg(Cmd c, uint32_t addr, uint32_t val, int32_t len) {
        PciConf p{addr, val, len};
        return call(c, std::span(reinterpret_cast<const uint8_t*>(&p), sizeof p));
    }
    uint64_t bar(Cmd c, uint64_t addr, uint64_t val, uint32_t size, uint8_t memory) {
        BarAccess b{addr, val, size, memory, {}};
        return call(c, std::span(reinterpret_cast<const uint8_t*>(&b), sizeof b));
    }
};

}  // namespace

TEST_P(Fixture, ConfigAndBarRoutingByAbsoluteAddress) {
    EXPECT_EQ(cfg(Cmd::PciCfgRead, 0, 0, 4), 0x56781234u);
    EXPECT_EQ(cfg(Cmd::PciCfgWrite, 0x14, 0xe0001000, 4), 0u);
    EXPECT_EQ(cfg(Cmd::PciCfgWrite, 0x10, 0x1000, 4), 0u);
    EXPECT_EQ(cfg(Cmd::PciCfgWrite, 0x04, 3, 2), 0u);
    EXPECT_EQ(bar(Cmd::BarRead, 0xe0001010, 0, 2, 1), 0x7788u);  // masked to the width
    EXPECT_EQ(dev.last.bar, 1);
    EXPECT_EQ(dev.last.off, 0x10u);
    EXPECT_EQ(bar(Cmd::BarWrite, 0x100c, 0xffffffffffffffffull, 1, 0), 0u);
    EXPECT_EQ(dev.last.bar, 0);
    EXPECT_EQ(dev.last.off, 0xcu);
    EXPECT_EQ(dev.last_val, 0xffu);
    EXPECT_EQ(bar(Cmd::BarRead, 0xe0001ffc, 0, 8, 1), kAllOnes);  // straddles the end
    EXPECT_EQ(bar(Cmd::BarRead, 0x1010, 0, 1, 0), kAllOnes);      // past the I/O BAR
    EXPECT_EQ(call(Cmd::DeviceReset, {}, true), 0u);
    EXPECT_EQ(dev.resets, 1);
    EXPECT_EQ(cfg(Cmd::PciCfgRead, 0x14, 0, 4), 0xe0001000u);  // config kept over reset
    EXPECT_EQ(server.stats().resets, 1u);
}

TEST_P(Fixture, IrqEdgeAndResample) {
    cfg(Cmd::PciCfgWrite, 0x14, 0xe0001000, 4);
    cfg(Cmd::PciCfgWrite, 0x04, 2, 2);
    UniqueFd irqfd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    UniqueFd rsfd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int fds[2] = {irqfd.get(), rsfd.get()};
    ASSERT_TRUE(proxy.send(Cmd::SetIrqfd, {}, fds).ok());
    pump(1000);
    EXPECT_TRUE(irq.connected());

    bar(Cmd::BarWrite, 0xe0001000, 1, 4, 1);  // assert
    EXPECT_EQ(read_counter(irqfd.get()), 1u);
    bar(Cmd::BarWrite, 0xe0001000, 1, 4, 1);  // still asserted: no new edge
    EXPECT_EQ(read_counter(irqfd.get()), 0u);
    uint64_t one = 1;
    ASSERT_EQ(::write(rsfd.get(), &one, 8), 8);  // EOI while asserted
    pump(1000);
    EXPECT_EQ(read_counter(irqfd.get()), 1u);
    bar(Cmd::BarWrite, 0xe0001000, 0, 4, 1);  // de-assert: nothing on the wire
    EXPECT_EQ(read_counter(irqfd.get()), 0u);
    ASSERT_EQ(::write(rsfd.get(), &one, 8), 8);
    pump(100);
    EXPECT_EQ(read_counter(irqfd.get()), 0u);
    EXPECT_EQ(irq.signals(), 2u);
}

TEST_P(Fixture, SyncSysmemFeedsDmaAndEofIsOrderly) {
    UniqueFd ram(::memfd_create("ram", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(ram.get(), 0x10000), 0);
    SyncSysmem s{};
    s.gpa[0] = 0;
    s.size[0] = 0x10000;
    int fd = ram.get();
    ASSERT_TRUE(proxy.send_struct(Cmd::SyncSysmem, s, std::span<const int>(&fd, 1)).ok());
    cfg(Cmd::PciCfgWrite, 0x14, 0xe0001000, 4);
    cfg(Cmd::PciCfgWrite, 0x04, 2, 2);  // memory, no bus master
    EXPECT_EQ(mem.region_count(), 1u);
    bar(Cmd::BarWrite, 0xe0001008, 0x5a, 1, 1);
    EXPECT_FALSE(dev.dma_ok);
    cfg(Cmd::PciCfgWrite, 0x04, 6, 2);
    bar(Cmd::BarWrite, 0xe0001008, 0x5a, 1, 1);
    EXPECT_TRUE(dev.dma_ok);
    uint8_t b = 0;
    ASSERT_EQ(::pread(ram.get(), &b, 1, 0x100), 1);
    EXPECT_EQ(b, 0x5a);
    proxy.close();
    pump(1000);
    EXPECT_TRUE(idle);
    EXPECT_TRUE(orderly);
    EXPECT_EQ(server.connections(), 0u);
}

TEST_P(Fixture, ProxyGoneBeforeTheReplyIsAnOrderlyEnd) {
    // A VMM killed with a request on the wire: the reply cannot be sent.
    // That is the VM going away, not bad input (the process exits 0).
    PciConf p{0, 0, 4};
    ASSERT_TRUE(proxy.send_struct(Cmd::PciCfgRead, p).ok());
    proxy.close();
    for (int i = 0; i < 20 && !idle; ++i) loop.run_once(50);
    EXPECT_TRUE(idle);
    EXPECT_TRUE(orderly);
    EXPECT_EQ(server.connections(), 0u);
}

TEST(RemoteServer, RefusesNonSockets) {
    EventLoop loop;
    GuestMemory mem;
    FakeDev dev;
    remote::DeviceServer server(loop, mem, nullptr);
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    ::close(p[1]);
    EXPECT_FALSE(server.add_connection(UniqueFd(p[0]), {{"d", &dev, nullptr}}).ok());
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    ::close(sv[1]);
    EXPECT_FALSE(server.add_connection(UniqueFd(sv[0]), {{"d", &dev, nullptr}}).ok());
}

TEST_P(Fixture, PipelinedRequestsAllAnsweredInOrder) {
    // Several requests queued at once (plus a no-reply frame in between).
    for (uint32_t off : {0u, 2u, 0x0au}) {
        PciConf p{off, 0, 2};
        ASSERT_TRUE(proxy.send_struct(Cmd::PciCfgRead, p).ok());
    }
    ASSERT_TRUE(proxy.send(static_cast<Cmd>(9), {}).ok());  // unknown, no reply
    PciConf p{0x2e, 0, 2};
    ASSERT_TRUE(proxy.send_struct(Cmd::PciCfgRead, p).ok());
    std::vector<uint64_t> got;
    for (int round = 0; round < 20 && got.size() < 4; round++) {
        pump(100);
        for (;;) {
            pollfd pf{proxy.fd(), POLLIN, 0};
            // Replies already in the channel's buffer do not show on the fd.
            if (!proxy.frame_ready() && ::poll(&pf, 1, 0) != 1) break;
            Frame f;
            ASSERT_EQ(*proxy.recv(f), RecvState::Frame);
            got.push_back(f.as<uint64_t>());
        }
    }
    EXPECT_EQ(got, (std::vector<uint64_t>{0x1234, 0x5678, 0, 0}));
    EXPECT_EQ(server.stats().bad_frames, 1u);
}

INSTANTIATE_TEST_SUITE_P(Loops, Fixture, ::testing::Values(LoopMode::Epoll, LoopMode::Ring),
                         [](const ::testing::TestParamInfo<LoopMode>& i) {
                             return i.param == LoopMode::Ring ? "Ring" : "Epoll";
                         });
