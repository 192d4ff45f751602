#include "vmm/qtest_machine.h"

namespace mpq::vmm {

QtestMachine::~QtestMachine() {
    if (listener_) m_.remove_irq_listener(listener_);
}

Status QtestMachine::irq_intercept(std::string_view path, IrqDirection dir) {
    (void)dir;
    // Stock QEMU resolves a partial QOM path; the IOAPIC is the only
    // interrupt controller modelled here, under the names tests use.
    if (path != "ioapic" && path != "/machine/ioapic" && path != "/machine/i440fx/ioapic" &&
        path != "/machine/unattached/ioapic")
        return fail("Unknown device");
    if (!listener_) {
        listener_ = m_.add_irq_listener([this](int line, bool level) {
            if (on_irq_) on_irq_(line, level);
        });
    }
    return {};
}

}  // namespace mpq::vmm
