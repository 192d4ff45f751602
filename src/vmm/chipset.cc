#include "vmm/chipset.h"

#include <algorithm>

#include "pci/pci_device.h"

namespace mpq::vmm {

ChipsetFunction::ChipsetFunction(uint16_t device, uint32_t class_code, uint8_t revision,
                                 uint8_t header_type) {
    auto put16 = [&](uint32_t off, uint16_t v) {
        cfg_[off] = v & 0xff;
        cfg_[off + 1] = v >> 8;
    };
    put16(pci::kVendorId, kIntelVendor);
    put16(pci::kDeviceId, device);
    cfg_[pci::kRevision] = revision;
    cfg_[pci::kClassProg] = class_code & 0xff;
    cfg_[pci::kClassProg + 1] = (class_code >> 8) & 0xff;
    cfg_[pci::kClassProg + 2] = (class_code >> 16) & 0xff;
    cfg_[pci::kHeaderType] = header_type;
    put16(pci::kSubsysVendor, kQemuSubsysVendor);
    put16(pci::kSubsysId, kQemuSubsysId);
    // Latency timer, cache line and the chipset-specific area are plain
    // read/write storage; nothing behind them is emulated (no PAM, no SMRAM).
    wmask_[pci::kCacheLineSize] = 0xff;
    wmask_[pci::kLatencyTimer] = 0xff;
    std::fill(wmask_.begin() + 0x40, wmask_.end(), 0xff);
    initial_ = cfg_;
}

void ChipsetFunction::reset() { cfg_ = initial_; }

uint32_t ChipsetFunction::config_read(uint32_t off, unsigned len) {
    uint32_t v = 0;
    for (unsigned i = 0; i < len && off + i < cfg_.size(); ++i) v |= uint32_t{cfg_[off + i]} << (8 * i);
    return v;
}

void ChipsetFunction::config_write(uint32_t off, uint32_t val, unsigned len) {
    for (unsigned i = 0; i < len && off + i < cfg_.size(); ++i) {
        uint8_t m = wmask_[off + i];
        uint8_t b = (val >> (8 * i)) & 0xff;
        cfg_[off + i] = (cfg_[off + i] & ~m) | (b & m);
    }
    after_write(off, len);
}

I440fxHostBridge::I440fxHostBridge() : ChipsetFunction(kI440fxDevice, 0x060000, 0x02, 0x00) {}

// Header type 0x80: the real PIIX3 is multi-function (IDE, USB, ACPI live at
// 1.1-1.3 on stock QEMU); scanners then probe 1.1-1.7, which read all-ones here.
Piix3::Piix3(IrqRouter& router) : ChipsetFunction(kPiix3Device, 0x060100, 0x00, 0x80), router_(router) {
    Piix3::reset();
}

void Piix3::reset() {
    ChipsetFunction::reset();
    for (int p = 0; p < kNumPirqs; ++p) cfg_[kPiixPirqRoute + p] = 0x80;
    router_.reset_routes();
}

void Piix3::after_write(uint32_t off, unsigned len) {
    for (int p = 0; p < kNumPirqs; ++p) {
        uint32_t reg = kPiixPirqRoute + p;
        if (reg >= off && reg < off + len) router_.set_route(p, cfg_[reg]);
    }
}

}  // namespace mpq::vmm
