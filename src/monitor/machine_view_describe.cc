// Adapters' helpers, apart from machine_view.cc so that code using only the
// monitor core does not pull in the PCI and block implementations.
#include "monitor/machine_view.h"

#include "pci/pci_device.h"

namespace mpq::monitor {

PciDeviceInfo describe_pci_device(const pci::PciDevice& dev, unsigned slot, std::string qdev_id) {
    const pci::PciIdentity& id = dev.identity();
    const auto& cfg = dev.config_state().bytes;
    PciDeviceInfo info;
    info.slot = slot;
    info.vendor = id.vendor;
    info.device = id.device;
    info.subsys_vendor = id.subsys_vendor;
    info.subsys_id = id.subsys_id;
    info.class_code = id.class_code;
    info.revision = id.revision;
    info.irq_pin = id.irq_pin;
    if (id.irq_pin) info.irq = cfg[pci::kIntLine];
    info.qdev_id = std::move(qdev_id);
    for (int bar = 0; bar < pci::kNumBars; ++bar) {
        const pci::BarDesc& b = id.bars[static_cast<size_t>(bar)];
        if (b.kind == pci::BarKind::None) continue;
        PciRegion r;
        r.bar = bar;
        r.io = b.kind == pci::BarKind::Io;
        r.size = b.size;
        r.address = dev.bar_enabled(bar) ? dev.bar_address(bar) : UINT64_MAX;
        info.regions.push_back(r);
    }
    return info;
}

BlockDeviceInfo describe_block_backend(block::BlockBackend& be, std::string node_name,
                                       std::string qdev) {
    const block::DriveOptions& o = be.options();
    BlockDeviceInfo b;
    b.device = o.id;
    b.node_name = std::move(node_name);
    b.qdev = std::move(qdev);
    b.filename = o.file;
    b.format = be.driver().format_name();
    b.virtual_size = be.length();
    b.read_only = be.read_only();
    b.cache = o.cache;
    b.stats = be.stats();
    b.in_flight = be.in_flight();
    return b;
}

}  // namespace mpq::monitor
