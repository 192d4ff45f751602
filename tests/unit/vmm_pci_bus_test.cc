// PCI host bridge (config mechanism #1), chipset identity, PIRQ routing
// registers, reset control port.
#include <gtest/gtest.h>

#include "vmm/chipset.h"
#include "vmm/pci_bus.h"

namespace mpq::vmm {
namespace {

uint32_t cfg_addr(int dev, int fn, uint32_t off) {
    return kConfigEnable | (dev << 11) | (fn << 8) | (off & 0xfc);
}

class PciBusTest : public ::testing::Test {
protected:
    PciBusTest() : piix(router) {
        EXPECT_TRUE(bus.add(make_devfn(0, 0), "host", &host).ok());
        EXPECT_TRUE(bus.add(make_devfn(1, 0), "piix3", &piix).ok());
    }
    uint32_t read(int dev, int fn, uint32_t off, unsigned size) {
        bus.io_write(kPortConfigAddress, cfg_addr(dev, fn, off), 4);
        uint32_t v = 0;
        EXPECT_TRUE(bus.io_read(kPortConfigData + (off & 3), size, &v));
        return v;
    }
    void write(int dev, int fn, uint32_t off, uint32_t val, unsigned size) {
        bus.io_write(kPortConfigAddress, cfg_addr(dev, fn, off), 4);
        EXPECT_TRUE(bus.io_write(kPortConfigData + (off & 3), val, size));
    }
    IrqRouter router;
    I440fxHostBridge host;
    Piix3 piix;
    PciBus bus;
};

TEST_F(PciBusTest, ChipsetIdentity) {
    EXPECT_EQ(read(0, 0, 0, 4), 0x12378086u);
    EXPECT_EQ(read(1, 0, 0, 4), 0x70008086u);
    EXPECT_EQ(read(0, 0, 0x0a, 2), 0x0600u);
    EXPECT_EQ(read(1, 0, 0x0a, 2), 0x0601u);
    EXPECT_EQ(read(1, 0, 0x0e, 1), 0x80u);  // multi-function header
    EXPECT_EQ(read(0, 0, 0x2c, 4), 0x11001af4u);
    EXPECT_EQ(read(0, 0, 2, 2), 0x1237u);
    EXPECT_EQ(read(0, 0, 3, 1), 0x12u);
}

TEST_F(PciBusTest, AbsentFunctionsAndDisabledAddressReadAllOnes) {
    EXPECT_EQ(read(2, 0, 0, 4), 0xffffffffu);
    EXPECT_EQ(read(1, 1, 0, 2), 0xffffu);
    EXPECT_EQ(read(31, 7, 0, 1), 0xffu);
    bus.io_write(kPortConfigAddress, 0x00000000, 4);  // enable bit clear
    uint32_t v;
    bus.io_read(kPortConfigData, 4, &v);
    EXPECT_EQ(v, 0xffffffffu);
    // Bus 1 does not exist.
    bus.io_write(kPortConfigAddress, kConfigEnable | (1 << 16), 4);
    bus.io_read(kPortConfigData, 4, &v);
    EXPECT_EQ(v, 0xffffffffu);
}

TEST_F(PciBusTest, AddressRegisterOnlyTakesDwordAccess) {
    bus.io_write(kPortConfigAddress, 0x80000800, 4);
    uint32_t v;
    bus.io_read(kPortConfigAddress, 4, &v);
    EXPECT_EQ(v, 0x80000800u);
    bus.io_write(kPortConfigAddress, 0x12, 2);  // ignored
    bus.io_read(kPortConfigAddress, 4, &v);
    EXPECT_EQ(v, 0x80000800u);
}

TEST_F(PciBusTest, PirqRouteRegistersSteerTheRouter) {
    for (int p = 0; p < 4; ++p) EXPECT_EQ(read(1, 0, 0x60 + p, 1), 0x80u);
    write(1, 0, 0x60, 0x0b0a0b0b, 4);
    EXPECT_EQ(read(1, 0, 0x60, 4), 0x0b0a0b0bu);
    EXPECT_EQ(router.route(0), 0x0b);
    EXPECT_EQ(router.route(2), 0x0a);
    write(1, 0, 0x63, 5, 1);
    EXPECT_EQ(router.route(3), 5);
    piix.reset();
    EXPECT_EQ(router.route(3), 0x80);
    EXPECT_EQ(read(1, 0, 0x63, 1), 0x80u);
}

TEST_F(PciBusTest, ReadOnlyIdentityIgnoresWrites) {
    write(0, 0, 0, 0xffffffff, 4);
    EXPECT_EQ(read(0, 0, 0, 4), 0x12378086u);
    write(0, 0, 0x0c, 0x10, 1);  // cache line size is writable
    EXPECT_EQ(read(0, 0, 0x0c, 1), 0x10u);
}

TEST_F(PciBusTest, DuplicateSlotRefused) {
    I440fxHostBridge other;
    EXPECT_FALSE(bus.add(make_devfn(0, 0), "again", &other).ok());
    auto f = bus.free_devfn();
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(*f, make_devfn(2, 0));
}

TEST_F(PciBusTest, ResetControlPort) {
    int resets = 0;
    bus.on_reset_control = [&](uint8_t) { ++resets; };
    bus.io_write(kPortResetControl, 0x02, 1);
    EXPECT_EQ(resets, 0);
    bus.io_write(kPortResetControl, 0x06, 1);
    EXPECT_EQ(resets, 1);
    uint32_t v;
    bus.io_read(kPortResetControl, 1, &v);
    EXPECT_EQ(v, 0x02u);
}

TEST_F(PciBusTest, OtherPortsAreNotOurs) {
    uint32_t v;
    EXPECT_FALSE(bus.io_read(0xc000, 4, &v));
    EXPECT_FALSE(bus.io_write(0x80, 1, 1));
}

}  // namespace
}  // namespace mpq::vmm
