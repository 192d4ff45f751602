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

}  // namespace mpq::monitor
