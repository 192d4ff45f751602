// PC interrupt routing without an irqchip model: PCI INTx pins are swizzled to
// PIRQA-D, the PIIX3 PIRQ route registers (00:01.0 config 0x60-0x63) send each
// PIRQ to one legacy IRQ, and 24 IOAPIC-like input lines carry the result.
// Nothing here interprets vectors or EOIs; the lines exist so that qtest's
// `irq_intercept_in ioapic` can watch them as it does on stock QEMU.
#pragma once

#include <array>
#include <cstdint>
#include <functional>

namespace mpq::vmm {

inline constexpr int kNumIrqLines = 24;  // IOAPIC inputs
inline constexpr int kNumPirqs = 4;      // PIRQA..D
inline constexpr int kNumPicIrqs = 16;   // a PIRQ route value >= 16 disables it

// Which PIRQ a device's INTx pin drives: QEMU's i440FX swizzle,
// (pin + slot - 1) mod 4, with pin 0 = INTA.
constexpr int pirq_of(int slot, int pin0) { return (pin0 + slot - 1) & 3; }

class IrqRouter {
public:
    using Observer = std::function<void(int line, bool level)>;

    IrqRouter();

    // A device pin changed level. Callers forward only changes (see IntxPin),
    // so a per-PIRQ count of asserting pins is exact.
    void set_pirq_input(int pirq, bool asserted);
    // PIIX3 route register write (value as written: < 16 routes, else off).
    void set_route(int pirq, uint8_t value);
    uint8_t route(int pirq) const { return route_[pirq]; }
    // Power-on state: every route disabled (0x80), no pin asserted.
    void reset_routes();

    bool line_level(int line) const { return line >= 0 && line < kNumIrqLines && level_[line]; }
    // Called for every line whose level changes.
    void set_observer(Observer obs) { observer_ = std::move(obs); }

private:
    void recompute();

    std::array<uint32_t, kNumPirqs> asserted_{};  // pins asserting each PIRQ
    std::array<uint8_t, kNumPirqs> route_{};
    std::array<bool, kNumIrqLines> level_{};
    Observer observer_;
};

}  // namespace mpq::vmm
