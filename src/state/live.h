// Taking a device state from live devices and applying one to them: the
// part of saving and restoring that does not depend on how a process built
// its devices (remote/state_io.cc gathers them from qemu-scsi-dev's command
// line; tests and the fuzzer build them directly).
#pragma once

#include <string>
#include <vector>

#include "block/block.h"
#include "hw/lsi53c895a.h"
#include "scsi/scsi.h"
#include "state/device_state.h"

namespace mpq::state {

struct LiveDrive {
    std::string id;
    block::BlockBackend* backend = nullptr;
};
struct LiveDisk {
    std::string id, controller, drive;
    unsigned scsi_id = 0;
    scsi::Device* dev = nullptr;
};
struct LiveFunction {
    std::string id, driver;
    hw::Lsi53c895a* dev = nullptr;
};
struct LiveDevices {
    std::vector<LiveDrive> drives;
    std::vector<LiveDisk> disks;
    std::vector<LiveFunction> functions;
};

// Quiesces (drains every drive until no block I/O is in flight, so every
// request waits for its controller) and takes the state. Must be called
// between event-loop callbacks; the devices carry on unchanged.
Result<DeviceStateImage> capture(LiveDevices& live, std::string producer);

// Applies a decoded image to freshly built devices, after checking it
// against them: the same drives (format, size, read-only), disks at the
// same addresses, the same PCI identity and BAR layout. Everything that can
// be checked up front is; a controller or disk that still refuses its part
// leaves the process unusable, so callers treat any error as fatal.
Status apply(const DeviceStateImage& img, LiveDevices& live);

}  // namespace mpq::state
