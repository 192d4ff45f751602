// Monitors of mpqemu-system-x86_64: the VMM's main.cc calls this
// once the machine is built. The adapter from vmm::Vmm to MachineView lives
// in vmm_monitor.cc; the monitor core knows nothing of the VMM.
#pragma once

#include "util/result.h"

namespace mpq::vmm {
class Vmm;
}

namespace mpq::monitor {

// Opens every -qmp/-monitor/-mon/-chardev monitor of the command line and
// ties them to the VMM's events (remote disconnect, guest reset). The
// monitors live as long as the machine. No monitor options: does nothing.
Status start_vmm_monitors(vmm::Vmm& vmm);

}  // namespace mpq::monitor
