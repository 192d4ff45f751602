// What qemu-scsi-dev's monitors see of RemoteProcess.
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
    monitor::RunState run_state() const override { return state_; }
    std::vector<monitor::PciDeviceInfo> pci_devices() override;
    std::vector<monitor::BlockDeviceInfo> block_devices() override;
    std::vector<monitor::RemoteDeviceInfo> remote_devices() override;
    std::vector<monitor::QtreeDevice> qtree() override {
        return monitor::describe_devices(proc_.devices(), [](const pci::PciDevice&) { return std::string(); });
    }
    Status block_resize(std::string_view device, uint64_t size) override;
    Status set_write_threshold(std::string_view device, uint64_t threshold,
                               ThresholdHit hit) override;
    Status drive_add(const block::DriveOptions& opts, DriveOrigin origin) override;
    Status drive_del(std::string_view node_name) override;
    Status device_add(const std::vector<std::pair<std::string, std::string>>& props) override;
    Result<std::string> device_del(std::string_view id) override;
    Status system_reset() override;
    Status save_device_state(const std::string& filename) override;
    Result<WorkerInfo> query_worker() override;
    Status worker_restart(const std::string& binary) override;
    // Whether the sandbox lets this process create files; when not, the
    // reason is what x-device-state-save answers (instead of dying on the
    // forbidden open).
    void set_file_creation_refused(std::string why) { no_files_ = std::move(why); }
    void quit() override;
    bool quit_requested() const { return quit_requested_; }
    // -no-shutdown: the proxy went away and the process stays up, stopped.
    void set_state(monitor::RunState s) { state_ = s; }

private:
    RemoteProcess& proc_;
    bool quit_requested_ = false;
    std::string no_files_;
    monitor::RunState state_ = monitor::RunState::Running;
};

// Parses the process's -chardev/-mon/-monitor/-qmp options and opens the
// monitors; nullptr (and no error) when there are none.
Result<std::unique_ptr<monitor::Monitors>> start_monitors(RemoteProcess& proc,
                                                          RemoteMachineView& view);

}  // namespace mpq::remote
