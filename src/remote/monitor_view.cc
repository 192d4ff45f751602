// Adapter from RemoteProcess to monitor::MachineView.
#include "remote/monitor_view.h"

#include <unistd.h>

#include "remote/worker.h"
#include "util/fdset.h"
#include "util/log.h"
#include "state/device_state.h"

#include <fmt/format.h>

#include "remote/device_server.h"
#include "remote/state_io.h"

namespace mpq::remote {

Status RemoteMachineView::worker_restart(const std::string& binary) {
    worker::Context* w = worker::context();
    if (!w) return fail("this process has no device worker (start it with -x-worker on)");
    if (!binary.empty()) {
        // A name given to getfd (no '/' in it) is the binary's fd; anything
        // else a path. Checked (state format) before this worker stops.
        Status st;
        // The fd is used up by the attempt, whatever its outcome.
        Result<UniqueFd> fd = fail("not a name");
        if (binary.find('/') == std::string::npos) fd = fdset::take_named(binary);
        if (fd.ok()) {
            st = worker::choose_binary({}, fd->get());
        } else {
            st = worker::choose_binary(binary, -1);
        }
        if (!st.ok()) return st;
    }
    // Give the reply a moment to reach the client, then leave at the end
    // of a round, right after its publish (DeviceServer::publish_round).
    proc_.loop().add_timer(5'000'000, [w] { w->leave_after_publish = true; });
    return {};
}

Result<monitor::MachineView::WorkerInfo> RemoteMachineView::query_worker() {
    worker::Context* w = worker::context();
    if (!w) return fail("this process has no device worker (start it with -x-worker on)");
    WorkerInfo i;
    // The supervisor's number for it (with pidns=on ours is the namespace's).
    const int32_t sup_view = w->hdr->worker_pid.load(std::memory_order_relaxed);
    i.pid = sup_view > 0 ? sup_view : ::getpid();
    i.restarts = w->restarts;
    i.has_last_exit = w->last_exit.valid;
    i.last_exit_signal = w->last_exit.signal;
    i.last_exit_status = w->last_exit.status;
    i.state_version = state::kFormatVersion;
    i.published_rounds = w->hdr->publishes.load(std::memory_order_relaxed);
    if (i.published_rounds)
        i.publish_avg_ns = w->hdr->publish_ns_total.load(std::memory_order_relaxed) / i.published_rounds;
    i.spare_pid = w->hdr->spare_pid.load(std::memory_order_relaxed);
    return i;
}

std::vector<monitor::PciDeviceInfo> RemoteMachineView::pci_devices() {
    std::vector<monitor::PciDeviceInfo> out;
    unsigned slot = 0;
    for (const auto& f : proc_.functions())
        out.push_back(monitor::describe_pci_device(*f.dev, slot++, f.id));
    return out;
}

std::vector<monitor::BlockDeviceInfo> RemoteMachineView::block_devices() {
    return monitor::describe_drives(proc_.devices());
}

std::vector<monitor::RemoteDeviceInfo> RemoteMachineView::remote_devices() {
    std::vector<monitor::RemoteDeviceInfo> out;
    size_t conns = proc_.server() ? proc_.server()->connections() : 0;
    for (const auto& f : proc_.functions()) {
        monitor::RemoteDeviceInfo r;
        r.id = f.id;
        r.driver = f.driver;
        for (const auto& b : proc_.bindings()) {
            for (size_t i = 0; i < b.devices.size(); ++i) {
                if (b.devices[i] != f.id) continue;
                r.fd = b.fd;
                r.peer = i == 0 ? "default device of its socket" : "reachable by SELECT_DEVICE";
            }
        }
        r.channel = conns > 0 ? "connected" : "disconnected";
        out.push_back(std::move(r));
    }
    return out;
}

// Hot-plug: thin glue, the work is RemoteProcess's.
namespace {
// A successor rebuilds the devices from the command line: what a monitor
// plugged in or out would not be there (and the published state would not fit).
constexpr const char* kNoHotplugWithWorker =
    "hot-plug is not supported with -x-worker on (a restarted worker rebuilds the devices from the command line)";
}  // namespace

Status RemoteMachineView::drive_add(const block::DriveOptions& opts, DriveOrigin origin) {
    if (worker::context()) return fail("{}", kNoHotplugWithWorker);
    return proc_.add_drive_now(opts, origin == DriveOrigin::Blockdev ? DriveOwner::Monitor : DriveOwner::Legacy);
}

Status RemoteMachineView::drive_del(std::string_view node_name) {
    if (worker::context()) return fail("{}", kNoHotplugWithWorker);
    return proc_.remove_drive(node_name);
}

Status RemoteMachineView::device_add(const std::vector<std::pair<std::string, std::string>>& props) {
    if (worker::context()) return fail("{}", kNoHotplugWithWorker);
    opts::KeyValues kv;
    for (const auto& [k, v] : props) kv.items.push_back(opts::KeyValue{k, v});
    return proc_.add_device_now(kv);
}

Result<std::string> RemoteMachineView::device_del(std::string_view id) {
    if (worker::context()) return fail("{}", kNoHotplugWithWorker);
    return proc_.remove_device(id);
}

Status RemoteMachineView::block_resize(std::string_view device, uint64_t size) {
    block::BlockBackend* be = proc_.find_backend(device);
    if (!be) return fail("Device '{}' not found", device);
    MPQ_TRY(be->resize(size));
    // QEMU's resize callback: the disk raises CAPACITY DATA HAS CHANGED.
    for (const devices::DeviceEntry* d : proc_.disks())
        if (d->drive == device) d->scsi->capacity_changed();
    return {};
}

Status RemoteMachineView::set_write_threshold(std::string_view device, uint64_t threshold,
                                              ThresholdHit hit) {
    block::BlockBackend* be = proc_.find_backend(device);
    if (!be) return fail("Device '{}' not found", device);
    be->set_write_threshold(threshold, std::move(hit));
    return {};
}

Status RemoteMachineView::save_device_state(const std::string& filename) {
    if (!no_files_.empty()) return fail("cannot create '{}': {}", filename, no_files_);
    if (filename.empty()) return fail("x-device-state-save: filename is empty");
    return save_state_file(proc_, filename);
}

Status RemoteMachineView::system_reset() {
    proc_.reset_devices();
    return {};
}

void RemoteMachineView::quit() {
    quit_requested_ = true;
    proc_.quit(0);
}

namespace {

// A device worker keeps its monitor sockets in the supervisor's fd table, so
// that its successor serves the same listeners and clients. Its own table
// (what the supervisor held when this worker started) has the predecessor's.
monitor::SocketKeeper worker_socket_keeper(worker::Context& w) {
    using worker::HandoffKind;
    monitor::SocketKeeper k;
    worker::FdTable* t = w.table;
    k.take_listener = [t](uint32_t index) {
        if (!t) return UniqueFd();
        auto node = t->mon_listeners.extract(index);
        return node.empty() ? UniqueFd() : std::move(node.mapped());
    };
    k.take_clients = [t](uint32_t index) {
        std::vector<monitor::SocketKeeper::Kept> out;
        if (!t) return out;
        for (auto it = t->mon_clients.begin(); it != t->mon_clients.end();) {
            if (it->first.first != index) {
                ++it;
                continue;
            }
            out.push_back({it->first.second, std::move(it->second.fd), it->second.negotiated});
            it = t->mon_clients.erase(it);
        }
        return out;
    };
    auto send = [](HandoffKind kind, uint32_t index, uint32_t key, int fd, bool negotiated) {
        worker::HandoffMsg m = worker::make_handoff(kind, index, key, fd >= 0 ? 1 : 0, negotiated);
        if (!worker::hand_over(m, fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>()))
            log::warn("worker: cannot hand a monitor socket to the supervisor; a restart would drop it");
    };
    k.keep_listener = [send](uint32_t index, int fd) { send(HandoffKind::MonListener, index, 0, fd, false); };
    k.keep_client = [send](uint32_t index, uint32_t key, int fd, bool negotiated) {
        send(HandoffKind::MonClient, index, key, fd, negotiated);
    };
    k.forget_client = [send](uint32_t index, uint32_t key) { send(HandoffKind::MonForget, index, key, -1, false); };
    return k;
}

}  // namespace

Result<std::unique_ptr<monitor::Monitors>> start_monitors(RemoteProcess& proc,
                                                          RemoteMachineView& view) {
    if (proc.monitor_options().empty()) return std::unique_ptr<monitor::Monitors>();
    monitor::MonitorOptions mo;
    for (const auto& o : proc.monitor_options()) {
        auto r = mo.consume(fmt::format("-{}", o.name()), o.text);
        if (!r.ok()) return r.take_error();  // names the option already
        if (!*r) return o.error("not a monitor option");
    }
    // The sandbox (applied after start-up) forbids unlink(): a socket file
    // left behind is replaced by the next run, as a stale one.
    auto mon = std::make_unique<monitor::Monitors>(proc.loop(), view,
                                                   monitor::Monitors::UnlinkAtExit::No);
    if (worker::Context* w = worker::context()) mon->set_keeper(worker_socket_keeper(*w));
    MPQ_TRY(mon->start(mo));
    return mon;
}

}  // namespace mpq::remote
