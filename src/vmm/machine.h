// The `pc` machine as far as a vCPU-less VMM needs it: guest RAM, the PCI
// bus with i440FX + PIIX3, INTx routing to 24 IOAPIC-like lines, a virtual
// clock, system reset, and guest-physical / port I/O dispatch. qtest drives
// it through QtestTarget; device models and proxies plug into the bus.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pci/pci_function.h"
#include "vmm/chipset.h"
#include "vmm/guest_ram.h"
#include "vmm/irq_router.h"
#include "vmm/pci_bus.h"
#include "vmm/qtest.h"
#include "vmm/vclock.h"

namespace mpq {
class EventLoop;
}

namespace mpq::vmm {

class Machine;

// One INTx pin of a PCI function, wired to its swizzled PIRQ.
class IntxPin final : public pci::IrqLine {
public:
    IntxPin(IrqRouter& router, int devfn, int pin0)
        : router_(router), pirq_(pirq_of(devfn_slot(devfn), pin0)) {}
    void set_level(bool asserted) override;
    bool level() const { return level_; }
    int pirq() const { return pirq_; }

private:
    IrqRouter& router_;
    int pirq_;
    bool level_ = false;
};

class Machine final : public QtestTarget {
public:
    Machine(EventLoop& loop, std::unique_ptr<GuestRam> ram);
    ~Machine() override;

    EventLoop& loop() { return loop_; }
    GuestRam& ram() { return *ram_; }
    PciBus& bus() { return bus_; }
    IrqRouter& irq() { return irq_; }
    VirtualClock& clock() { return clock_; }

    // The legacy IRQ that INTA# of `devfn` is routed to now (PIIX3 registers).
    std::optional<unsigned> routed_irq(int devfn) const {
        uint8_t r = irq_.route(pirq_of(devfn_slot(devfn), 0));
        return r < kNumPicIrqs ? std::optional<unsigned>(r) : std::nullopt;
    }
    // Registers a PCI function (not owned) and creates its INTA# pin.
    Result<IntxPin*> plug(int devfn, std::string id, pci::PciFunction* fn);
    // Keeps an object alive as long as the machine (destroyed in reverse order).
    void keep(std::shared_ptr<void> obj) { owned_.push_back(std::move(obj)); }

    // System reset: chipset, then every reset handler in registration order.
    void add_reset_handler(std::function<void()> fn) { reset_handlers_.push_back(std::move(fn)); }
    // Called before guest RAM is read or written from outside the devices
    // (qtest): a device's posted writes must have been carried out, or RAM
    // could show the state before the DMA they started.
    void add_fence(std::function<void()> fn) { fences_.push_back(std::move(fn)); }
    void fence() {
        for (auto& f : fences_) f();
    }
    void system_reset();
    // Asked by the guest (0xcf9) or a monitor: runs from the event loop.
    void request_reset();
    uint64_t reset_count() const { return reset_count_; }

    // QtestTarget
    uint32_t pio_read(uint16_t port, unsigned size) override;
    void pio_write(uint16_t port, uint32_t val, unsigned size) override;
    void mem_read(uint64_t addr, std::span<uint8_t> out) override;
    void mem_write(uint64_t addr, std::span<const uint8_t> in) override;
    void mem_fill(uint64_t addr, uint64_t len, uint8_t byte) override;
    Status irq_intercept(std::string_view path, IrqDirection dir) override;
    int64_t clock_step(std::optional<int64_t> ns) override { return clock_.step(ns); }
    int64_t clock_set(int64_t ns) override { return clock_.set(ns); }

    // Where intercepted line changes go (the qtest server).
    void set_irq_listener(std::function<void(int, bool)> fn) { irq_listener_ = std::move(fn); }

private:
    uint64_t mmio_read(uint64_t addr, unsigned size);
    void mmio_write(uint64_t addr, uint64_t val, unsigned size);

    EventLoop& loop_;
    std::unique_ptr<GuestRam> ram_;
    IrqRouter irq_;
    PciBus bus_;
    I440fxHostBridge host_bridge_;
    Piix3 piix3_;
    VirtualClock clock_;
    std::vector<std::unique_ptr<IntxPin>> pins_;
    std::vector<std::function<void()>> reset_handlers_;
    std::vector<std::function<void()>> fences_;
    std::vector<std::shared_ptr<void>> owned_;
    std::function<void(int, bool)> irq_listener_;
    bool reset_pending_ = false;
    uint64_t reset_count_ = 0;
};

// Largest naturally aligned access (1, 2, 4 or 8 bytes, at most `max`)
// starting at `addr` that fits in `len`: how the bus splits wide or
// misaligned accesses before they reach a device.
unsigned natural_piece(uint64_t addr, uint64_t len, unsigned max);

}  // namespace mpq::vmm
