// The device process: what its command line built (drives, controllers,
// disks), the guest memory its devices share, and the sockets it serves.
// Monitors attach to this object: devices by id, drives and their
// backends, the monitor/chardev options, the event loop, reset and quit.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "block/block.h"
#include "devices/device_set.h"
#include "mem/guest_memory.h"
#include "remote/irq_line.h"
#include "scsi/scsi.h"
#include "util/event_loop.h"
#include "util/options.h"
#include "util/result.h"

namespace mpq::remote {

class DeviceServer;

// One PCI function the process serves (built by the device registry).
struct PciFunctionEntry {
    std::string id;
    std::string driver;              // the registered type's name
    pci::PciDevice* dev = nullptr;   // owned by the device set
    scsi::Bus* bus = nullptr;        // its SCSI bus, if the type has one
    std::unique_ptr<EventfdIrqLine> irq;
};

using devices::DriveEntry;
using devices::DriveOwner;

// A socket to serve and the devices it carries; the first is the default
// (the one a plain 7.2 proxy talks to).
struct SocketBinding {
    int fd = -1;
    std::vector<std::string> devices;
};

enum class ExitReason : uint8_t { PeerClosed, ProtocolError, Quit };

class RemoteProcess final : private devices::DevicePlugs {
public:
    explicit RemoteProcess(EventLoop& loop);
    ~RemoteProcess();
    RemoteProcess(const RemoteProcess&) = delete;
    RemoteProcess& operator=(const RemoteProcess&) = delete;

    // Builds everything the command line asks for, or explains (QEMU's
    // wording, option named) why not; nothing is served before start().
    // `first_arg_fd` >= 0: the socket of the `qemu-scsi-dev FD ...` form.
    Status configure(const opts::CommandLine& cl, int first_arg_fd);
    // Starts serving the sockets.
    Status start();

    EventLoop& loop() { return loop_; }
    GuestMemory& memory() { return memory_; }
    const std::string& name() const { return name_; }

    // --- for monitors ---
    const std::vector<PciFunctionEntry>& functions() const { return functions_; }
    PciFunctionEntry* find_function(std::string_view id);
    devices::DeviceSet& devices() { return devices_; }
    std::vector<devices::DriveEntry>& drives() { return devices_.drives(); }
    devices::DriveEntry* find_drive(std::string_view id) { return devices_.find_drive(id); }
    block::BlockBackend* find_backend(std::string_view drive_id) { return devices_.find_backend(drive_id); }
    // The SCSI devices, in creation order.
    std::vector<const devices::DeviceEntry*> disks() const;
    // -chardev, -mon, -monitor, -qmp in command-line order, untouched: the
    // monitor code owns their meaning.
    const std::vector<opts::Option>& monitor_options() const { return monitor_options_; }
    const std::vector<SocketBinding>& bindings() const { return bindings_; }
    DeviceServer* server() { return server_.get(); }

    // --- changes while running (hot-plug) ---
    // A drive (blockdev-add node name or drive_add id); QEMU's messages.
    Status add_drive_now(const block::DriveOptions& opts, DriveOwner owner);
    // blockdev-del: only monitor-owned nodes no disk uses; flushed, then closed.
    Status remove_drive(std::string_view id);
    // device_add with -device's keys ("driver=scsi-hd,id=..,drive=..,bus=lsi0.0,scsi-id=N").
    // The disk comes up with a unit attention pending, as a new QEMU disk.
    Status add_device_now(const opts::KeyValues& kv);
    // device_del of a scsi-hd: off the bus (new commands see a selection
    // timeout), its block I/O drained, requests still open failed with
    // CHECK CONDITION, the disk flushed and gone; a legacy drive goes with it.
    // Returns the QOM path for DEVICE_DELETED.
    Result<std::string> remove_device(std::string_view id);

    // system_reset: every function's device reset (PCI config kept, as on DEVICE_RESET).
    void reset_devices();
    // Ends the event loop with `code` (monitor quit, last socket gone).
    void quit(int code);
    // For the monitors' -no-shutdown: called instead of quit(code)
    // when the last connection is gone.
    void on_last_connection_gone(std::function<void(int code)> fn) { last_gone_ = std::move(fn); }
    // After the loop ended: stop serving, flush every writable drive and
    // wait for all I/O (QEMU flushes its block devices on exit too).
    void shutdown();

private:
    // devices::DevicePlugs
    Status plug(devices::DeviceEntry& e) override;
    Status may_unplug(const devices::DeviceEntry& e) override;
    void unplug(devices::DeviceEntry& e) override;
    Status add_object(const opts::Option& o);
    Status bind_socket(int fd, const std::string& device, const opts::Option* o);

    EventLoop& loop_;
    GuestMemory memory_;
    std::string name_;
    WorkQueue& timers_;  // device timers: the event loop (guest time is host time)
    std::vector<PciFunctionEntry> functions_;
    // After functions_: destroyed first, while their interrupt lines exist.
    devices::DeviceSet devices_;
    std::vector<opts::Option> monitor_options_;
    std::vector<SocketBinding> bindings_;
    std::unique_ptr<DeviceServer> server_;
    std::function<void(int)> last_gone_;
};

}  // namespace mpq::remote
