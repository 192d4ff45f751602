// qtest as one driver of the machine: forwards the protocol's accesses to
// the machine's entry point, resolves irq_intercept paths to its interrupt
// lines and moves its virtual clock. The machine knows nothing of qtest.
#pragma once

#include <functional>

#include "vmm/machine.h"
#include "vmm/qtest.h"

namespace mpq::vmm {

class QtestMachine final : public QtestTarget {
public:
    // `on_irq` hears intercepted line changes (the qtest server's irq_event).
    QtestMachine(Machine& m, std::function<void(int, bool)> on_irq) : m_(m), on_irq_(std::move(on_irq)) {}
    ~QtestMachine() override;
    QtestMachine(const QtestMachine&) = delete;
    QtestMachine& operator=(const QtestMachine&) = delete;

    uint32_t pio_read(uint16_t port, unsigned size) override { return m_.pio_read(port, size); }
    void pio_write(uint16_t port, uint32_t val, unsigned size) override { m_.pio_write(port, val, size); }
    void mem_read(uint64_t addr, std::span<uint8_t> out) override { m_.mem_read(addr, out); }
    void mem_write(uint64_t addr, std::span<const uint8_t> in) override { m_.mem_write(addr, in); }
    void mem_fill(uint64_t addr, uint64_t len, uint8_t byte) override { m_.mem_fill(addr, len, byte); }
    Status irq_intercept(std::string_view path, IrqDirection dir) override;
    int64_t clock_step(std::optional<int64_t> ns) override { return m_.clock().step(ns); }
    int64_t clock_set(int64_t ns) override { return m_.clock().set(ns); }

private:
    Machine& m_;
    std::function<void(int, bool)> on_irq_;
    Machine::ListenerId listener_ = 0;
};

}  // namespace mpq::vmm
