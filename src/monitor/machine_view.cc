#include "monitor/machine_view.h"

namespace mpq::monitor {

std::string_view run_state_name(RunState s) {
    switch (s) {
    case RunState::Prelaunch: return "prelaunch";
    case RunState::Running: return "running";
    case RunState::Paused: return "paused";
    case RunState::Shutdown: return "shutdown";
    case RunState::InternalError: return "internal-error";
    }
    return "running";
}

Status MachineView::block_resize(std::string_view, uint64_t) {
    return fail("Image format driver does not support resize");
}

Status MachineView::set_write_threshold(std::string_view device, uint64_t, ThresholdHit) {
    return fail("Device '{}' not found", device);
}

Status MachineView::drive_add(const block::DriveOptions&, DriveOrigin) {
    return fail("this process cannot add drives at run time (hot-plug disks through the device "
                "process's monitor)");
}

Status MachineView::drive_del(std::string_view node_name) {
    return fail("Failed to find node with node-name='{}'", node_name);
}

Status MachineView::device_add(const std::vector<std::pair<std::string, std::string>>&) {
    return fail("this process cannot add devices at run time (hot-plug disks through the device "
                "process's monitor)");
}

Result<std::string> MachineView::device_del(std::string_view id) {
    return fail("Device '{}' not found", id);
}

}  // namespace mpq::monitor
