#include "remote/remote_process.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cassert>
#include <climits>

#include "remote/device_server.h"
#include "scsi/scsi_hd.h"
#include "util/log.h"

namespace mpq::remote {
namespace {

using opts::Option;

constexpr std::string_view kRemoteObjectKeys[] = {"qom-type", "id", "devid", "fd"};
constexpr std::string_view kMachineKeys[] = {"type", "vfio-user", "auto-shutdown"};

}  // namespace

RemoteProcess::RemoteProcess(EventLoop& loop)
    : loop_(loop), timers_(loop), devices_(loop, &memory_, timers_, *this) {}

RemoteProcess::~RemoteProcess() {
    // Connections first (they point at devices), then the devices and drives.
    server_.reset();
    devices_.clear();
}

PciFunctionEntry* RemoteProcess::find_function(std::string_view id) {
    for (auto& f : functions_)
        if (f.id == id) return &f;
    return nullptr;
}

std::vector<const devices::DeviceEntry*> RemoteProcess::disks() const {
    std::vector<const devices::DeviceEntry*> out;
    for (const auto& e : devices_.entries())
        if (e->scsi) out.push_back(e.get());
    return out;
}

Status RemoteProcess::plug(devices::DeviceEntry& e) {
    PciFunctionEntry f;
    f.id = e.id;
    f.driver = std::string(e.type->name);
    f.dev = e.pci.get();
    f.bus = e.scsi_bus;
    f.irq = std::make_unique<EventfdIrqLine>(loop_);
    f.dev->attach_irq(f.irq.get());
    functions_.push_back(std::move(f));
    return {};
}

Status RemoteProcess::may_unplug(const devices::DeviceEntry& e) {
    for (const auto& b : bindings_)
        if (std::find(b.devices.begin(), b.devices.end(), e.id) != b.devices.end())
            return fail("Device '{}' is served on socket {} and cannot be removed", e.id, b.fd);
    return {};
}

void RemoteProcess::unplug(devices::DeviceEntry& e) {
    e.pci->attach_irq(nullptr);
    std::erase_if(functions_, [&](const PciFunctionEntry& f) { return f.dev == e.pci.get(); });
}

void RemoteProcess::reset_devices() {
    for (auto& f : functions_) f.dev->device_reset();
}

void RemoteProcess::quit(int code) { loop_.stop(code); }

void RemoteProcess::shutdown() {
    server_.reset();
    for (auto& d : devices_.drives()) {
        if (!d.backend || d.backend->read_only()) continue;
        std::string id = d.opts.id;
        d.backend->flush([id](Status s) {
            if (!s.ok()) log::error("drive {}: flush on exit failed: {}", id, s.error().message);
        });
        d.backend->drain();
    }
}

Status RemoteProcess::configure(const opts::CommandLine& cl, int first_arg_fd) {
    for (const Option& o : cl.options) {
        std::string_view n = o.name();
        if (n == "machine" || n == "M") {
            MPQ_TRY([&]() -> Status {
                auto k = opts::check_known_keys(o.kv, "x-remote-machine", kMachineKeys);
                if (!k.ok()) return o.error(k.error());
                std::string type = o.kv.get("type", "x-remote");
                if (type != "x-remote")
                    return o.error("machine type '{}' is not supported (only 'x-remote')", type);
                if (o.kv.has("vfio-user")) {
                    auto b = opts::parse_bool(o.kv.get("vfio-user"), "vfio-user");
                    if (!b.ok()) return o.error(b.error());
                    if (*b) return o.error("vfio-user is not supported; use the mpqemu protocol");
                }
                return {};
            }());
        } else if (n == "display") {
            if (o.kv.get("type") != "none") return o.error("only '-display none' is supported");
        } else if (n == "name") {
            name_ = o.kv.get("guest");
        } else if (n == "chardev" || n == "mon" || n == "monitor" || n == "qmp") {
            monitor_options_.push_back(o);
        }
    }
    // QEMU's order: drives, then devices in command-line order, then the
    // objects that refer to devices.
    for (const Option* o : cl.all("drive"))
        if (auto s = devices_.add_drive(o->kv); !s.ok()) return o->error(s.error());
    for (const Option* o : cl.all("device"))
        if (auto e = devices_.add(o->kv); !e.ok()) return o->error(e.error());
    if (functions_.empty()) return fail("no PCI device to serve (add -device lsi53c895a,id=ID or -device edu,id=ID)");
    if (first_arg_fd >= 0) {
        for (const auto& f : functions_) MPQ_TRY(bind_socket(first_arg_fd, f.id, nullptr));
    }
    for (const Option* o : cl.all("object")) MPQ_TRY(add_object(*o));
    if (bindings_.empty())
        return fail("no socket to serve: give its fd as the first argument, or "
                    "-object x-remote-object,id=ID,devid=DEV,fd=FD");
    return {};
}

Status RemoteProcess::add_drive_now(const block::DriveOptions& opts, DriveOwner owner) {
    return devices_.add_drive(opts, owner);
}

// Hot-plug is the device set's (shared with the VMM's in-process controllers).
Status RemoteProcess::remove_drive(std::string_view id) { return devices_.hot_remove_drive(id); }

Status RemoteProcess::add_device_now(const opts::KeyValues& kv) {
    auto e = devices_.hot_add(kv);
    if (!e.ok()) return e.take_error();
    return {};
}

Result<std::string> RemoteProcess::remove_device(std::string_view id) { return devices_.hot_remove(id); }

Status RemoteProcess::add_object(const Option& o) {
    std::string type = o.kv.get("qom-type");
    if (type != "x-remote-object") return o.error("invalid object type: {}", type);
    if (auto k = opts::check_known_keys(o.kv, "x-remote-object", kRemoteObjectKeys); !k.ok())
        return o.error(k.error());
    if (!o.kv.has("id")) return o.error("Parameter 'id' is missing");
    if (auto s = opts::check_id(o.kv.get("id")); !s.ok()) return o.error(s.error());
    if (!o.kv.has("devid")) return o.error("devid property not set");
    if (!o.kv.has("fd")) return o.error("fd property not set");
    auto fd = opts::parse_uint(o.kv.get("fd"), "fd", INT_MAX);
    if (!fd.ok()) return o.error(fd.error());
    std::string devid = o.kv.get("devid");
    if (!find_function(devid)) {
        if (devices_.find(devid)) return o.error("{} is not a PCI device", devid);
        return o.error("Device '{}' not found", devid);
    }
    return bind_socket(static_cast<int>(*fd), devid, &o);
}

Status RemoteProcess::bind_socket(int fd, const std::string& device, const Option* o) {
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        Error e = fail("fd {} is not a socket", fd);
        return o ? o->error(e) : e;
    }
    for (auto& b : bindings_) {
        if (b.fd != fd) continue;
        if (std::find(b.devices.begin(), b.devices.end(), device) == b.devices.end())
            b.devices.push_back(device);
        return {};
    }
    bindings_.push_back(SocketBinding{fd, {device}});
    return {};
}

Status RemoteProcess::start() {
    server_ = std::make_unique<DeviceServer>(loop_, memory_, [this](bool orderly) {
        // Stock's remote exits when its proxy goes away; so do we once the
        // last socket is gone.
        if (last_gone_) {
            last_gone_(orderly ? 0 : 1);
            return;
        }
        log::info("no connection left; exiting");
        quit(orderly ? 0 : 1);
    });
    for (const auto& b : bindings_) {
        std::vector<ServedDevice> served;
        for (const auto& id : b.devices) {
            PciFunctionEntry* f = find_function(id);
            served.push_back(ServedDevice{f->id, f->dev, f->irq.get()});
        }
        MPQ_TRY(server_->add_connection(UniqueFd(b.fd), std::move(served)));
    }
    return {};
}

}  // namespace mpq::remote
