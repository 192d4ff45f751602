// monitor hook (h-mon): what qemu-scsi-dev's monitors see of RemoteProcess.
// The monitor code itself only knows monitor::MachineView.
#pragma once

#include <memory>

#include "monitor/monitor.h"
#include "remote/remote_process.h"

namespace mpq::remote {

class RemoteMachineView final : public monitor::MachineView {
public:
    explicit RemoteMachineView(RemoteProcess& proc) : proc_(proc) {}

    monitor::Role role() const override { return monitor::Role::Remote; }
    std::string name() const override { return proc_.name(); }
    monitor::RunState run_state() const override { return monitor::RunState::Running; }
    std::vector<monitor::PciDeviceInfo> pci_devices() override;
    std::vector<monitor::BlockDeviceInfo> block_devices() override;
    std::vector<monitor::RemoteDeviceInfo> remote_devices() override;
    Status system_reset() override;
    void quit() override;
    bool quit_requested() const { return quit_requested_; }

private:
    RemoteProcess& proc_;
    bool quit_requested_ = false;
};

// Parses the process's -chardev/-mon/-monitor/-qmp options and opens the
// monitors; nullptr (and no error) when there are none.
Result<std::unique_ptr<monitor::Monitors>> start_monitors(RemoteProcess& proc,
                                                          RemoteMachineView& view);

}  // namespace mpq::remote
