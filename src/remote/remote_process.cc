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

constexpr std::string_view kLsiKeys[] = {"driver", "id", "addr", "bus", "multifunction", "romfile",
                                         "rombar", "failover_pair_id", "acpi-index"};
constexpr std::string_view kScsiHdKeys[] = {
    "driver", "id", "drive", "bus", "scsi-id", "lun", "channel", "serial", "wwn", "vendor",
    "product", "ver", "logical_block_size", "physical_block_size", "write-cache", "removable",
    "dpofua", "rotation_rate", "share-rw", "bootindex", "discard_granularity", "min_io_size",
    "opt_io_size"};
constexpr std::string_view kDriveKeys[] = {
    "id", "file", "format", "if", "cache", "aio", "readonly", "read-only", "l2-cache-size", "media",
    "index", "discard", "detect-zeroes", "werror", "rerror", "snapshot", "cache.direct",
    "cache.no-flush", "driver", "config", "image.filename", "image.driver"};
constexpr std::string_view kRemoteObjectKeys[] = {"qom-type", "id", "devid", "fd"};
constexpr std::string_view kMachineKeys[] = {"type", "vfio-user", "auto-shutdown"};

// QEMU's PCI address syntax: "slot[.fn]" in hex.
bool valid_pci_addr(std::string_view s) {
    auto hex = [](std::string_view h, unsigned max) {
        if (h.empty() || h.size() > 2) return false;
        unsigned v = 0;
        for (char ch : h) {
            if (!std::isxdigit(static_cast<unsigned char>(ch))) return false;
            v = v * 16 + static_cast<unsigned>(std::isdigit(static_cast<unsigned char>(ch))
                                                   ? ch - '0'
                                                   : (std::tolower(static_cast<unsigned char>(ch)) - 'a' + 10));
        }
        return v <= max;
    };
    size_t dot = s.find('.');
    if (dot == std::string_view::npos) return hex(s, 31);
    return hex(s.substr(0, dot), 31) && s.size() - dot - 1 == 1 && hex(s.substr(dot + 1), 7);
}

}  // namespace

RemoteProcess::RemoteProcess(EventLoop& loop) : loop_(loop) {}

RemoteProcess::~RemoteProcess() {
    // Connections first (they point at devices), then disks before the
    // backends they use, then controllers.
    server_.reset();
    for (auto& d : drives_)
        if (d.backend) d.backend->drain();
    disks_.clear();
    functions_.clear();
    drives_.clear();
}

PciFunctionEntry* RemoteProcess::find_function(std::string_view id) {
    for (auto& f : functions_)
        if (f.id == id) return &f;
    return nullptr;
}

DriveEntry* RemoteProcess::find_drive(std::string_view id) {
    for (auto& d : drives_)
        if (d.opts.id == id) return &d;
    return nullptr;
}

block::BlockBackend* RemoteProcess::find_backend(std::string_view drive_id) {
    DriveEntry* d = find_drive(drive_id);
    return d ? d->backend.get() : nullptr;
}

void RemoteProcess::reset_devices() {
    for (auto& f : functions_) f.dev->device_reset();
}

void RemoteProcess::quit(int code) { loop_.stop(code); }

void RemoteProcess::shutdown() {
    server_.reset();
    for (auto& d : drives_) {
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
    for (const Option* o : cl.all("drive")) MPQ_TRY(add_drive(*o));
    for (const Option* o : cl.all("device")) MPQ_TRY(add_device(*o));
    if (functions_.empty()) return fail("no PCI device to serve (add -device lsi53c895a,id=ID)");
    if (first_arg_fd >= 0) {
        for (const auto& f : functions_) MPQ_TRY(bind_socket(first_arg_fd, f.id, nullptr));
    }
    for (const Option* o : cl.all("object")) MPQ_TRY(add_object(*o));
    if (bindings_.empty())
        return fail("no socket to serve: give its fd as the first argument, or "
                    "-object x-remote-object,id=ID,devid=DEV,fd=FD");
    return {};
}

Status RemoteProcess::add_drive(const Option& o) {
    const auto& kv = o.kv;
    std::string fmt_name = kv.get("format", "raw");
    for (const auto& item : kv.items)
        if (std::find(std::begin(kDriveKeys), std::end(kDriveKeys), item.key) == std::end(kDriveKeys))
            return o.error("Block format '{}' does not support the option '{}'", fmt_name, item.key);
    std::string id = kv.get("id");
    if (id.empty()) return o.error("drive needs an id (id=ID)");
    if (auto s = opts::check_id(id); !s.ok()) return o.error(s.error());
    if (find_drive(id)) return o.error("Duplicate ID '{}' for drive", id);
    std::string iface = kv.get("if", "none");
    if (iface != "none") return o.error("if={} is not supported here (use if=none)", iface);
    if (kv.get("media", "disk") != "disk") return o.error("media={} is not supported", kv.get("media"));
    if (kv.has("snapshot")) {
        auto b = opts::parse_bool(kv.get("snapshot"), "snapshot");
        if (!b.ok()) return o.error(b.error());
        if (*b) return o.error("snapshot=on is not supported");
    }
    if (kv.get("file").empty() && kv.get("image.filename").empty())
        return o.error("A block device must be specified for \"file\"");
    // The block layer owns the meaning of its keys (cache modes, aio, ...);
    // what only the drive front end knows is filtered out here.
    std::vector<std::pair<std::string, std::string>> block_kv;
    for (const auto& item : kv.items) {
        static constexpr std::string_view kFrontEnd[] = {"if", "media", "index", "snapshot", "discard",
                                                          "detect-zeroes", "werror", "rerror"};
        if (std::find(std::begin(kFrontEnd), std::end(kFrontEnd), item.key) == std::end(kFrontEnd))
            block_kv.emplace_back(item.key, item.value);
    }
    auto d = block::parse_drive_options(block_kv);
    if (!d.ok()) return o.error(d.error());
    auto drv = block::open_drive(*d);
    if (!drv.ok()) return o.error(drv.error());
    DriveEntry e;
    e.serial = ++drive_serial_;
    e.opts = *d;
    e.backend = std::make_unique<block::BlockBackend>(loop_, std::move(*drv), *d);
    drives_.push_back(std::move(e));
    return {};
}

Status RemoteProcess::add_device(const Option& o) {
    std::string driver = o.kv.get("driver");
    if (driver == "lsi53c895a") return add_lsi(o);
    if (driver == "scsi-hd") return add_scsi_hd(o);
    if (driver == "help" || driver == "?") return o.error("available devices: lsi53c895a, scsi-hd");
    return o.error("'{}' is not a valid device model name", driver);
}

Status RemoteProcess::add_lsi(const Option& o) {
    const auto& kv = o.kv;
    if (auto k = opts::check_known_keys(kv, "lsi53c895a", kLsiKeys); !k.ok()) return o.error(k.error());
    std::string id = kv.get("id");
    if (kv.has("id")) {
        if (auto s = opts::check_id(id); !s.ok()) return o.error(s.error());
    } else {
        id = fmt::format("lsi53c895a.{}", functions_.size());  // unnamed: reachable as the default only
    }
    if (find_function(id) || std::any_of(disks_.begin(), disks_.end(), [&](auto& d) { return d.id == id; }))
        return o.error("Duplicate ID '{}' for device", id);
    if (kv.has("addr") && !valid_pci_addr(kv.get("addr")))
        return o.error("Property 'lsi53c895a.addr' doesn't take value '{}'", kv.get("addr"));
    for (std::string_view key : {"multifunction", "rombar"}) {
        if (!kv.has(key)) continue;
        if (key == "rombar") {
            auto v = opts::parse_uint(kv.get(key), key, UINT32_MAX);
            if (!v.ok()) return o.error(v.error());
        } else if (auto b = opts::parse_bool(kv.get(key), key); !b.ok()) {
            return o.error(b.error());
        }
    }
    PciFunctionEntry f;
    f.id = id;
    f.driver = "lsi53c895a";
    f.dev = hw::make_lsi53c895a(loop_, id);
    f.irq = std::make_unique<EventfdIrqLine>(loop_);
    f.dev->attach_irq(f.irq.get());
    f.dev->attach_dma(&memory_);
    functions_.push_back(std::move(f));
    return {};
}

Status RemoteProcess::add_scsi_hd(const Option& o) {
    const auto& kv = o.kv;
    if (auto k = opts::check_known_keys(kv, "scsi-hd", kScsiHdKeys); !k.ok()) return o.error(k.error());
    scsi::ScsiHdProps p;
    p.id = kv.get("id");
    if (kv.has("id")) {
        if (auto s = opts::check_id(p.id); !s.ok()) return o.error(s.error());
        if (find_function(p.id) ||
            std::any_of(disks_.begin(), disks_.end(), [&](auto& d) { return d.id == p.id; }))
            return o.error("Duplicate ID '{}' for device", p.id);
    }
    // The bus: "CTRL.0" (LSI has one bus), or the first controller.
    PciFunctionEntry* ctrl = nullptr;
    if (kv.has("bus")) {
        std::string bus = kv.get("bus");
        size_t dot = bus.rfind('.');
        if (dot != std::string::npos && bus.substr(dot + 1) == "0") ctrl = find_function(bus.substr(0, dot));
        if (!ctrl) return o.error("Bus '{}' not found", bus);
    } else {
        if (functions_.empty()) return o.error("No 'SCSI' bus found for device 'scsi-hd'");
        ctrl = &functions_.front();
    }
    if (kv.has("channel")) {
        auto v = opts::parse_uint(kv.get("channel"), "channel", UINT32_MAX);
        if (!v.ok()) return o.error(v.error());
        if (*v != 0) return o.error("bad scsi device channel: {}", *v);
    }
    if (kv.has("lun")) {
        auto v = opts::parse_uint(kv.get("lun"), "lun", UINT32_MAX);
        if (!v.ok()) return o.error(v.error());
        if (*v != 0) return o.error("bad scsi device lun: {}", *v);  // the LSI has LUN 0 only
    }
    scsi::Bus& bus = ctrl->dev->bus();
    if (kv.has("scsi-id")) {
        auto v = opts::parse_uint(kv.get("scsi-id"), "scsi-id", UINT32_MAX);
        if (!v.ok()) return o.error(v.error());
        if (*v >= scsi::kMaxTargets) return o.error("bad scsi device id: {}", *v);
        p.scsi_id = static_cast<unsigned>(*v);
        if (bus.target(p.scsi_id)) return o.error("SCSI id {} is already in use on bus '{}.0'", p.scsi_id, ctrl->id);
    } else {
        unsigned id = 0;
        while (id < static_cast<unsigned>(scsi::kMaxTargets) && bus.target(id)) id++;
        if (id >= static_cast<unsigned>(scsi::kMaxTargets)) return o.error("no free SCSI id on bus '{}.0'", ctrl->id);
        p.scsi_id = id;
    }
    if (!kv.has("drive")) return o.error("drive property not set");
    std::string drive_id = kv.get("drive");
    DriveEntry* drive = find_drive(drive_id);
    if (!drive) return o.error("Property 'scsi-hd.drive' can't find value '{}'", drive_id);
    if (!drive->attached_to.empty())
        return o.error("Property 'scsi-hd.drive' can't take value '{}', it's in use", drive_id);
    if (kv.has("serial")) p.serial = kv.get("serial");
    if (kv.has("vendor")) p.vendor = kv.get("vendor");
    if (kv.has("product")) p.product = kv.get("product");
    if (kv.has("ver")) p.ver = kv.get("ver");
    if (kv.has("wwn")) {
        auto v = opts::parse_uint(kv.get("wwn"), "wwn");
        if (!v.ok()) return o.error(v.error());
        p.wwn = *v;
    }
    if (kv.has("logical_block_size")) {
        auto v = opts::parse_size(kv.get("logical_block_size"), "logical_block_size");
        if (!v.ok()) return o.error(v.error());
        if (*v != 512 && *v != 4096) return o.error("logical_block_size must be 512 or 4096");
        p.logical_block_size = static_cast<uint32_t>(*v);
    }
    if (kv.has("write-cache")) {
        std::string wc = kv.get("write-cache");
        if (wc != "auto") {
            auto b = opts::parse_bool(wc, "write-cache");
            if (!b.ok()) return o.error(b.error());
            p.write_cache = *b ? scsi::WriteCache::On : scsi::WriteCache::Off;
        }
    }
    auto dev = scsi::make_scsi_hd(loop_, *drive->backend, p);
    if (!dev.ok()) return o.error(dev.error());
    if (!bus.attach(p.scsi_id, dev->get())) return o.error("SCSI id {} is already in use", p.scsi_id);
    ScsiDiskEntry e;
    e.id = p.id;
    e.drive = drive_id;
    e.controller = ctrl->id;
    e.scsi_id = p.scsi_id;
    e.lun = 0;
    e.dev = std::move(*dev);
    drive->attached_to = p.id.empty() ? std::string("scsi-hd") : p.id;
    disks_.push_back(std::move(e));
    return {};
}

Status RemoteProcess::add_drive_now(const block::DriveOptions& opts, DriveOwner owner) {
    if (opts.id.empty()) return fail("drive needs an id");
    if (auto s = opts::check_id(opts.id, "node-name"); !s.ok()) return s;
    if (find_drive(opts.id)) return fail("Duplicate nodes with node-name='{}'", opts.id);
    auto drv = block::open_drive(opts);
    if (!drv.ok()) return drv.take_error();
    DriveEntry e;
    e.serial = ++drive_serial_;
    e.opts = opts;
    e.owner = owner;
    e.backend = std::make_unique<block::BlockBackend>(loop_, std::move(*drv), opts);
    drives_.push_back(std::move(e));
    log::info("drive '{}' added: {} ({})", opts.id, opts.file, drives_.back().backend->driver().format_name());
    return {};
}

Status RemoteProcess::remove_drive(std::string_view id) {
    auto it = std::find_if(drives_.begin(), drives_.end(), [&](const DriveEntry& d) { return d.opts.id == id; });
    if (it == drives_.end()) return fail("Failed to find node with node-name='{}'", id);
    if (!it->attached_to.empty()) return fail("Node {} is in use", id);
    if (it->owner != DriveOwner::Monitor) return fail("Node {} is not owned by the monitor", id);
    close_drive(it);
    return {};
}

void RemoteProcess::close_drive(std::vector<DriveEntry>::iterator it) {
    std::string id = it->opts.id;
    if (!it->backend->read_only()) {
        it->backend->flush([id](Status s) {
            if (!s.ok()) log::error("drive {}: flush before closing failed: {}", id, s.error().message);
        });
    }
    it->backend->drain();
    drives_.erase(it);
    log::info("drive '{}' closed", id);
}

Status RemoteProcess::add_device_now(const opts::KeyValues& kv) {
    std::string driver = kv.get("driver");
    if (driver.empty()) return fail("Parameter 'driver' is missing");
    if (driver == "lsi53c895a")
        return fail("Bus 'pci.0' does not support hotplugging (this process serves its PCI functions "
                    "from start-up; add a controller on the command line)");
    if (driver != "scsi-hd") return fail("'{}' is not a valid device model name", driver);
    static const opts::OptionDef kDef{"device", opts::ArgKind::KeyValue, "driver", ""};
    Option o;
    o.def = &kDef;
    o.kv = kv;
    o.text = "device_add";
    auto st = add_scsi_hd(o);
    if (st.ok()) {
        disks_.back().dev->hotplugged();
        log::info("scsi-hd '{}' added on {}.0 scsi-id {} (drive '{}')", disks_.back().id,
                  disks_.back().controller, disks_.back().scsi_id, disks_.back().drive);
        return st;
    }
    // add_scsi_hd speaks to the command line ("-device ...: msg"); a monitor
    // client gets the message alone, as from QEMU's device_add.
    std::string msg = st.error().message;
    std::string prefix = o.where() + ": ";
    if (msg.starts_with(prefix)) msg.erase(0, prefix.size());
    return Error{msg, st.error().err};
}

Result<std::string> RemoteProcess::remove_device(std::string_view id) {
    if (!id.empty() && find_function(id))
        return fail("Bus 'pci.0' does not support hotplugging ('{}' is a PCI function this process serves)", id);
    auto it = std::find_if(disks_.begin(), disks_.end(), [&](const ScsiDiskEntry& d) { return d.id == id; });
    if (id.empty() || it == disks_.end()) return fail("Device '{}' not found", id);
    PciFunctionEntry* ctrl = find_function(it->controller);
    assert(ctrl);
    DriveEntry* drive = find_drive(it->drive);
    assert(drive);
    // 1. No new command reaches it.
    ctrl->dev->bus().detach(it->scsi_id, it->dev.get());
    // 2. Block I/O already submitted finishes normally: a write that completes
    //    is acknowledged to the guest and is on the image.
    drive->backend->drain();
    // 3. What still waits for the guest (a data phase, a status not yet
    //    delivered) ends with CHECK CONDITION, ABORTED COMMAND: the guest's
    //    driver retries, meets a selection timeout and reports the disk gone.
    it->dev->unplug(scsi::kCommandAborted);
    drive->backend->drain();
    std::string path = fmt::format("/machine/peripheral/{}", it->id);
    log::info("scsi-hd '{}' removed from {}.0 scsi-id {}", it->id, it->controller, it->scsi_id);
    disks_.erase(it);
    drive->attached_to.clear();
    if (drive->owner == DriveOwner::Legacy) {
        auto dit = std::find_if(drives_.begin(), drives_.end(), [&](const DriveEntry& d) { return &d == drive; });
        close_drive(dit);
    } else if (!drive->backend->read_only()) {
        std::string did = drive->opts.id;
        drive->backend->flush([did](Status s) {
            if (!s.ok()) log::error("drive {}: flush after unplug failed: {}", did, s.error().message);
        });
        drive->backend->drain();
    }
    return path;
}

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
        bool is_disk = std::any_of(disks_.begin(), disks_.end(), [&](auto& d) { return d.id == devid; });
        if (is_disk) return o.error("{} is not a PCI device", devid);
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
            served.push_back(ServedDevice{f->id, f->dev.get(), f->irq.get()});
        }
        MPQ_TRY(server_->add_connection(UniqueFd(b.fd), std::move(served)));
    }
    return {};
}

}  // namespace mpq::remote
