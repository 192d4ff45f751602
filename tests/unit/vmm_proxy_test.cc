// pci-proxy-dev against a fake remote on a socketpair: realize sequence,
// BAR sizing/decoding/forwarding, config coherence, user-space INTx level,
// MULTIDEV, and a remote that answers garbage, closes, hangs, attaches fds to
// a reply or sends it in pieces. Every case runs with both ways a link waits
// for replies (io_uring, plain syscalls).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <cstring>
#include <thread>

#include "proto/channel.h"
#include "util/event_loop.h"
#include "vmm/guest_ram.h"
#include "vmm/proxy.h"

namespace mpq::vmm {
namespace {

using proto::Cmd;

enum class Fault { None, Garbage, Close, Hang, FdOnRet, Split };

// QEMU 7.2's x-remote starts reading the socket before its own startup
// system reset and runs that reset only when it first finds the socket
// empty; until then its main loop (the resample handler) does not run.
// Pending: the fake remote does the same, starting with frames already
// queued, and treats a request that arrives within kStartupGap of its last
// reply as already queued (a remote descheduled after each reply).
enum class Startup { Done, Pending };
constexpr auto kStartupGap = std::chrono::milliseconds(300);

struct FakeFunction {
    std::string id;
    uint16_t vendor = 0x1000;
    std::array<uint8_t, 256> cfg{};
    std::array<uint8_t, 256> wmask{};
    std::array<uint8_t, 256> regs{};
    UniqueFd irqfd, resamplefd;
    bool asserted = false;

    explicit FakeFunction(std::string i, uint16_t v) : id(std::move(i)), vendor(v) {
        put32(0, 0x00120000u | vendor);
        put32(0x08, 0x01000000);
        put32(0x2c, 0x10000000);
        put32(0x10, 0x1);  // BAR0: I/O, 256 bytes
        put32(0x14, 0x0);  // BAR1: memory, 1 KiB
        set_mask(0x10, ~0xffu & ~3u);
        set_mask(0x14, ~0x3ffu & ~0xfu);
        wmask[4] = 0x07;
        wmask[5] = 0x05;
    }
    void put32(uint32_t off, uint32_t v) {
        for (int i = 0; i < 4; ++i) cfg[off + i] = static_cast<uint8_t>(v >> (8 * i));
    }
    uint32_t get32(uint32_t off) const {
        return cfg[off] | cfg[off + 1] << 8 | cfg[off + 2] << 16 | uint32_t{cfg[off + 3]} << 24;
    }
    void set_mask(uint32_t off, uint32_t m) {
        for (int i = 0; i < 4; ++i) wmask[off + i] = static_cast<uint8_t>(m >> (8 * i));
    }
    // What QEMU's system reset does to a PCI function: COMMAND and the BAR
    // addresses cleared, the device registers reset.
    void system_reset() {
        cfg[4] = cfg[5] = 0;
        put32(0x10, 0x1);
        put32(0x14, 0x0);
        regs.fill(0);
        asserted = false;
    }
    void set_irq(bool level) {
        if (level && !asserted && irqfd) {
            uint64_t one = 1;
            (void)!::write(irqfd.get(), &one, sizeof one);
        }
        asserted = level;
    }
    // Absolute-address decode as a remote does it.
    std::optional<uint64_t> decode(uint64_t addr, bool memory) const {
        uint16_t cmd = cfg[4] | cfg[5] << 8;
        if (memory) {
            uint64_t base = get32(0x14) & ~0xfu;
            if ((cmd & 2) && base && addr >= base && addr < base + 0x400) return addr - base;
        } else {
            uint64_t base = get32(0x10) & ~3u;
            if ((cmd & 1) && base && addr >= base && addr < base + 0x100) return addr - base;
        }
        return std::nullopt;
    }
};

struct Seen {
    Cmd cmd;
    uint64_t a, b;
    unsigned fds;
};

class FakeRemote {
public:
    FakeRemote(UniqueFd sock, bool multidev, Startup startup = Startup::Done)
        : ch_(std::move(sock)), multidev_(multidev), startup_pending_(startup == Startup::Pending) {
        ::fcntl(ch_.fd(), F_SETFL, ::fcntl(ch_.fd(), F_GETFL) | O_NONBLOCK);
        funcs_.emplace_back("a", 0x1000);
        if (multidev) funcs_.emplace_back("b", 0x2000);
        stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        thread_ = std::thread([this] { run(); });
    }
    ~FakeRemote() { stop(); }
    void stop() {
        if (!thread_.joinable()) return;
        uint64_t one = 1;
        (void)!::write(stop_fd_.get(), &one, sizeof one);
        thread_.join();
    }
    void set_fault(Fault f) { fault_ = f; }
    std::vector<Seen> seen() {
        std::lock_guard lk(mu_);
        return seen_;
    }
    void clear_seen() {
        std::lock_guard lk(mu_);
        seen_.clear();
    }
    int count(Cmd c) {
        int n = 0;
        for (auto& s : seen()) n += s.cmd == c;
        return n;
    }

private:
    void run() {
        serve();
        ch_.close();  // a dead remote: EOF for the proxy
    }
    void serve() {
        proto::Frame f;
        bool served = false;
        while (true) {
            std::vector<pollfd> p{{ch_.fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
            for (auto& fn : funcs_)
                if (fn.resamplefd && !startup_pending_) p.push_back({fn.resamplefd.get(), POLLIN, 0});
            int wait_ms = startup_pending_ && served ? static_cast<int>(kStartupGap.count()) : -1;
            if (::poll(p.data(), p.size(), wait_ms) == 0) {
                for (auto& fn : funcs_) fn.system_reset();
                startup_pending_ = false;
                continue;
            }
            if (p[1].revents) return;
            for (size_t i = 2; i < p.size(); ++i) {
                if (!(p[i].revents & POLLIN)) continue;
                for (auto& fn : funcs_) {
                    if (fn.resamplefd.get() != p[i].fd) continue;
                    uint64_t v;
                    (void)!::read(p[i].fd, &v, sizeof v);
                    if (fn.asserted) {
                        uint64_t one = 1;
                        (void)!::write(fn.irqfd.get(), &one, sizeof one);
                    }
                }
            }
            if (!(p[0].revents & (POLLIN | POLLHUP))) continue;
            while (true) {
                auto r = ch_.recv(f);
                if (!r.ok() || *r == proto::RecvState::Closed) return;
                if (*r == proto::RecvState::WouldBlock) break;
                if (!handle(f)) return;
                served = true;
            }
        }
    }
    FakeFunction& cur() { return funcs_[selected_]; }
    bool reply(uint64_t v) {
        if (fault_ == Fault::Garbage) {
            uint8_t junk[3] = {1, 2, 3};
            return ch_.send(Cmd::Ret, junk).ok();
        }
        if (fault_ == Fault::Close) return false;
        if (fault_ == Fault::Hang) return true;
        if (fault_ == Fault::FdOnRet) {
            UniqueFd e(::eventfd(0, EFD_CLOEXEC));
            int fd = e.get();
            return ch_.send(Cmd::Ret, std::span(reinterpret_cast<const uint8_t*>(&v), sizeof v),
                            std::span<const int>(&fd, 1))
                .ok();
        }
        if (fault_ == Fault::Split) {  // the header now, the value a little later
            proto::Header h{proto::raw(Cmd::Ret), 0, sizeof v};
            if (::write(ch_.fd(), &h, sizeof h) != sizeof h) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            return ::write(ch_.fd(), &v, sizeof v) == sizeof v;
        }
        return ch_.send_ret(v).ok();
    }
    bool handle(proto::Frame& f) {
        Seen s{f.cmd(), 0, 0, f.num_fds};
        if (f.cmd() == Cmd::PciCfgRead || f.cmd() == Cmd::PciCfgWrite) {
            auto c = f.as<proto::PciConf>();
            s.a = c.addr;
            s.b = c.val;
        } else if (f.cmd() == Cmd::BarRead || f.cmd() == Cmd::BarWrite) {
            auto b = f.as<proto::BarAccess>();
            s.a = b.addr;
            s.b = b.size;
        }
        {
            std::lock_guard lk(mu_);
            seen_.push_back(s);
        }
        if (!proto::validate(f, proto::Role::Remote).ok()) return false;
        switch (f.cmd()) {
        case Cmd::SyncSysmem: return true;
        case Cmd::SetIrqfd:
            cur().irqfd = f.take_fd(0);
            cur().resamplefd = f.take_fd(1);
            return true;
        case Cmd::PciCfgRead: {
            auto c = f.as<proto::PciConf>();
            if (c.addr + 4 > 256) return false;  // stock: fatal
            uint64_t v = 0;
            for (int i = 0; i < c.len; ++i) v |= uint64_t{cur().cfg[c.addr + i]} << (8 * i);
            return reply(v);
        }
        case Cmd::PciCfgWrite: {
            auto c = f.as<proto::PciConf>();
            if (c.addr + 4 > 256) return false;
            for (int i = 0; i < c.len; ++i) {
                uint8_t m = cur().wmask[c.addr + i];
                cur().cfg[c.addr + i] = (cur().cfg[c.addr + i] & ~m) | ((c.val >> (8 * i)) & m);
            }
            return reply(0);
        }
        case Cmd::BarRead:
        case Cmd::BarWrite: {
            auto b = f.as<proto::BarAccess>();
            if (b.size == 0 || (b.size & (b.size - 1)) || b.size > 8) {
                if (b.addr == proto::kExtProbeAddr && multidev_)
                    return reply(proto::kExtReplyMagic | (b.val & proto::kFeatMultiDev));
                return reply(~uint64_t{0});
            }
            auto off = cur().decode(b.addr, b.memory);
            if (!off) {
                if (b.memory) return false;  // stock: fatal "Bad address"
                return reply(~uint64_t{0});
            }
            bool wr = f.cmd() == Cmd::BarWrite;
            if (wr) {
                for (unsigned i = 0; i < b.size; ++i) cur().regs[(*off + i) & 0xff] = static_cast<uint8_t>(b.val >> (8 * i));
                if (*off == 0x10) cur().set_irq(b.val & 1);  // "interrupt" register
                return reply(0);
            }
            uint64_t v = 0;
            for (unsigned i = 0; i < b.size; ++i) v |= uint64_t{cur().regs[(*off + i) & 0xff]} << (8 * i);
            if (*off == 0x0c) cur().set_irq(false);  // read-to-clear status
            return reply(v);
        }
        case Cmd::DeviceReset:
            cur().regs.fill(0);
            cur().set_irq(false);
            return ch_.send_empty(Cmd::Ret).ok();
        default:
            if (f.cmd() == Cmd::SelectDevice && multidev_) {
                auto sel = f.as<proto::SelectDevice>();
                std::string id(sel.id, strnlen(sel.id, sizeof sel.id));
                for (size_t i = 0; i < funcs_.size(); ++i) {
                    if (funcs_[i].id == id) {
                        selected_ = i;
                        return reply(0);
                    }
                }
                return reply(~uint64_t{0});
            }
            return false;
        }
    }

    proto::Channel ch_;
    bool multidev_;
    bool startup_pending_;
    std::vector<FakeFunction> funcs_;
    size_t selected_ = 0;
    std::atomic<Fault> fault_{Fault::None};
    UniqueFd stop_fd_;
    std::mutex mu_;
    std::vector<Seen> seen_;
    std::thread thread_;
};

class Line : public pci::IrqLine {
public:
    std::vector<bool> ev;
    void set_level(bool l) override { ev.push_back(l); }
};

class ProxyTest : public ::testing::TestWithParam<LinkIo> {
protected:
    void start(bool multidev = false, uint32_t timeout_ms = 2000, Startup startup = Startup::Done) {
        int sv[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        remote = std::make_unique<FakeRemote>(UniqueFd(sv[1]), multidev, startup);
        auto l = ProxyLink::create(UniqueFd(sv[0]), "socket 3", timeout_ms, GetParam());
        ASSERT_TRUE(l.ok()) << l.error().message;
        link = *l;
        if (GetParam() == LinkIo::Uring && !link->uses_ring()) GTEST_SKIP() << "no io_uring here";
        if (GetParam() == LinkIo::Syscalls) {
            ASSERT_FALSE(link->uses_ring());
        }
        auto r = GuestRam::create(16 << 20, RamBacking::Memfd, RamShare::Shared, "ram");
        ASSERT_TRUE(r.ok());
        ram = std::move(*r);
        events.on_remote_disconnect.push_back(
            [this](std::string_view id, std::string_view why) { lost.emplace_back(std::string(id), std::string(why)); });
    }
    std::unique_ptr<ProxyDevice> make(std::string id) {
        auto d = std::make_unique<ProxyDevice>(loop, link, ProxyOptions{id, 200000}, &events);
        d->attach_irq(&line);
        return d;
    }
    void program(ProxyDevice& d, uint32_t io, uint32_t mem) {
        d.config_write(0x10, io, 4);
        d.config_write(0x14, mem, 4);
        d.config_write(0x04, 0x7, 2);
    }

    EventLoop loop;
    std::unique_ptr<FakeRemote> remote;
    std::shared_ptr<ProxyLink> link;
    std::unique_ptr<GuestRam> ram;
    VmmEvents events;
    std::vector<std::pair<std::string, std::string>> lost;
    Line line;
};

TEST_P(ProxyTest, RealizeSequenceAndBarSizing) {
    start();
    auto d = make("lsi0");
    auto st = d->realize(*ram);
    ASSERT_TRUE(st.ok()) << st.error().message;
    auto s = remote->seen();
    ASSERT_GE(s.size(), 3u + 4u + 28u);
    EXPECT_EQ(s[0].cmd, Cmd::SyncSysmem);
    EXPECT_EQ(s[0].fds, 1u);
    EXPECT_EQ(s[1].cmd, Cmd::BarRead);  // MPQEXT probe
    EXPECT_EQ(s[1].a, proto::kExtProbeAddr);
    EXPECT_EQ(s[1].b, 0u);
    EXPECT_EQ(s[2].cmd, Cmd::SetIrqfd);
    EXPECT_EQ(s[2].fds, 2u);
    uint64_t ident[4] = {0x00, 0x02, 0x0a, 0x2e};
    for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(s[3 + i].cmd, Cmd::PciCfgRead);
        EXPECT_EQ(s[3 + i].a, ident[i]);
    }
    for (int i = 0; i < 7; ++i) {
        EXPECT_EQ(s[7 + 4 * i].a, 0x10u + 4 * i);
        EXPECT_EQ(s[7 + 4 * i + 1].cmd, Cmd::PciCfgWrite);
        EXPECT_EQ(s[7 + 4 * i + 1].b, 0xffffffffu);
    }
    EXPECT_FALSE(link->negotiated());
    EXPECT_EQ(d->vendor(), 0x1000);
    EXPECT_EQ(d->device(), 0x0012);
    EXPECT_EQ(d->class_code(), 0x0100);
    EXPECT_EQ(d->bars()[0].kind, ProxyBar::Kind::Io);
    EXPECT_EQ(d->bars()[0].size, 256u);
    EXPECT_EQ(d->bars()[1].kind, ProxyBar::Kind::Mem32);
    EXPECT_EQ(d->bars()[1].size, 1024u);
    EXPECT_EQ(d->bars()[2].kind, ProxyBar::Kind::None);
}

// The CI failure "SCRATCHA readback mismatch" (our VMM, stock remote, load):
// the remote's startup reset ran after the guest had programmed the BARs (or
// inside the BAR probe). Realize must wait for that reset.
TEST_P(ProxyTest, StockRemoteStartupResetIsAwaitedBeforeTheBarProbe) {
    start(false, 2000, Startup::Pending);
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    EXPECT_EQ(d->bars()[0].kind, ProxyBar::Kind::Io);
    EXPECT_EQ(d->bars()[0].size, 256u);
    EXPECT_EQ(d->bars()[1].kind, ProxyBar::Kind::Mem32);
    EXPECT_EQ(d->bars()[1].size, 1024u);
    program(*d, 0xc000, 0xe0000000);
    d->bar_write(1, 0x34, 0x5a5a1234, 4);
    // The remote goes idle: a startup reset still pending would run now.
    std::this_thread::sleep_for(2 * kStartupGap);
    EXPECT_EQ(d->bar_read(1, 0x34, 4), 0x5a5a1234u);
    EXPECT_EQ(d->bar_read(0, 0x34, 4), 0x5a5a1234u);
    EXPECT_EQ(d->config_read(0x04, 2) & 0x7, 0x7u);
    EXPECT_FALSE(d->broken());
    EXPECT_TRUE(lost.empty());
}

TEST_P(ProxyTest, AnonymousRamIsRefused) {
    start();
    auto r = GuestRam::create(1 << 20, RamBacking::Anonymous, RamShare::Private, "ram");
    ASSERT_TRUE(r.ok());
    auto d = make("lsi0");
    auto st = d->realize(**r);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("requires fd-backed guest RAM"), std::string::npos);
}

TEST_P(ProxyTest, BarsDecodeWhereProgrammedAndForwardAbsoluteAddresses) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    EXPECT_FALSE(d->decode(pci::AddressSpace::Memory, 0xe0000034, 4));
    program(*d, 0xc000, 0xe0000000);
    auto hit = d->decode(pci::AddressSpace::Memory, 0xe0000034, 4);
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->bar, 1);
    EXPECT_EQ(hit->offset, 0x34u);
    EXPECT_FALSE(d->decode(pci::AddressSpace::Memory, 0xe00003fe, 4));  // runs past the end
    remote->clear_seen();
    d->bar_write(1, 0x34, 0x5a5a1234, 4);
    EXPECT_EQ(d->bar_read(1, 0x34, 4), 0x5a5a1234u);
    EXPECT_EQ(d->bar_read(0, 0x35, 1), 0x12u);  // I/O BAR sees the same registers
    auto s = remote->seen();
    ASSERT_EQ(s.size(), 3u);
    EXPECT_EQ(s[0].a, 0xe0000034u);
    EXPECT_EQ(s[2].a, 0xc035u);
    // Config read of the BAR goes to the remote and agrees with our shadow.
    EXPECT_EQ(d->config_read(0x14, 4), 0xe0000000u);
    // Move the BAR: the old address no longer decodes, the new one does.
    d->config_write(0x14, 0xe0100000, 4);
    EXPECT_FALSE(d->decode(pci::AddressSpace::Memory, 0xe0000034, 4));
    ASSERT_TRUE(d->decode(pci::AddressSpace::Memory, 0xe0100034, 4));
    EXPECT_EQ(d->bar_read(1, 0x34, 4), 0x5a5a1234u);
    EXPECT_EQ(remote->seen().back().a, 0xe0100034u);
    // Memory decoding off: nothing decodes, so nothing can be forwarded.
    d->config_write(0x04, 0x1, 2);
    EXPECT_FALSE(d->decode(pci::AddressSpace::Memory, 0xe0100034, 4));
    EXPECT_TRUE(d->decode(pci::AddressSpace::Io, 0xc000, 4));
}

TEST_P(ProxyTest, WideAndEdgeAccesses) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    remote->clear_seen();
    d->bar_write(1, 0x40, 0x1122334455667788ull, 8);
    EXPECT_EQ(d->bar_read(1, 0x40, 8), 0x1122334455667788ull);
    auto s = remote->seen();
    ASSERT_EQ(s.size(), 4u);
    EXPECT_EQ(s[0].a, 0xe0000040u);
    EXPECT_EQ(s[0].b, 4u);
    EXPECT_EQ(s[1].a, 0xe0000044u);
    // Config accesses ending past 0xFC+4 are done as the last dword.
    remote->clear_seen();
    EXPECT_EQ(d->config_read(0xfe, 2), 0u);
    d->config_write(0xff, 0xab, 1);
    s = remote->seen();
    for (auto& x : s) EXPECT_EQ(x.a, 0xfcu);
    EXPECT_EQ(s.back().cmd, Cmd::PciCfgWrite);
    EXPECT_EQ(s.back().b, 0xab000000u);  // merged into the dword read back
}

TEST_P(ProxyTest, InterruptLevelFollowsTheRemote) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    d->bar_write(1, 0x10, 1, 1);  // remote asserts INTx inside the access
    ASSERT_EQ(line.ev, std::vector<bool>({true}));
    EXPECT_TRUE(d->irq_level());
    // Accesses that do not deassert keep the line up (resample re-signals).
    for (int i = 0; i < 5; ++i) d->bar_read(1, 0x34, 4);
    EXPECT_EQ(line.ev, std::vector<bool>({true}));
    // Read-to-clear status deasserts: the line drops.
    d->bar_read(1, 0x0c, 1);
    EXPECT_EQ(line.ev, std::vector<bool>({true, false}));
    EXPECT_FALSE(d->irq_level());
    // Asynchronous assertion (no access in flight) arrives through the loop.
    d->bar_write(1, 0x10, 1, 1);
    d->bar_read(1, 0x0c, 1);
    EXPECT_EQ(line.ev, std::vector<bool>({true, false, true, false}));
}

TEST_P(ProxyTest, ResetForwardsConfigResetAndDropsDecode) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    remote->clear_seen();
    d->device_reset();
    auto s = remote->seen();
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s[0].cmd, Cmd::DeviceReset);
    EXPECT_FALSE(d->decode(pci::AddressSpace::Memory, 0xe0000034, 4));
    EXPECT_FALSE(d->decode(pci::AddressSpace::Io, 0xc000, 4));
    EXPECT_EQ(d->config_read(0x04, 2), 0u);
    EXPECT_EQ(d->config_read(0x14, 4), 0u);
    EXPECT_EQ(d->config_read(0x10, 4), 1u);  // type bit kept
    EXPECT_FALSE(d->broken());
}

TEST_P(ProxyTest, GarbageReplyBreaksTheDeviceOnce) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    remote->set_fault(Fault::Garbage);
    EXPECT_EQ(d->bar_read(1, 0x34, 4), 0xffffffffu);
    EXPECT_TRUE(d->broken());
    ASSERT_EQ(lost.size(), 1u);
    EXPECT_EQ(lost[0].first, "lsi0");
    EXPECT_NE(lost[0].second.find("invalid reply"), std::string::npos) << lost[0].second;
    int before = static_cast<int>(remote->seen().size());
    EXPECT_EQ(d->bar_read(1, 0x34, 2), 0xffffu);
    EXPECT_EQ(d->config_read(0, 4), 0xffffffffu);
    d->bar_write(1, 0x34, 1, 4);
    EXPECT_EQ(static_cast<int>(remote->seen().size()), before);  // nothing more sent
    EXPECT_EQ(lost.size(), 1u);
}

TEST_P(ProxyTest, RemoteEofReadsAllOnes) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    remote->set_fault(Fault::Close);
    EXPECT_EQ(d->bar_read(0, 0x34, 1), 0xffu);
    EXPECT_TRUE(d->broken());
    ASSERT_EQ(lost.size(), 1u);
    EXPECT_NE(lost[0].second.find("closed"), std::string::npos) << lost[0].second;
}

TEST_P(ProxyTest, HungRemoteTimesOutThenFailsFast) {
    start(false, 200);
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    remote->set_fault(Fault::Hang);
    EXPECT_EQ(d->bar_read(1, 0x34, 4), 0xffffffffu);
    EXPECT_TRUE(d->broken());
    ASSERT_EQ(lost.size(), 1u);
    EXPECT_NE(lost[0].second.find("timeout"), std::string::npos) << lost[0].second;
    int before = static_cast<int>(remote->seen().size());
    EXPECT_EQ(d->config_read(0, 2), 0xffffu);
    EXPECT_EQ(static_cast<int>(remote->seen().size()), before);
}

TEST_P(ProxyTest, IdleCloseIsNoticedByTheLoop) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    remote->stop();  // the fake closes its end
    for (int i = 0; i < 50 && lost.empty(); ++i) loop.run_once(100);
    EXPECT_TRUE(d->broken());
    ASSERT_EQ(lost.size(), 1u);
    EXPECT_NE(lost[0].second.find("closed"), std::string::npos) << lost[0].second;
    EXPECT_EQ(d->config_read(0, 4), 0xffffffffu);
}

TEST_P(ProxyTest, MultiDevPairsByIdOnOneSocket) {
    start(true);
    auto a = make("a");
    auto b = make("b");
    ASSERT_TRUE(a->realize(*ram).ok());
    ASSERT_TRUE(b->realize(*ram).ok());
    EXPECT_TRUE(link->negotiated());
    EXPECT_EQ(link->features(), proto::kFeatMultiDev);
    EXPECT_EQ(a->vendor(), 0x1000);
    EXPECT_EQ(b->vendor(), 0x2000);
    EXPECT_EQ(remote->count(Cmd::SyncSysmem), 1);  // once per connection
    program(*a, 0xc000, 0xe0000000);
    program(*b, 0xc100, 0xe0001000);
    a->bar_write(1, 0x34, 0xaaaa, 2);
    b->bar_write(1, 0x34, 0xbbbb, 2);
    EXPECT_EQ(a->bar_read(1, 0x34, 2), 0xaaaau);
    EXPECT_EQ(b->bar_read(1, 0x34, 2), 0xbbbbu);
    EXPECT_EQ(a->config_read(0, 2), 0x1000u);
    EXPECT_EQ(b->config_read(0, 2), 0x2000u);
    auto c = make("nosuch");
    auto st = c->realize(*ram);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("no device 'nosuch'"), std::string::npos);
}

TEST_P(ProxyTest, StockRemoteCannotCarryTwoDevices) {
    start(false);
    auto a = make("a");
    ASSERT_TRUE(a->realize(*ram).ok());
    auto b = make("b");
    auto st = b->realize(*ram);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("MULTIDEV"), std::string::npos);
    EXPECT_EQ(remote->count(Cmd::SelectDevice), 0);
}

TEST_P(ProxyTest, FdsOnAReplyBreakTheLink) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    remote->set_fault(Fault::FdOnRet);
    EXPECT_EQ(d->bar_read(1, 0x34, 4), 0xffffffffu);
    EXPECT_TRUE(d->broken());
    ASSERT_EQ(lost.size(), 1u);
    EXPECT_NE(lost[0].second.find("fds"), std::string::npos) << lost[0].second;
}

TEST_P(ProxyTest, ReplyInPiecesIsCompleted) {
    start();
    auto d = make("lsi0");
    ASSERT_TRUE(d->realize(*ram).ok());
    program(*d, 0xc000, 0xe0000000);
    d->bar_write(1, 0x34, 0x12345678, 4);
    remote->set_fault(Fault::Split);
    EXPECT_EQ(d->bar_read(1, 0x34, 4), 0x12345678u);
    EXPECT_EQ(d->bar_read(0, 0x34, 2), 0x5678u);
    EXPECT_FALSE(d->broken());
    remote->set_fault(Fault::None);
    EXPECT_EQ(d->config_read(0, 2), 0x1000u);
}

INSTANTIATE_TEST_SUITE_P(LinkIo, ProxyTest, ::testing::Values(LinkIo::Uring, LinkIo::Syscalls),
                         [](const ::testing::TestParamInfo<LinkIo>& i) {
                             return i.param == LinkIo::Uring ? "Uring" : "Syscalls";
                         });

TEST(VmmProxyLink, RefusesNonSockets) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    ::close(p[1]);
    auto l = ProxyLink::create(UniqueFd(p[0]), "fd", 100);
    ASSERT_FALSE(l.ok());
    EXPECT_NE(l.error().message.find("is not a socket"), std::string::npos);
}

}  // namespace
}  // namespace mpq::vmm
