// The devices and drives one process built from its command line (and later
// from a monitor's device_add): created only through the registry, kept
// here with what monitors need to describe them. The process supplies the
// part that differs between our two programs through DevicePlugs: the VMM
// puts a PCI function on its bus and wires INTx to the IRQ router, the
// remote serves it on a socket with an eventfd interrupt line.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "block/block.h"
#include "devices/registry.h"
#include "util/options.h"
#include "util/result.h"

namespace mpq::devices {

struct DeviceEntry {
    std::string id;       // as given; "<type>.<n>" for an unnamed PCI function
    bool named = false;   // an id was given
    const DeviceType* type = nullptr;
    DeviceConfig config;
    std::unique_ptr<pci::PciDevice> pci;  // PciFunction
    scsi::Bus* scsi_bus = nullptr;        // its bus, when the type exposes one
    std::unique_ptr<scsi::Device> scsi;   // ScsiDevice
    std::string parent;                   // ScsiDevice: the controller's id
    scsi::Bus* parent_bus = nullptr;
    std::string drive;                    // ScsiDevice: the drive's id
    unsigned scsi_id = 0;
    unsigned lun = 0;
};

// Who made a drive, which decides its end as in QEMU: a -drive or HMP
// drive_add drive goes away with the disk using it; a QMP blockdev-add node
// stays until blockdev-del.
enum class DriveOwner : uint8_t { Legacy, Monitor };

struct DriveEntry {
    block::DriveOptions opts;
    DriveOwner owner = DriveOwner::Legacy;
    unsigned serial = 0;  // 1, 2, ... in creation order: the anonymous node name stays put
    std::unique_ptr<block::BlockBackend> backend;
    std::string attached_to;  // id of the device using it ("" = unused)
};

class DevicePlugs {
public:
    virtual ~DevicePlugs() = default;
    // A PCI function was built: place it (slot, interrupt line). An error
    // undoes the build.
    virtual Status plug(DeviceEntry& e) = 0;
    // Whether device_del may take it away now (a remote refuses while a
    // connection serves it).
    virtual Status may_unplug(const DeviceEntry& e) {
        (void)e;
        return {};
    }
    // It is about to be destroyed: drop every reference to it.
    virtual void unplug(DeviceEntry& e) = 0;
};

class DeviceSet {
public:
    DeviceSet(EventLoop& loop, DmaSpace* dma, WorkQueue& timers, DevicePlugs& plugs);
    ~DeviceSet();
    DeviceSet(const DeviceSet&) = delete;
    DeviceSet& operator=(const DeviceSet&) = delete;

    // -drive: opens the image now.
    Status add_drive(const opts::KeyValues& kv);
    // blockdev-add / drive_add: options already parsed; QEMU's messages.
    Status add_drive(const block::DriveOptions& opts, DriveOwner owner);
    // Closes a drive no device uses: flushed, drained, gone.
    Status remove_drive(std::string_view id);
    // -device / device_add. Errors use QEMU's wording, without the option.
    Result<DeviceEntry*> add(const opts::KeyValues& kv);
    Result<DeviceEntry*> add(DeviceConfig cfg);
    // device_del. A SCSI device: off the bus (new commands see a selection
    // timeout), its block I/O drained, requests still open failed with
    // CHECK CONDITION, gone; its drive stays (the caller decides). A PCI
    // function (with what sits on its bus) leaves through unplug().
    Status remove(std::string_view id);

    // --- changes while the machine runs (device_set_hotplug.cc) ---
    // Both programs' monitors do their hot-plug through these, so the rules
    // and QEMU's messages are the same wherever the controller lives.
    // blockdev-del: only a monitor-owned node (blockdev-add) no disk uses;
    // flushed, then closed.
    Status hot_remove_drive(std::string_view id);
    // device_add with -device's keys: a SCSI device on an existing
    // controller's bus, coming up with the unit attention a new QEMU disk
    // reports. PCI functions are refused (pci.0 has no hot-plug here).
    Result<DeviceEntry*> hot_add(const opts::KeyValues& kv);
    // device_del of a SCSI device (see remove()), flushed; a -drive or
    // drive_add drive goes with it, a blockdev-add node stays. Returns the
    // QOM path for DEVICE_DELETED.
    Result<std::string> hot_remove(std::string_view id);

    // Destroys every device, then every drive (what the destructor does).
    void clear();

    DeviceEntry* find(std::string_view id);
    const std::vector<std::unique_ptr<DeviceEntry>>& entries() const { return entries_; }
    std::vector<DriveEntry>& drives() { return drives_; }
    DriveEntry* find_drive(std::string_view id);
    block::BlockBackend* find_backend(std::string_view drive_id);
    // Waits for every drive's I/O (before disks or the set go away).
    void drain_drives();

private:
    Status place_scsi(DeviceEntry& e, BuildContext& ctx);
    enum class Teardown : uint8_t { Unplug, Exit };
    void destroy(size_t index, Teardown how);

    EventLoop& loop_;
    DmaSpace* dma_;
    WorkQueue& timers_;
    DevicePlugs& plugs_;
    std::vector<std::unique_ptr<DeviceEntry>> entries_;
    std::vector<DriveEntry> drives_;
    unsigned drive_serial_ = 0;
};

}  // namespace mpq::devices
