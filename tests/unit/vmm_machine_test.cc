// Machine dispatch: RAM vs. BAR decode vs. unassigned, access splitting,
// INTx through the PIIX3 routes to intercepted lines, reset via 0xcf9.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "util/event_loop.h"
#include "vmm/machine.h"
#include "vmm/qtest_machine.h"

namespace mpq::vmm {
namespace {

// One memory BAR at 0xe0000000 (4 KiB) and one I/O BAR at 0xc000 (256 B).
class FakeDev : public pci::PciFunction {
public:
    std::vector<std::string> log;
    int resets = 0;
    uint32_t config_read(uint32_t off, unsigned) override { return off == 0 ? 0x00121000u : 0; }
    void config_write(uint32_t, uint32_t, unsigned) override {}
    uint64_t bar_read(int bar, uint64_t off, unsigned size) override {
        log.push_back(fmt::format("r{} {:#x} {}", bar, off, size));
        return 0x1122334455667788ull & (size == 8 ? ~0ull : (1ull << (8 * size)) - 1);
    }
    void bar_write(int bar, uint64_t off, uint64_t val, unsigned size) override {
        log.push_back(fmt::format("w{} {:#x} {:#x} {}", bar, off, val, size));
    }
    std::optional<pci::BarHit> decode(pci::AddressSpace sp, uint64_t a, unsigned n) const override {
        uint64_t base = sp == pci::AddressSpace::Memory ? 0xe0000000 : 0xc000;
        uint64_t size = sp == pci::AddressSpace::Memory ? 0x1000 : 0x100;
        if (a >= base && a + n <= base + size) return pci::BarHit{sp == pci::AddressSpace::Memory ? 1 : 0, a - base};
        return std::nullopt;
    }
    void device_reset() override { ++resets; }
};

class MachineTest : public ::testing::Test {
protected:
    MachineTest() {
        auto r = GuestRam::create(32 << 20, RamBacking::Anonymous, RamShare::Private, "ram");
        EXPECT_TRUE(r.ok());
        m = std::make_unique<Machine>(loop, std::move(*r));
        auto pin = m->plug(make_devfn(2, 0), "dev", &dev);
        EXPECT_TRUE(pin.ok());
        intx = *pin;
        m->add_reset_handler([this] { dev.device_reset(); });
    }
    EventLoop loop;
    std::unique_ptr<Machine> m;
    FakeDev dev;
    IntxPin* intx = nullptr;
};

TEST_F(MachineTest, RamReadWrite) {
    uint8_t in[5] = {1, 2, 3, 4, 5}, out[5] = {};
    m->mem_write(0x1000, in);
    m->mem_read(0x1000, out);
    EXPECT_EQ(0, memcmp(in, out, 5));
    m->mem_fill(0x2000, 3, 0xab);
    m->mem_read(0x2000, out);
    EXPECT_EQ(out[0], 0xab);
    EXPECT_EQ(out[2], 0xab);
    EXPECT_EQ(out[3], 0);
    EXPECT_TRUE(dev.log.empty());
}

TEST_F(MachineTest, MmioIsDispatchedWithNaturalPieces) {
    uint8_t b[8];
    m->mem_read(0xe0000034, std::span(b, 4));
    ASSERT_EQ(dev.log.size(), 1u);
    EXPECT_EQ(dev.log[0], "r1 0x34 4");
    dev.log.clear();
    m->mem_read(0xe0000036, std::span(b, 4));  // misaligned: 2 + 2
    ASSERT_EQ(dev.log.size(), 2u);
    EXPECT_EQ(dev.log[0], "r1 0x36 2");
    EXPECT_EQ(dev.log[1], "r1 0x38 2");
    dev.log.clear();
    uint8_t w[4] = {0x78, 0x56, 0x34, 0x12};
    m->mem_write(0xe0000040, w);
    EXPECT_EQ(dev.log[0], "w1 0x40 0x12345678 4");
}

TEST_F(MachineTest, UnassignedMemoryReadsZeroAndPortsAllOnes) {
    uint8_t b[4] = {9, 9, 9, 9};
    m->mem_read(0xf0000000, b);
    EXPECT_EQ(b[0] | b[1] | b[2] | b[3], 0);
    EXPECT_EQ(m->pio_read(0x1234, 4), 0xffffffffu);
    EXPECT_EQ(m->pio_read(0x1234, 1), 0xffu);
    EXPECT_EQ(m->pio_read(0xc034, 4), 0x55667788u);
    EXPECT_EQ(dev.log.back(), "r0 0x34 4");
}

TEST_F(MachineTest, ConfigSpaceThroughPorts) {
    m->pio_write(0xcf8, 0x80001000, 4);  // 00:02.0
    EXPECT_EQ(m->pio_read(0xcfc, 4), 0x00121000u);
    m->pio_write(0xcf8, 0x80000000, 4);
    EXPECT_EQ(m->pio_read(0xcfc, 4), 0x12378086u);
}

TEST_F(MachineTest, IntxReachesInterceptedLine) {
    std::vector<std::pair<int, bool>> ev;
    QtestMachine qm(*m, [&](int l, bool v) { ev.emplace_back(l, v); });
    EXPECT_TRUE(qm.irq_intercept("ioapic", IrqDirection::In).ok());
    EXPECT_FALSE(qm.irq_intercept("/machine/nothing", IrqDirection::In).ok());
    // Slot 2 INTA -> PIRQB -> route register 0x61.
    m->pio_write(0xcf8, 0x80000860, 4);
    m->pio_write(0xcfd, 11, 1);
    intx->set_level(true);
    intx->set_level(true);
    intx->set_level(false);
    ASSERT_EQ(ev.size(), 2u);
    EXPECT_EQ(ev[0], std::make_pair(11, true));
    EXPECT_EQ(ev[1], std::make_pair(11, false));
}

// The machine's lines are not qtest's: any number of drivers listen, and
// config cycles need no port I/O.
TEST_F(MachineTest, LinesHaveManyListenersAndConfigCyclesAreDirect) {
    std::vector<int> a, b;
    auto ida = m->add_irq_listener([&](int l, bool v) { if (v) a.push_back(l); });
    m->add_irq_listener([&](int l, bool v) { if (v) b.push_back(l); });
    m->config_write(0, make_devfn(1, 0), 0x61, 10, 1);  // PIRQB -> IRQ 10
    intx->set_level(true);
    EXPECT_TRUE(m->irq_level(10));
    intx->set_level(false);
    m->remove_irq_listener(ida);
    intx->set_level(true);
    EXPECT_EQ(a, std::vector<int>{10});
    EXPECT_EQ(b, (std::vector<int>{10, 10}));
    EXPECT_EQ(m->config_read(0, make_devfn(0, 0), 0, 4), 0x12378086u);
    EXPECT_EQ(m->config_read(0, make_devfn(9, 0), 0, 4), 0xffffffffu);
}

TEST_F(MachineTest, ResetControlResetsDevicesFromTheLoop) {
    m->pio_write(0xcf8, 0x80000860, 4);
    m->pio_write(0xcfc, 0x0b0b0b0b, 4);
    m->pio_write(0xcf9, 0x06, 1);
    EXPECT_EQ(dev.resets, 0);  // deferred, as QEMU's reset request
    loop.run_once(0);
    EXPECT_EQ(dev.resets, 1);
    EXPECT_EQ(m->irq().route(0), 0x80);
    EXPECT_EQ(m->reset_count(), 1u);
}

TEST(VmmMachine, NaturalPiece) {
    EXPECT_EQ(natural_piece(0x1000, 8, 8), 8u);
    EXPECT_EQ(natural_piece(0x1004, 8, 8), 4u);
    EXPECT_EQ(natural_piece(0x1002, 4, 4), 2u);
    EXPECT_EQ(natural_piece(0x1001, 4, 4), 1u);
    EXPECT_EQ(natural_piece(0x1000, 3, 8), 2u);
}

TEST(VmmGuestRam, LayoutAndBounds) {
    auto r = GuestRam::create(64 << 20, RamBacking::Memfd, RamShare::Shared, "m");
    ASSERT_TRUE(r.ok());
    auto& ram = **r;
    EXPECT_GE(ram.shareable_fd(), 0);
    ASSERT_EQ(ram.regions().size(), 1u);
    EXPECT_EQ(ram.regions()[0].size, 64u << 20);
    uint8_t b[4];
    EXPECT_FALSE(ram.read((64 << 20) - 2, b).ok());
    EXPECT_FALSE(ram.read(~0ull - 1, b).ok());
    EXPECT_TRUE(ram.map((64 << 20) - 3, 4).empty());
    EXPECT_FALSE(GuestRam::create(12345, RamBacking::Anonymous, RamShare::Private, "x").ok());
    auto p = GuestRam::create(1 << 20, RamBacking::Memfd, RamShare::Private, "p");
    ASSERT_TRUE(p.ok());
    EXPECT_EQ((*p)->shareable_fd(), -1);
}

TEST(VmmGuestRam, MemfdSealedByDefaultAsQemu) {
    // seal=on (the default): a remote can rely on the size it was given.
    auto r = GuestRam::create(1 << 20, RamBacking::Memfd, RamShare::Shared, "s");
    ASSERT_TRUE(r.ok());
    int fd = (*r)->shareable_fd();
    int seals = ::fcntl(fd, F_GET_SEALS);
    EXPECT_EQ(seals & (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL), F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    EXPECT_NE(::ftruncate(fd, 4096), 0);
    EXPECT_NE(::ftruncate(fd, 2 << 20), 0);
    auto u = GuestRam::create(1 << 20, RamBacking::Memfd, RamShare::Shared, "u", RamSeal::Unsealed);
    ASSERT_TRUE(u.ok());
    int useals = ::fcntl((*u)->shareable_fd(), F_GET_SEALS);
    EXPECT_EQ(useals & (F_SEAL_GROW | F_SEAL_SHRINK), 0);
}

}  // namespace
}  // namespace mpq::vmm
