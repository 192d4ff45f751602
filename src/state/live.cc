#include "state/live.h"

#include <cstring>

#include "scsi/scsi_hd.h"

namespace mpq::state {

namespace {

// Config bytes that say what the function is: a state saved for another
// device (or a damaged one) must not be forced onto this one.
constexpr struct {
    uint32_t off;
    unsigned len;
    const char* what;
} kIdentity[] = {
    {pci::kVendorId, 2, "vendor id"},     {pci::kDeviceId, 2, "device id"},
    {pci::kRevision, 1, "revision"},      {pci::kClassProg, 3, "class code"},
    {pci::kHeaderType, 1, "header type"}, {pci::kSubsysVendor, 2, "subsystem vendor"},
    {pci::kSubsysId, 2, "subsystem id"},  {pci::kIntPin, 1, "interrupt pin"},
};

Status check_config(const std::string& id, const pci::PciDevice& dev, const pci::PciConfigState& saved) {
    const pci::PciConfigState& live = dev.config_state();
    for (const auto& f : kIdentity) {
        if (std::memcmp(&live.bytes[f.off], &saved.bytes[f.off], f.len) != 0)
            return fail("device '{}': saved {} differs from this device's (a state of another device?)", id, f.what);
    }
    // A BAR's low bits (its type, and the size mask) are the device's; the
    // address above them is the guest's.
    for (int i = 0; i < pci::kNumBars; i++) {
        const pci::BarDesc& b = dev.identity().bars[i];
        uint32_t off = pci::kBar0 + 4 * static_cast<uint32_t>(i);
        uint32_t lv, sv;
        std::memcpy(&lv, &live.bytes[off], 4);
        std::memcpy(&sv, &saved.bytes[off], 4);
        uint32_t low = b.kind == pci::BarKind::None ? 0xffffffffu : b.size - 1;
        if ((lv & low) != (sv & low))
            return fail("device '{}': saved BAR{} {:#x} does not fit this device's BAR", id, i, sv);
    }
    return {};
}

}  // namespace

Result<DeviceStateImage> capture(LiveDevices& live, std::string producer) {
    // Drain until quiet: a completion may queue the next chunk's I/O.
    for (int round = 0;; round++) {
        bool busy = false;
        for (auto& d : live.drives)
            if (d.backend && d.backend->in_flight()) {
                d.backend->drain();
                busy = true;
            }
        if (!busy) break;
        if (round > 1000) return fail("device state: block I/O does not quiesce");
    }
    DeviceStateImage img;
    img.producer = std::move(producer);
    for (auto& d : live.drives) {
        if (!d.backend) return fail("device state: drive '{}' is not open", d.id);
        DriveImage di;
        di.id = d.id;
        di.format = d.backend->driver().format_name();
        di.length = d.backend->length();
        di.read_only = d.backend->read_only();
        img.drives.push_back(std::move(di));
    }
    for (const auto& k : live.disks) {
        DiskImage di;
        di.id = k.id;
        di.controller = k.controller;
        di.drive = k.drive;
        di.scsi_id = static_cast<uint8_t>(k.scsi_id);
        auto hd = scsi::scsi_hd_save(*k.dev);
        if (!hd.ok()) return hd.take_error();
        di.hd = *hd;
        img.disks.push_back(std::move(di));
    }
    for (const auto& f : live.functions) {
        FunctionImage fi;
        fi.id = f.id;
        fi.driver = f.driver;
        fi.config = f.dev->config_state();
        auto s = f.dev->snapshot();
        if (!s.ok()) return s.take_error();
        fi.lsi = std::move(*s);
        img.functions.push_back(std::move(fi));
    }
    return img;
}

Status apply(const DeviceStateImage& img, LiveDevices& live) {
    // Same set of drives, disks and functions on both sides, each named when
    // it is missing on one side: disks come and go at run time (device_add,
    // device_del, blockdev-add), so a state describes the disk set it was
    // saved with and the new process's command line must build exactly that.
    for (const auto& di : img.drives) {
        const LiveDrive* d = nullptr;
        for (const auto& e : live.drives)
            if (e.id == di.id) d = &e;
        if (!d || !d->backend)
            return fail("saved state: drive '{}' ({}) is not on this command line (add it with -drive)",
                        di.id, di.format);
        if (d->backend->driver().format_name() != di.format)
            return fail("saved state: drive '{}' was {}, is {} now", di.id, di.format,
                        d->backend->driver().format_name());
        if (d->backend->length() != di.length)
            return fail("saved state: drive '{}' was {} bytes, is {} now", di.id, di.length, d->backend->length());
        if (d->backend->read_only() != di.read_only)
            return fail("saved state: drive '{}' read-only setting differs", di.id);
    }
    std::vector<std::pair<scsi::Device*, const scsi::ScsiHdSnapshot*>> disks;
    for (const auto& di : img.disks) {
        const LiveDisk* k = nullptr;
        for (const auto& e : live.disks)
            if (e.id == di.id) k = &e;
        if (!k)
            return fail("saved state: disk '{}' ({}.0 scsi-id {}, drive '{}') is not on this command line "
                        "(add it with -device)", di.id, di.controller, di.scsi_id, di.drive);
        if (k->controller != di.controller || k->drive != di.drive || k->scsi_id != di.scsi_id)
            return fail("saved state: disk '{}' was at {}.0 scsi-id {} on drive '{}', is at {}.0 scsi-id {} on '{}'",
                        di.id, di.controller, di.scsi_id, di.drive, k->controller, k->scsi_id, k->drive);
        disks.emplace_back(k->dev, &di.hd);
    }
    std::vector<std::pair<const LiveFunction*, const FunctionImage*>> fns;
    for (const auto& fi : img.functions) {
        const LiveFunction* f = nullptr;
        for (const auto& e : live.functions)
            if (e.id == fi.id) f = &e;
        if (!f) return fail("saved state: device '{}' is not on this command line", fi.id);
        if (f->driver != fi.driver) return fail("saved state: device '{}' was a {}, is a {}", fi.id, fi.driver, f->driver);
        MPQ_TRY(check_config(fi.id, *f->dev, fi.config));
        fns.emplace_back(f, &fi);
    }
    for (const auto& k : live.disks) {
        bool saved = false;
        for (const auto& di : img.disks) saved = saved || di.id == k.id;
        if (!saved)
            return fail("disk '{}' ({}.0 scsi-id {}) is not in the saved state (it was not plugged when the "
                        "state was saved)", k.id, k.controller, k.scsi_id);
    }
    for (const auto& d : live.drives) {
        bool saved = false;
        for (const auto& di : img.drives) saved = saved || di.id == d.id;
        if (!saved) return fail("drive '{}' is not in the saved state (it was not open when the state was saved)", d.id);
    }
    for (const auto& f : live.functions) {
        bool saved = false;
        for (const auto& fi : img.functions) saved = saved || fi.id == f.id;
        if (!saved) return fail("device '{}' is not in the saved state", f.id);
    }
    // Disks first: a controller's requests are rebuilt on the disk's
    // restored block size.
    for (auto& [dev, hd] : disks) MPQ_TRY(scsi::scsi_hd_restore(*dev, *hd));
    for (auto& [f, fi] : fns) {
        f->dev->restore_config_state(fi->config);
        MPQ_TRY(f->dev->restore_snapshot(fi->lsi));
    }
    return {};
}

}  // namespace mpq::state
