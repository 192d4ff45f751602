#include "pci/pci_device.h"

#include <vector>

#include <gtest/gtest.h>

#include "mem/guest_memory.h"

using namespace mpq;
using namespace mpq::pci;

namespace {

PciIdentity lsi_like() {
    PciIdentity id;
    id.vendor = 0x1000;
    id.device = 0x0012;
    id.class_code = 0x010000;
    id.subsys_id = 0x1000;
    id.latency_timer = 0xff;
    id.bars[0] = {BarKind::Io, 256};
    id.bars[1] = {BarKind::Mem32, 1024};
    id.bars[2] = {BarKind::Mem32, 8192};
    return id;
}

struct RecordingIrq : IrqLine {
    std::vector<bool> changes;
    void set_level(bool l) override { changes.push_back(l); }
};

class TestDev : public PciDevice {
public:
    TestDev() : PciDevice(lsi_like()) {}
    uint64_t bar_read(int, uint64_t, unsigned) override { return 0; }
    void bar_write(int, uint64_t, uint64_t, unsigned) override {}
    void device_reset() override { resets++; }
    using PciDevice::dma_read;
    using PciDevice::dma_write;
    using PciDevice::set_irq;
    int resets = 0;
};

}  // namespace

// Values measured on stock QEMU 7.2's remote lsi53c895a (CFGREAD dump).
TEST(PciDevice, PowerOnConfigMatchesStock) {
    TestDev d;
    EXPECT_EQ(d.config_read(0x00, 4), 0x00121000u);
    EXPECT_EQ(d.config_read(0x04, 4), 0u);
    EXPECT_EQ(d.config_read(0x08, 4), 0x01000000u);
    EXPECT_EQ(d.config_read(0x0c, 4), 0x0000ff00u);
    EXPECT_EQ(d.config_read(0x10, 4), 1u);
    EXPECT_EQ(d.config_read(0x14, 4), 0u);
    EXPECT_EQ(d.config_read(0x2c, 4), 0x10000000u);
    EXPECT_EQ(d.config_read(0x3c, 4), 0x100u);
    EXPECT_EQ(d.config_read(0x0a, 2), 0x0100u);
    EXPECT_EQ(d.config_read(0x01, 2), 0x1210u);  // unaligned is fine
    EXPECT_EQ(d.config_read(0x00, 3), 0x121000u);
}

TEST(PciDevice, AllOnesWriteMatchesStockMasks) {
    TestDev d;
    for (uint32_t o = 0; o < 256; o += 4) d.config_write(o, 0xffffffff, 4);
    EXPECT_EQ(d.config_read(0x00, 4), 0x00121000u);
    EXPECT_EQ(d.config_read(0x04, 4), 0x00000507u);  // COMMAND writable bits; STATUS W1C
    EXPECT_EQ(d.config_read(0x0c, 4), 0x0000ffffu);  // cache line R/W, latency RO 0xff
    EXPECT_EQ(d.config_read(0x10, 4), 0xffffff01u);  // I/O 256
    EXPECT_EQ(d.config_read(0x14, 4), 0xfffffc00u);  // mem 1K
    EXPECT_EQ(d.config_read(0x18, 4), 0xffffe000u);  // mem 8K
    EXPECT_EQ(d.config_read(0x1c, 4), 0u);
    EXPECT_EQ(d.config_read(0x30, 4), 0u);  // no ROM
    EXPECT_EQ(d.config_read(0x3c, 4), 0x1ffu);
    EXPECT_EQ(d.config_read(0x40, 4), 0xffffffffu);
    EXPECT_EQ(d.config_read(0xfc, 4), 0xffffffffu);
    // Sizing state never decodes.
    EXPECT_FALSE(d.bar_enabled(0));
    EXPECT_FALSE(d.bar_enabled(1));
    EXPECT_FALSE(d.decode(AddressSpace::Memory, 0xfffffc00, 4).has_value());
    for (uint32_t o = 0; o < 256; o += 4) d.config_write(o, 0, 4);
    EXPECT_EQ(d.config_read(0x10, 4), 1u);
    EXPECT_EQ(d.config_read(0x0c, 4), 0x0000ff00u);
}

TEST(PciDevice, OutOfRangeConfigAccess) {
    TestDev d;
    EXPECT_EQ(d.config_read(0xfe, 4), 0xffffffffu);
    EXPECT_EQ(d.config_read(0x100, 1), 0xffffffffu);
    EXPECT_EQ(d.config_read(0xfc, 4), 0u);
    EXPECT_EQ(d.config_read(0, 0), 0xffffffffu);
    EXPECT_EQ(d.config_read(0, 8), 0xffffffffu);
    d.config_write(0xfe, 0xffffffff, 4);  // ignored
    EXPECT_EQ(d.config_read(0xfc, 4), 0u);
    d.config_write(UINT32_MAX, 1, 4);
}

TEST(PciDevice, StatusW1C) {
    TestDev d;
    PciConfigState s = d.config_state();
    s.bytes[kStatus + 1] = 0xf9;  // error bits set
    d.restore_config_state(s);
    EXPECT_EQ(d.config_read(kStatus, 2), 0xf900u);
    d.config_write(kStatus, 0x0100, 2);  // clears only bit 8
    EXPECT_EQ(d.config_read(kStatus, 2), 0xf800u);
    d.config_write(kStatus, 0x0000, 2);
    EXPECT_EQ(d.config_read(kStatus, 2), 0xf800u);
    d.config_write(kCommand, 0xffff0000, 4);
    EXPECT_EQ(d.config_read(kStatus, 2), 0u);
}

TEST(PciDevice, BarProgrammingAndDecode) {
    TestDev d;
    d.config_write(0x10, 0xc000, 4);
    d.config_write(0x14, 0xfebf1000, 4);
    d.config_write(0x18, 0xfebf2000, 4);
    EXPECT_EQ(d.config_read(0x10, 4), 0xc001u);
    EXPECT_EQ(d.bar_address(0), 0xc000u);
    EXPECT_EQ(d.bar_address(1), 0xfebf1000u);
    // Not decoding until COMMAND enables it.
    EXPECT_FALSE(d.decode(AddressSpace::Io, 0xc034, 1).has_value());
    EXPECT_FALSE(d.decode(AddressSpace::Memory, 0xfebf1034, 4).has_value());
    d.config_write(kCommand, kCmdIo, 2);
    auto io = d.decode(AddressSpace::Io, 0xc034, 1);
    ASSERT_TRUE(io.has_value());
    EXPECT_EQ(io->bar, 0);
    EXPECT_EQ(io->offset, 0x34u);
    EXPECT_FALSE(d.decode(AddressSpace::Memory, 0xfebf1034, 4).has_value());
    EXPECT_FALSE(d.decode(AddressSpace::Memory, 0xc034, 1).has_value());  // wrong space
    d.config_write(kCommand, kCmdIo | kCmdMem, 2);
    auto m = d.decode(AddressSpace::Memory, 0xfebf3ffc, 4);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->bar, 2);
    EXPECT_EQ(m->offset, 0x1ffcu);
    EXPECT_FALSE(d.decode(AddressSpace::Memory, 0xfebf3ffe, 4).has_value());  // straddles end
    EXPECT_FALSE(d.decode(AddressSpace::Memory, 0xfebf4000, 1).has_value());
    EXPECT_FALSE(d.decode(AddressSpace::Io, 0xc100, 1).has_value());
    EXPECT_FALSE(d.decode(AddressSpace::Io, 0xc0ff, 2).has_value());
    EXPECT_FALSE(d.decode(AddressSpace::Io, 0xc000, 0).has_value());
    EXPECT_FALSE(d.decode(AddressSpace::Memory, UINT64_MAX, 8).has_value());
    // Low address bits inside the BAR size are not writable.
    d.config_write(0x14, 0xfebf13ff, 4);
    EXPECT_EQ(d.config_read(0x14, 4), 0xfebf1000u);
    // Base 0 does not decode.
    d.config_write(0x14, 0, 4);
    EXPECT_FALSE(d.bar_enabled(1));
    EXPECT_FALSE(d.decode(AddressSpace::Memory, 0x10, 4).has_value());
    // Byte-wise BAR programming works.
    d.config_write(0x15, 0x20, 1);
    d.config_write(0x17, 0xfe, 1);
    EXPECT_EQ(d.bar_address(1), 0xfe002000u);
    EXPECT_TRUE(d.bar_enabled(1));
}

TEST(PciDevice, IrqForwardsLevelChangesOnlyAndHonoursIntxDisable) {
    TestDev d;
    RecordingIrq irq;
    d.attach_irq(&irq);
    d.set_irq(true);
    d.set_irq(true);
    EXPECT_EQ(irq.changes, (std::vector<bool>{true}));
    EXPECT_EQ(d.config_read(kStatus, 2) & kStatusInterrupt, kStatusInterrupt);
    d.config_write(kCommand, kCmdIntxDisable, 2);
    EXPECT_EQ(irq.changes, (std::vector<bool>{true, false}));
    d.set_irq(false);
    d.set_irq(true);
    EXPECT_EQ(irq.changes.size(), 2u);  // masked
    d.config_write(kCommand, 0, 2);
    EXPECT_EQ(irq.changes, (std::vector<bool>{true, false, true}));
    d.set_irq(false);
    EXPECT_EQ(irq.changes.back(), false);
    EXPECT_EQ(d.config_read(kStatus, 2) & kStatusInterrupt, 0u);
    // A line attached while asserted learns the level.
    d.set_irq(true);
    RecordingIrq late;
    d.attach_irq(&late);
    EXPECT_EQ(late.changes, (std::vector<bool>{true}));
}

TEST(PciDevice, DmaRefusedWithoutBusMaster) {
    TestDev d;
    std::vector<uint8_t> ram(4096);
    GuestMemory gm;
    ASSERT_TRUE(gm.set_host_region(0, ram.data(), ram.size()).ok());
    uint8_t b[4] = {1, 2, 3, 4};
    EXPECT_FALSE(d.dma_write(0, b).ok());  // no memory, no master
    d.attach_dma(&gm);
    auto e = d.dma_write(0, b);
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.error().message.find("bus mastering"), std::string::npos);
    EXPECT_EQ(ram[0], 0);
    d.config_write(kCommand, kCmdMaster, 2);
    ASSERT_TRUE(d.dma_write(0x10, b).ok());
    EXPECT_EQ(ram[0x13], 4);
    uint8_t r[4] = {};
    ASSERT_TRUE(d.dma_read(0x10, r).ok());
    EXPECT_EQ(r[2], 3);
    EXPECT_FALSE(d.dma_read(4094, r).ok());  // bounds
}

TEST(PciDevice, SaveRestoreRoundTripAndSanitises) {
    TestDev d;
    d.config_write(0x10, 0xc000, 4);
    d.config_write(kCommand, kCmdIo | kCmdMaster, 2);
    d.config_write(0x40, 0xdeadbeef, 4);
    d.set_irq(true);
    PciConfigState s = d.config_state();
    TestDev e;
    RecordingIrq irq;
    e.attach_irq(&irq);
    e.restore_config_state(s);
    EXPECT_EQ(e.config_state().bytes, s.bytes);
    EXPECT_TRUE(e.config_state().irq_level);
    EXPECT_EQ(irq.changes, (std::vector<bool>{true}));
    EXPECT_TRUE(e.decode(AddressSpace::Io, 0xc010, 1).has_value());
    // Read-only identity cannot be overwritten by a corrupt image.
    s.bytes[0] = 0x34;
    s.bytes[0x10] = 0;  // I/O indicator bit
    e.restore_config_state(s);
    EXPECT_EQ(e.config_read(0, 2), 0x1000u);
    EXPECT_EQ(e.config_read(0x10, 4), 0xc001u);
}

TEST(PciDevice, PciResetRestoresPowerOnAndResetsDevice) {
    TestDev d;
    RecordingIrq irq;
    d.attach_irq(&irq);
    d.config_write(0x10, 0xc000, 4);
    d.config_write(kCommand, kCmdIo, 2);
    d.set_irq(true);
    d.pci_reset();
    EXPECT_EQ(d.resets, 1);
    EXPECT_EQ(d.config_read(0x10, 4), 1u);
    EXPECT_EQ(d.command(), 0u);
    EXPECT_EQ(irq.changes, (std::vector<bool>{true, false}));
}
