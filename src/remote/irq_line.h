// INTx of one remote PCI function over the irq/resample eventfd pair that
// SET_IRQFD delivers (spec §5): a 0->1 edge writes the irq eventfd; a
// resample kick while the line is still asserted writes it again; a drop to
// 0 is only recorded (the protocol has no de-assert message).
#pragma once

#include <cstdint>

#include "pci/pci_function.h"
#include "util/unique_fd.h"

namespace mpq {
class EventLoop;
}

namespace mpq::remote {

class EventfdIrqLine final : public pci::IrqLine {
public:
    explicit EventfdIrqLine(EventLoop& loop) : loop_(loop) {}
    ~EventfdIrqLine() override;
    EventfdIrqLine(const EventfdIrqLine&) = delete;
    EventfdIrqLine& operator=(const EventfdIrqLine&) = delete;

    void set_level(bool asserted) override;

    // Replaces (and closes) the previous pair. Both must be eventfds (the
    // caller checks). If the line is asserted right now the new irq eventfd
    // is signalled at once, so a level raised before SET_IRQFD is not lost.
    void set_fds(UniqueFd irq, UniqueFd resample);

    bool asserted() const { return level_; }
    bool connected() const { return irq_.valid(); }
    uint64_t signals() const { return signals_; }  // irq eventfd writes (tests, monitors)
    // Writes the irq eventfd (a consumer that thinks the line is down takes
    // it up again).
    void signal();

private:
    void on_resample();

    EventLoop& loop_;
    UniqueFd irq_;
    UniqueFd resample_;
    bool level_ = false;
    uint64_t signals_ = 0;
};

}  // namespace mpq::remote
