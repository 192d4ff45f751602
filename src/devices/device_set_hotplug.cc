// Hot-plug on a DeviceSet: what device_add / device_del / blockdev-del do,
// for the remote's controllers and the VMM's in-process ones alike.
#include <fmt/format.h>

#include "devices/device_set.h"
#include "util/log.h"

namespace mpq::devices {

Status DeviceSet::hot_remove_drive(std::string_view id) {
    DriveEntry* d = find_drive(id);
    if (!d) return fail("Failed to find node with node-name='{}'", id);
    if (!d->attached_to.empty()) return fail("Node {} is in use", id);
    if (d->owner != DriveOwner::Monitor) return fail("Node {} is not owned by the monitor", id);
    return remove_drive(id);
}

Result<DeviceEntry*> DeviceSet::hot_add(const opts::KeyValues& kv) {
    std::string driver = kv.get("driver");
    if (driver.empty()) return fail("Parameter 'driver' is missing");
    const DeviceType* t = find_device_type(driver);
    // A PCI function is placed (slot, interrupt, BARs) when the machine is
    // built; neither program has a PCI hot-plug controller.
    if (t && t->kind == DeviceKind::PciFunction)
        return fail("Bus 'pci.0' does not support hotplugging (PCI functions come from the command "
                    "line: add the {} there)", t->name);
    auto e = add(kv);
    if (!e.ok()) return e.take_error();
    (*e)->scsi->hotplugged();
    log::info("{} '{}' added on {}.0 scsi-id {} (drive '{}')", (*e)->type->name, (*e)->id, (*e)->parent,
              (*e)->scsi_id, (*e)->drive);
    return *e;
}

Result<std::string> DeviceSet::hot_remove(std::string_view id) {
    const DeviceEntry* e = find(id);
    if (e && e->pci)
        return fail("Bus 'pci.0' does not support hotplugging ('{}' is a PCI function)", id);
    if (!e || !e->scsi) return fail("Device '{}' not found", id);
    std::string drive_id = e->drive, ctrl = e->parent;
    unsigned target = e->scsi_id;
    std::string path = fmt::format("/machine/peripheral/{}", id);
    MPQ_TRY(remove(id));
    log::info("scsi-hd '{}' removed from {}.0 scsi-id {}", id, ctrl, target);
    DriveEntry* drive = find_drive(drive_id);
    if (drive && drive->owner == DriveOwner::Legacy) {
        MPQ_TRY(remove_drive(drive_id));
    } else if (drive && !drive->backend->read_only()) {
        // What the guest wrote through the disk is on the image before
        // device_del answers, even though the node stays open.
        drive->backend->flush([drive_id](Status s) {
            if (!s.ok()) log::error("drive {}: flush after unplug failed: {}", drive_id, s.error().message);
        });
        drive->backend->drain();
    }
    return path;
}

}  // namespace mpq::devices
