// The two fixed functions of the i440FX `pc` machine: the host bridge at
// 00:00.0 and the PIIX3 ISA bridge at 00:01.0, whose PIRQ route registers
// (0x60-0x63) steer PCI INTx to legacy IRQ lines. Neither has BARs.
#pragma once

#include <array>
#include <cstdint>

#include "pci/pci_function.h"
#include "vmm/irq_router.h"

namespace mpq::vmm {

// Register offsets used by the chipset functions.
inline constexpr uint32_t kPiixPirqRoute = 0x60;  // PIRQA..D route, 4 bytes
inline constexpr uint16_t kIntelVendor = 0x8086;
inline constexpr uint16_t kI440fxDevice = 0x1237;  // 82441FX host bridge
inline constexpr uint16_t kPiix3Device = 0x7000;   // 82371SB ISA bridge
inline constexpr uint16_t kQemuSubsysVendor = 0x1af4;
inline constexpr uint16_t kQemuSubsysId = 0x1100;

// A function with a fixed identity, byte-wise write masks and no BARs.
class ChipsetFunction : public pci::PciFunction {
public:
    uint32_t config_read(uint32_t off, unsigned len) override;
    void config_write(uint32_t off, uint32_t val, unsigned len) override;
    uint64_t bar_read(int, uint64_t, unsigned) override { return ~uint64_t{0}; }
    void bar_write(int, uint64_t, uint64_t, unsigned) override {}
    std::optional<pci::BarHit> decode(pci::AddressSpace, uint64_t, unsigned) const override {
        return std::nullopt;
    }
    void device_reset() override { reset(); }
    virtual void reset();

protected:
    ChipsetFunction(uint16_t device, uint32_t class_code, uint8_t revision, uint8_t header_type);
    virtual void after_write(uint32_t off, unsigned len) { (void)off, (void)len; }

    std::array<uint8_t, pci::kConfigSpaceSize> cfg_{};
    std::array<uint8_t, pci::kConfigSpaceSize> wmask_{};

private:
    std::array<uint8_t, pci::kConfigSpaceSize> initial_{};
};

class I440fxHostBridge final : public ChipsetFunction {
public:
    I440fxHostBridge();
};

class Piix3 final : public ChipsetFunction {
public:
    explicit Piix3(IrqRouter& router);
    void reset() override;

protected:
    void after_write(uint32_t off, unsigned len) override;

private:
    IrqRouter& router_;
};

}  // namespace mpq::vmm
