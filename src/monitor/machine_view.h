// What a monitor may see of, and do to, the process it lives in. The remote
// (qemu-scsi-dev) and our VMM each implement this with a small adapter, so
// the monitor never depends on either one's internals.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "block/block.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::pci {
class PciDevice;
}
namespace mpq::devices {
class DeviceSet;
}

namespace mpq::monitor {

// QEMU's RunState names (query-status "status").
enum class RunState : uint8_t { Prelaunch, Running, Paused, Shutdown, InternalError };
std::string_view run_state_name(RunState s);

// Which process the monitor serves: decides the greeting's defaults and
// which process-specific commands exist.
enum class Role : uint8_t { Remote, Vmm };

struct PciRegion {
    int bar = 0;                   // 0..5, 6 = expansion ROM
    bool io = false;               // I/O space (else memory)
    bool mem64 = false;
    bool prefetch = false;
    uint64_t address = UINT64_MAX; // UINT64_MAX = not programmed / not decoding (QEMU shows -1)
    uint64_t size = 0;
};

struct PciDeviceInfo {
    unsigned bus = 0, slot = 0, function = 0;
    uint16_t vendor = 0, device = 0;
    uint16_t subsys_vendor = 0, subsys_id = 0;
    uint32_t class_code = 0;       // class << 16 | subclass << 8 | prog-if
    uint8_t revision = 0;
    uint8_t irq_pin = 0;           // 0 = none, 1 = INTA# ...
    std::optional<unsigned> irq;   // routed IRQ number when the device has a pin
    std::string qdev_id;
    std::vector<PciRegion> regions;
};

struct BlockDeviceInfo {
    std::string device;            // -drive id (the BlockBackend name)
    std::string node_name;         // e.g. "#block123"
    std::string qdev;              // the frontend that owns it (scsi-hd id or path)
    std::string filename;
    std::string format;            // "raw", "qcow2"
    uint64_t virtual_size = 0;
    // Bytes allocated on the host, when the adapter knows them (QEMU's
    // optional "actual-size"); the monitor never looks paths up itself, so
    // it keeps working under the remote's sandbox.
    std::optional<uint64_t> actual_size;
    bool read_only = false;
    block::CacheMode cache = block::CacheMode::Writeback;
    block::BlockStats stats;       // counted by the BlockBackend
    unsigned in_flight = 0;
    uint64_t write_threshold = 0;  // block-set-write-threshold; 0 = none
};

struct ChardevInfo {
    std::string label;
    std::string filename;          // QEMU-style description, e.g. "unix:/p,server=on"
    bool frontend_open = true;
};

// One device served by the remote (or, in the VMM, one proxy and its channel).
struct RemoteDeviceInfo {
    std::string id;
    std::string driver;            // e.g. "lsi53c895a"
    std::string channel;           // "connected", "disconnected", "listening", ...
    int fd = -1;                   // the channel's socket, -1 if none
    std::string peer;              // free text: socket path, peer pid, ...
    std::vector<std::string> features;  // negotiated protocol extensions
};

// One device as `info qtree` shows it: on which bus, what it is, the
// properties that place it, and the bus it provides (a controller's SCSI bus).
struct QtreeDevice {
    std::string driver;            // "lsi53c895a", "scsi-hd", "pci-proxy-dev"
    std::string id;                // "" for an unnamed one
    std::string bus;               // "pci.0", or a controller's "lsi0.0"
    std::vector<std::pair<std::string, std::string>> props;  // shown in order, e.g. {"scsi-id", "1"}
    std::string child_bus;         // "" = provides none
};

class MachineView {
public:
    virtual ~MachineView() = default;

    virtual Role role() const = 0;
    // -name; empty when none was given (query-name then returns {}).
    virtual std::string name() const { return {}; }
    virtual RunState run_state() const = 0;
    virtual std::vector<PciDeviceInfo> pci_devices() = 0;
    virtual std::vector<BlockDeviceInfo> block_devices() = 0;
    // Character devices other than the monitors' own (which the monitor lists itself).
    virtual std::vector<ChardevInfo> chardevs() { return {}; }
    virtual std::vector<RemoteDeviceInfo> remote_devices() { return {}; }
    // The devices this process built (command line and hot-plug), for info qtree.
    virtual std::vector<QtreeDevice> qtree() { return {}; }

    // block_resize of drive `device` (a BlockDeviceInfo::device the command
    // already looked up): changes the image, then tells the disk using it.
    virtual Status block_resize(std::string_view device, uint64_t size);
    // block-set-write-threshold on drive `device`; `hit` runs once, on the
    // loop thread, when a write first reaches past it (0 = off).
    using ThresholdHit = std::function<void(uint64_t end, uint64_t threshold)>;
    virtual Status set_write_threshold(std::string_view device, uint64_t threshold,
                                       ThresholdHit hit);

    // x-device-state-save: writes the devices' saved state (state/device_state.h)
    // to `filename`, with the devices quiesced for the moment it takes.
    virtual Status save_device_state(const std::string& filename) {
        (void)filename;
        return Error{"this process has no device state to save", 0};
    }

    // x-query-worker (qemu-scsi-dev -x-worker on): the device worker under
    // its supervisor. Processes without one refuse.
    struct WorkerInfo {
        int64_t pid = 0;
        uint64_t restarts = 0;
        bool has_last_exit = false;
        int last_exit_signal = 0;  // 0: exited with last_exit_status
        int last_exit_status = 0;
        uint32_t state_version = 0;
        uint64_t published_rounds = 0;
        uint64_t publish_avg_ns = 0;
        int64_t spare_pid = 0;  // a spare worker waiting to take over, 0: none
    };
    virtual Result<WorkerInfo> query_worker() { return Error{"this process has no device worker (-x-worker on)", 0}; }

    // x-worker-restart: replaces the device worker by a new one carrying the
    // state (live update); `binary` empty: the same binary.
    virtual Status worker_restart(const std::string& binary) {
        (void)binary;
        return Error{"this process has no device worker (-x-worker on)", 0};
    }

    // x-proxy-reconnect: the proxy device `id` continues on `sock`, a socket
    // to a remote that now serves its device (started with -incoming-state).
    virtual Status proxy_reconnect(const std::string& id, UniqueFd sock) {
        (void)id;
        (void)sock;
        return Error{"this process has no proxy devices", 0};
    }

    // --- hot-plug (disks on the process's own controllers: the remote's, the
    //     VMM's in-process ones; both through devices::DeviceSet) ---
    // blockdev-add (DriveOrigin::Blockdev: stays until drive_del) or HMP
    // drive_add (DriveOrigin::DriveAdd: goes with the disk using it).
    enum class DriveOrigin : uint8_t { Blockdev, DriveAdd };
    virtual Status drive_add(const block::DriveOptions& opts, DriveOrigin origin);
    // blockdev-del of a node nothing uses.
    virtual Status drive_del(std::string_view node_name);
    // device_add with -device's keys (driver=scsi-hd,...).
    virtual Status device_add(const std::vector<std::pair<std::string, std::string>>& props);
    // device_del: the device is gone when this returns; the QOM path for DEVICE_DELETED.
    virtual Result<std::string> device_del(std::string_view id);

    // Resets every device as QEMU's system_reset does. Errors are reported
    // to the client; the monitor emits the RESET event on success.
    virtual Status system_reset() = 0;
    // Ends the process soon (e.g. loop.stop()); called after the reply was
    // queued. The monitor emits SHUTDOWN first.
    virtual void quit() = 0;
};

// Helpers for adapters: describe what the process already owns.
PciDeviceInfo describe_pci_device(const pci::PciDevice& dev, unsigned slot, std::string qdev_id);
// Identity, subsystem and interrupt from config reads (`read(off, len)`),
// for functions that are not a local PciDevice (a proxy, chipset functions).
// Regions are left to the caller, who knows the BAR layout without sizing.
PciDeviceInfo describe_pci_config(const std::function<uint32_t(uint32_t, unsigned)>& read,
                                  unsigned slot, unsigned function, std::string qdev_id);
BlockDeviceInfo describe_block_backend(block::BlockBackend& be, std::string node_name,
                                       std::string qdev);
// Every open drive of a device set, as query-block lists it in both programs:
// a -drive / drive_add drive by its id, with a "#blockNNN" node name that
// stays put while others come and go; a blockdev-add node by its node-name,
// without a BlockBackend name of its own.
std::vector<BlockDeviceInfo> describe_drives(devices::DeviceSet& set);
// Every device of a device set, PCI functions first (each followed by the
// disks on its bus). `pci_addr` gives a function's "SLOT.FN" where the
// process places it ("" = not shown: the remote has no PCI bus of its own).
std::vector<QtreeDevice> describe_devices(const devices::DeviceSet& set,
                                          const std::function<std::string(const pci::PciDevice&)>& pci_addr);

}  // namespace mpq::monitor
