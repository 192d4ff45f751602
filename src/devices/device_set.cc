#include "devices/device_set.h"

#include <algorithm>

#include "util/log.h"

namespace mpq::devices {

DeviceSet::DeviceSet(EventLoop& loop, DmaSpace* dma, WorkQueue& timers, DevicePlugs& plugs)
    : loop_(loop), dma_(dma), timers_(timers), plugs_(plugs) {}

DeviceSet::~DeviceSet() { clear(); }

void DeviceSet::clear() {
    // Disks point at their backends and sit on controllers' buses: requests
    // finish first, then disks go, then controllers, then drives.
    drain_drives();
    for (size_t i = entries_.size(); i-- > 0;)
        if (entries_[i]->scsi) destroy(i, Teardown::Exit);
    while (!entries_.empty()) destroy(entries_.size() - 1, Teardown::Exit);
    drives_.clear();
}

void DeviceSet::drain_drives() {
    for (auto& d : drives_)
        if (d.backend) d.backend->drain();
}

DeviceEntry* DeviceSet::find(std::string_view id) {
    if (id.empty()) return nullptr;  // an unnamed disk is not addressable by ""
    for (auto& e : entries_)
        if (e->id == id) return e.get();
    return nullptr;
}

DriveEntry* DeviceSet::find_drive(std::string_view id) {
    for (auto& d : drives_)
        if (d.opts.id == id) return &d;
    return nullptr;
}

block::BlockBackend* DeviceSet::find_backend(std::string_view drive_id) {
    DriveEntry* d = find_drive(drive_id);
    return d ? d->backend.get() : nullptr;
}

Status DeviceSet::add_drive(const opts::KeyValues& kv) {
    auto d = parse_drive(kv);
    if (!d.ok()) return d.take_error();
    if (find_drive(d->id)) return fail("Duplicate ID '{}' for drive", d->id);
    auto drv = block::open_drive(*d);
    if (!drv.ok()) return drv.take_error();
    DriveEntry e;
    e.serial = ++drive_serial_;
    e.opts = *d;
    e.backend = std::make_unique<block::BlockBackend>(loop_, std::move(*drv), *d);
    drives_.push_back(std::move(e));
    return {};
}

Status DeviceSet::add_drive(const block::DriveOptions& opts, DriveOwner owner) {
    if (opts.id.empty()) return fail("drive needs an id");
    MPQ_TRY(opts::check_id(opts.id, "node-name"));
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

Status DeviceSet::remove_drive(std::string_view id) {
    for (size_t i = 0; i < drives_.size(); ++i) {
        DriveEntry& d = drives_[i];
        if (d.opts.id != id) continue;
        if (!d.attached_to.empty()) return fail("Node {} is in use", id);
        std::string name = d.opts.id;
        if (!d.backend->read_only()) {
            d.backend->flush([name](Status s) {
                if (!s.ok()) log::error("drive {}: flush before closing failed: {}", name, s.error().message);
            });
        }
        d.backend->drain();
        drives_.erase(drives_.begin() + static_cast<std::ptrdiff_t>(i));
        log::info("drive '{}' closed", name);
        return {};
    }
    return fail("Failed to find node with node-name='{}'", id);
}

Result<DeviceEntry*> DeviceSet::add(const opts::KeyValues& kv) {
    auto cfg = parse_device(kv);
    if (!cfg.ok()) return cfg.take_error();
    return add(std::move(*cfg));
}

Result<DeviceEntry*> DeviceSet::add(DeviceConfig cfg) {
    if (!cfg.id.empty() && find(cfg.id)) return fail("Duplicate ID '{}' for device", cfg.id);
    auto e = std::make_unique<DeviceEntry>();
    e->type = cfg.type;
    e->named = !cfg.id.empty();
    e->id = cfg.id;
    if (!e->named && cfg.type->kind == DeviceKind::PciFunction) {
        // "<type>.<number of functions>", or the next free number: a user may
        // have taken a name of that form, and after a removal the count can
        // name a live function.
        size_t n = std::count_if(entries_.begin(), entries_.end(), [](auto& x) { return x->pci != nullptr; });
        for (;; ++n) {
            e->id = fmt::format("{}.{}", cfg.type->name, n);  // reachable as a socket's default only
            if (!find(e->id)) break;
        }
    }
    e->config = std::move(cfg);
    BuildContext ctx{loop_, dma_, timers_, e->id};
    if (e->type->kind == DeviceKind::ScsiDevice) MPQ_TRY(place_scsi(*e, ctx));
    auto built = e->type->build(e->config, ctx);
    if (!built.ok()) return built.take_error();
    e->pci = std::move(built->pci);
    e->scsi_bus = built->scsi_bus;
    e->scsi = std::move(built->scsi);
    if (e->pci) {
        e->pci->attach_dma(dma_);
        MPQ_TRY(plugs_.plug(*e));
    }
    if (e->scsi) {
        // place_scsi checked the target is free; nothing ran in between.
        (void)e->parent_bus->attach(e->scsi_id, e->scsi.get());
        find_drive(e->drive)->attached_to = e->named ? e->id : std::string(e->type->name);
    }
    entries_.push_back(std::move(e));
    return entries_.back().get();
}

Status DeviceSet::place_scsi(DeviceEntry& e, BuildContext& ctx) {
    const PropValues& p = e.config.props;
    const std::string name(e.type->name);
    DeviceEntry* ctrl = nullptr;
    if (p.given("bus")) {
        // "CTRL.0": a controller has one bus, numbered 0.
        std::string bus = p.str("bus");
        size_t dot = bus.rfind('.');
        if (dot != std::string::npos && bus.substr(dot + 1) == "0") {
            ctrl = find(bus.substr(0, dot));
            if (ctrl && !ctrl->scsi_bus) ctrl = nullptr;
        }
        if (!ctrl) return fail("Bus '{}' not found", bus);
    } else {
        for (auto& x : entries_) {
            if (x->scsi_bus) {
                ctrl = x.get();
                break;
            }
        }
        if (!ctrl) return fail("No 'SCSI' bus found for device '{}'", name);
    }
    if (p.uint("channel") != 0) return fail("bad scsi device channel: {}", p.uint("channel"));
    if (p.uint("lun") != 0) return fail("bad scsi device lun: {}", p.uint("lun"));  // LUN 0 only
    scsi::Bus& bus = *ctrl->scsi_bus;
    unsigned target = 0;
    if (p.given("scsi-id")) {
        uint64_t v = p.uint("scsi-id");
        if (v >= static_cast<uint64_t>(scsi::kMaxTargets)) return fail("bad scsi device id: {}", v);
        target = static_cast<unsigned>(v);
        if (bus.target(target)) return fail("SCSI id {} is already in use on bus '{}.0'", target, ctrl->id);
    } else {
        while (target < static_cast<unsigned>(scsi::kMaxTargets) && bus.target(target)) target++;
        if (target >= static_cast<unsigned>(scsi::kMaxTargets)) return fail("no free SCSI id on bus '{}.0'", ctrl->id);
    }
    if (!p.given("drive")) return fail("drive property not set");
    std::string drive_id = p.str("drive");
    DriveEntry* drive = find_drive(drive_id);
    if (!drive) return fail("Property '{}.drive' can't find value '{}'", name, drive_id);
    if (!drive->attached_to.empty())
        return fail("Property '{}.drive' can't take value '{}', it's in use", name, drive_id);
    e.parent = ctrl->id;
    e.parent_bus = &bus;
    e.scsi_id = target;
    e.lun = 0;
    e.drive = drive_id;
    ctx.bus = &bus;
    ctx.scsi_id = target;
    ctx.drive = drive->backend.get();
    return {};
}

Status DeviceSet::remove(std::string_view id) {
    for (size_t i = 0; i < entries_.size(); ++i) {
        if (entries_[i]->id != id) continue;
        if (entries_[i]->pci) {
            MPQ_TRY(plugs_.may_unplug(*entries_[i]));
            // What sits on its bus goes first.
            const DeviceEntry* ctrl = entries_[i].get();
            for (size_t j = entries_.size(); j-- > 0;)
                if (entries_[j]->scsi && entries_[j]->parent == ctrl->id) destroy(j, Teardown::Unplug);
            for (size_t j = 0; j < entries_.size(); ++j)
                if (entries_[j].get() == ctrl) {
                    destroy(j, Teardown::Unplug);
                    break;
                }
            return {};
        }
        destroy(i, Teardown::Unplug);
        return {};
    }
    return fail("Device '{}' not found", id);
}

void DeviceSet::destroy(size_t index, Teardown how) {
    DeviceEntry& e = *entries_[index];
    if (e.scsi) {
        // 1. No new command reaches it.
        (void)e.parent_bus->detach(e.scsi_id, e.scsi.get());
        DriveEntry* d = find_drive(e.drive);
        // 2. Block I/O already submitted finishes normally: a write that
        //    completes is acknowledged to the guest and is on the image.
        if (d) d->backend->drain();
        // 3. What still waits for the guest ends with CHECK CONDITION,
        //    ABORTED COMMAND: its driver retries and meets a selection timeout.
        //    (At exit nobody is left to tell.)
        if (how == Teardown::Unplug) e.scsi->unplug(scsi::kCommandAborted);
        if (d) {
            d->backend->drain();
            d->attached_to.clear();
        }
    }
    if (e.pci) plugs_.unplug(e);
    entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(index));
}

}  // namespace mpq::devices
