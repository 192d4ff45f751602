// The `pc` machine as far as a vCPU-less VMM needs it: guest RAM, the PCI
// bus with i440FX + PIIX3, INTx routing to 24 IOAPIC-like lines, a virtual
// clock, system reset, and guest-physical / port I/O dispatch.
//
// The machine does not know who drives it. Its access methods (port I/O,
// guest-physical memory, config cycles) are the one entry point for every
// driver: qtest today (vmm/qtest_machine.h adapts it), vCPU threads of a
// hardware accelerator later. Its interrupt lines report to any number of
// listeners. Device models and proxies plug into the bus.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pci/pci_function.h"
#include "util/work_queue.h"
#include "vmm/chipset.h"
#include "vmm/guest_ram.h"
#include "vmm/irq_router.h"
#include "vmm/pci_bus.h"
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

// Device timers of in-process models: deferred work on the event loop,
// guest time on the machine's virtual clock.
class MachineTimers final : public WorkQueue {
public:
    MachineTimers(EventLoop& loop, VirtualClock& clock) : loop_(loop), clock_(clock) {}
    void defer(Callback cb) override;
    TimerId add_timer(uint64_t delay_ns, Callback cb) override;
    void cancel_timer(TimerId id) override { clock_.cancel(id); }

private:
    EventLoop& loop_;
    VirtualClock& clock_;
};

class Machine final {
public:
    Machine(EventLoop& loop, std::unique_ptr<GuestRam> ram);
    ~Machine();

    EventLoop& loop() { return loop_; }
    GuestRam& ram() { return *ram_; }
    PciBus& bus() { return bus_; }
    IrqRouter& irq() { return irq_; }
    VirtualClock& clock() { return clock_; }
    WorkQueue& timers() { return timers_; }

    // The legacy IRQ that INTA# of `devfn` is routed to now (PIIX3 registers).
    std::optional<unsigned> routed_irq(int devfn) const {
        uint8_t r = irq_.route(pirq_of(devfn_slot(devfn), 0));
        return r < kNumPicIrqs ? std::optional<unsigned>(r) : std::nullopt;
    }
    // Registers a PCI function (not owned) and creates its INTA# pin.
    Result<IntxPin*> plug(int devfn, std::string id, pci::PciFunction* fn);
    // Takes a function off the bus; its pin is lowered and destroyed.
    void unplug(pci::PciFunction* fn);
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

    // --- The entry point for whatever drives the machine ---
    // Port I/O: config mechanism #1, then I/O BARs; unassigned ports read
    // all-ones. Accesses are split into naturally aligned pieces.
    uint32_t pio_read(uint16_t port, unsigned size);
    void pio_write(uint16_t port, uint32_t val, unsigned size);
    // Guest-physical accesses as address_space_read/write do them: RAM is
    // copied (after the fences), MMIO gets naturally aligned accesses,
    // unassigned memory reads 0.
    void mem_read(uint64_t addr, std::span<uint8_t> out);
    void mem_write(uint64_t addr, std::span<const uint8_t> in);
    void mem_fill(uint64_t addr, uint64_t len, uint8_t byte);
    // Config cycles with bus/device/function split out (what an ECAM window
    // or the 0xcf8/0xcfc pair turn into).
    uint32_t config_read(int bus, int devfn, uint32_t off, unsigned len) { return bus_.config_read(bus, devfn, off, len); }
    void config_write(int bus, int devfn, uint32_t off, uint32_t val, unsigned len) {
        bus_.config_write(bus, devfn, off, val, len);
    }

    // Interrupt lines (IOAPIC inputs): every listener hears every change.
    using IrqListener = std::function<void(int line, bool level)>;
    using ListenerId = uint64_t;
    ListenerId add_irq_listener(IrqListener fn);
    void remove_irq_listener(ListenerId id);
    bool irq_level(int line) const { return irq_.line_level(line); }

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
    MachineTimers timers_{loop_, clock_};
    std::vector<std::pair<pci::PciFunction*, std::unique_ptr<IntxPin>>> pins_;
    std::vector<std::function<void()>> reset_handlers_;
    std::vector<std::function<void()>> fences_;
    std::vector<std::shared_ptr<void>> owned_;
    std::vector<std::pair<ListenerId, IrqListener>> irq_listeners_;
    ListenerId next_listener_ = 1;
    bool reset_pending_ = false;
    uint64_t reset_count_ = 0;
};

// Largest naturally aligned access (1, 2, 4 or 8 bytes, at most `max`)
// starting at `addr` that fits in `len`: how the bus splits wide or
// misaligned accesses before they reach a device.
unsigned natural_piece(uint64_t addr, uint64_t len, unsigned max);

}  // namespace mpq::vmm
