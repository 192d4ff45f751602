#include "vmm/irq_router.h"

namespace mpq::vmm {

IrqRouter::IrqRouter() { reset_routes(); }

void IrqRouter::reset_routes() {
    route_.fill(0x80);
    recompute();
}

void IrqRouter::set_pirq_input(int pirq, bool asserted) {
    if (pirq < 0 || pirq >= kNumPirqs) return;
    if (asserted) {
        ++asserted_[pirq];
    } else if (asserted_[pirq] > 0) {
        --asserted_[pirq];
    }
    recompute();
}

void IrqRouter::set_route(int pirq, uint8_t value) {
    if (pirq < 0 || pirq >= kNumPirqs) return;
    route_[pirq] = value;
    recompute();
}

void IrqRouter::recompute() {
    // Lines are wire-ORed: several PIRQs may share one IRQ.
    std::array<bool, kNumIrqLines> next{};
    for (int p = 0; p < kNumPirqs; ++p) {
        if (asserted_[p] > 0 && route_[p] < kNumPicIrqs) next[route_[p]] = true;
    }
    for (int l = 0; l < kNumIrqLines; ++l) {
        if (next[l] == level_[l]) continue;
        level_[l] = next[l];
        if (observer_) observer_(l, next[l]);
    }
}

}  // namespace mpq::vmm
