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

}  // namespace mpq::monitor
