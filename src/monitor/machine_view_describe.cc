// Adapters' helpers, apart from machine_view.cc so that code using only the
// monitor core does not pull in the PCI and block implementations.
#include "monitor/machine_view.h"

#include <fmt/format.h>

#include "devices/device_set.h"
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

PciDeviceInfo describe_pci_config(const std::function<uint32_t(uint32_t, unsigned)>& read,
                                  unsigned slot, unsigned function, std::string qdev_id) {
    PciDeviceInfo info;
    info.slot = slot;
    info.function = function;
    info.vendor = static_cast<uint16_t>(read(pci::kVendorId, 2));
    info.device = static_cast<uint16_t>(read(pci::kDeviceId, 2));
    info.revision = static_cast<uint8_t>(read(pci::kRevision, 1));
    info.class_code = read(pci::kClassProg, 1) | read(pci::kClassProg + 1, 1) << 8 |
                      read(pci::kClassProg + 2, 1) << 16;
    info.subsys_vendor = static_cast<uint16_t>(read(pci::kSubsysVendor, 2));
    info.subsys_id = static_cast<uint16_t>(read(pci::kSubsysId, 2));
    uint32_t pin = read(pci::kIntPin, 1);
    // All-ones config (a function that went away) has no sane pin.
    info.irq_pin = pin <= 4 ? static_cast<uint8_t>(pin) : 0;
    if (info.irq_pin) info.irq = read(pci::kIntLine, 1);
    info.qdev_id = std::move(qdev_id);
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
    b.write_threshold = be.write_threshold();
    return b;
}

std::vector<BlockDeviceInfo> describe_drives(devices::DeviceSet& set) {
    std::vector<BlockDeviceInfo> out;
    for (auto& d : set.drives()) {
        if (!d.backend) continue;
        if (d.owner == devices::DriveOwner::Monitor) {
            BlockDeviceInfo info = describe_block_backend(*d.backend, d.opts.id, d.attached_to);
            info.device.clear();
            out.push_back(std::move(info));
            continue;
        }
        out.push_back(describe_block_backend(*d.backend, fmt::format("#block{:03}", 100 + d.serial),
                                             d.attached_to));
    }
    return out;
}

std::vector<QtreeDevice> describe_devices(const devices::DeviceSet& set,
                                          const std::function<std::string(const pci::PciDevice&)>& pci_addr) {
    std::vector<QtreeDevice> out;
    for (const auto& e : set.entries()) {
        if (!e->pci) continue;
        QtreeDevice d;
        d.driver = std::string(e->type->name);
        d.id = e->named ? e->id : std::string();
        d.bus = "pci.0";
        if (std::string a = pci_addr(*e->pci); !a.empty()) d.props.emplace_back("addr", a);
        if (e->scsi_bus) d.child_bus = e->id + ".0";
        out.push_back(std::move(d));
        if (!e->scsi_bus) continue;
        for (const auto& k : set.entries()) {
            if (!k->scsi || k->parent != e->id) continue;
            QtreeDevice s;
            s.driver = std::string(k->type->name);
            s.id = k->named ? k->id : std::string();
            s.bus = e->id + ".0";
            s.props = {{"drive", k->drive}, {"channel", "0"}, {"scsi-id", std::to_string(k->scsi_id)},
                       {"lun", std::to_string(k->lun)}};
            out.push_back(std::move(s));
        }
    }
    return out;
}

}  // namespace mpq::monitor
