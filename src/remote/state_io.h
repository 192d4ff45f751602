// Saved device state of a qemu-scsi-dev process (state/device_state.h):
// taken with the devices quiesced, written to a file, and applied to a new
// process started with the same command line (-incoming-state FILE).
#pragma once

#include <string>

#include "remote/remote_process.h"
#include "state/device_state.h"
#include "util/result.h"

namespace mpq::remote {

// Quiesces the process (every drive drained: no block I/O in flight, so
// every request is waiting for its controller) and takes its state. Called
// between event-loop rounds; the devices carry on unchanged afterwards.
Result<state::DeviceStateImage> capture_state(RemoteProcess& proc);

// Applies a decoded image to a freshly configured process, after checking
// it against what the command line built: the same devices, disks at the
// same addresses on the same drives, media of the same size, the same PCI
// identity. A mismatch is refused with what differs.
Status apply_state(RemoteProcess& proc, const state::DeviceStateImage& img);

// capture_state() + encode, written to `path` (created or truncated).
Status save_state_file(RemoteProcess& proc, const std::string& path);
// Reads, decodes and applies `path`.
Status load_state_file(RemoteProcess& proc, const std::string& path);

}  // namespace mpq::remote
