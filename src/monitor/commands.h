// The QMP commands both processes offer, implemented once against
// MachineView. HMP is built on top of these (hmp.h formats their results).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "monitor/machine_view.h"
#include "monitor/qmp.h"
#include "util/unique_fd.h"

namespace mpq::monitor {

class Hmp;

// Event names and reasons as QEMU's QAPI defines them, plus ours.
inline constexpr std::string_view kEventShutdown = "SHUTDOWN";
inline constexpr std::string_view kEventReset = "RESET";
inline constexpr std::string_view kEventBlockIoError = "BLOCK_IO_ERROR";
inline constexpr std::string_view kEventBlockWriteThreshold = "BLOCK_WRITE_THRESHOLD";
// mpqemu's own (not in QEMU): a remote device process's channel went away.
// data: {"id": <device id>, "reason": <text>}. The X_ prefix marks it as an
// extension, as QAPI's x- prefix does for commands.
inline constexpr std::string_view kEventRemoteDisconnected = "X_REMOTE_DISCONNECTED";

struct CommandEnv {
    MachineView& view;
    EventSink& events;
    // The monitors' own chardevs (query-chardev lists them first).
    std::function<std::vector<ChardevInfo>()> monitor_chardevs;
    // Runs a callback after the current command's reply went out (quit).
    std::function<void(std::function<void()>)> defer;
    // Runs one HMP command line for human-monitor-command; set by the owner.
    std::function<std::string(const std::string&)> run_hmp;
    // The next file descriptor the current client passed (SCM_RIGHTS), for
    // add-fd / getfd; an invalid fd when there is none. Set by the owner.
    std::function<UniqueFd()> take_fd = nullptr;
    // Expires with the env: callbacks a command leaves behind (a write
    // threshold's) check it before touching `events`.
    std::shared_ptr<bool> alive = std::make_shared<bool>(true);
};

// Registers every command into `d`. `env` must outlive `d`.
void register_commands(QmpDispatcher& d, CommandEnv& env);
// The hot-plug part of it (hotplug_commands.cc): blockdev-add/-del,
// device_add/_del, add-fd/remove-fd/query-fdsets, getfd/closefd, x-drive-add.
void register_hotplug_commands(QmpDispatcher& d, CommandEnv& env);
inline constexpr std::string_view kEventDeviceDeleted = "DEVICE_DELETED";

// Result builders shared with tests and HMP.
Json pci_info_json(const std::vector<PciDeviceInfo>& devs);
Json block_info_json(const BlockDeviceInfo& b);
Json block_stats_json(const BlockDeviceInfo& b, uint64_t now_ns);
std::string pci_class_desc(uint32_t class_code);  // "" when unknown

}  // namespace mpq::monitor
