#include "remote/state_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "scsi/scsi_hd.h"
#include "util/log.h"
#include "util/unique_fd.h"

namespace mpq::remote {

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

Result<state::DeviceStateImage> capture_state(RemoteProcess& proc) {
    // Drain until quiet: a completion may queue the next chunk's I/O.
    for (int round = 0;; round++) {
        bool busy = false;
        for (auto& d : proc.drives())
            if (d.backend && d.backend->in_flight()) {
                d.backend->drain();
                busy = true;
            }
        if (!busy) break;
        if (round > 1000) return fail("device state: block I/O does not quiesce");
    }
    state::DeviceStateImage img;
    img.producer = std::string("qemu-scsi-dev ") + MPQ_VERSION;
    for (auto& d : proc.drives()) {
        if (!d.backend) continue;
        state::DriveImage di;
        di.id = d.opts.id;
        di.format = d.backend->driver().format_name();
        di.length = d.backend->length();
        di.read_only = d.backend->read_only();
        img.drives.push_back(std::move(di));
    }
    for (const auto& k : proc.disks()) {
        state::DiskImage di;
        di.id = k.id;
        di.controller = k.controller;
        di.drive = k.drive;
        di.scsi_id = static_cast<uint8_t>(k.scsi_id);
        auto hd = scsi::scsi_hd_save(*k.dev);
        if (!hd.ok()) return hd.take_error();
        di.hd = *hd;
        img.disks.push_back(std::move(di));
    }
    for (const auto& f : proc.functions()) {
        state::FunctionImage fi;
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

Status apply_state(RemoteProcess& proc, const state::DeviceStateImage& img) {
    // Same set of drives, disks and functions on both sides.
    if (img.drives.size() != proc.drives().size() || img.disks.size() != proc.disks().size() ||
        img.functions.size() != proc.functions().size())
        return fail("saved state has {} drive(s), {} disk(s), {} device(s); this process has {}, {}, {}",
                    img.drives.size(), img.disks.size(), img.functions.size(), proc.drives().size(),
                    proc.disks().size(), proc.functions().size());
    for (const auto& di : img.drives) {
        DriveEntry* d = proc.find_drive(di.id);
        if (!d || !d->backend) return fail("saved state: drive '{}' is not on this command line", di.id);
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
        const ScsiDiskEntry* k = nullptr;
        for (const auto& e : proc.disks())
            if (e.id == di.id) k = &e;
        if (!k) return fail("saved state: disk '{}' is not on this command line", di.id);
        if (k->controller != di.controller || k->drive != di.drive || k->scsi_id != di.scsi_id)
            return fail("saved state: disk '{}' was at {}.0 scsi-id {} on drive '{}', is at {}.0 scsi-id {} on '{}'",
                        di.id, di.controller, di.scsi_id, di.drive, k->controller, k->scsi_id, k->drive);
        disks.emplace_back(k->dev.get(), &di.hd);
    }
    std::vector<std::pair<PciFunctionEntry*, const state::FunctionImage*>> fns;
    for (const auto& fi : img.functions) {
        PciFunctionEntry* f = proc.find_function(fi.id);
        if (!f) return fail("saved state: device '{}' is not on this command line", fi.id);
        if (f->driver != fi.driver) return fail("saved state: device '{}' was a {}, is a {}", fi.id, fi.driver, f->driver);
        MPQ_TRY(check_config(fi.id, *f->dev, fi.config));
        fns.emplace_back(f, &fi);
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

Status save_state_file(RemoteProcess& proc, const std::string& path) {
    auto img = capture_state(proc);
    if (!img.ok()) return img.take_error();
    std::vector<uint8_t> blob = state::encode(*img);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return fail_errno(errno, "cannot create '{}': {}", path, std::strerror(errno));
    size_t done = 0;
    while (done < blob.size()) {
        ssize_t n = ::write(fd.get(), blob.data() + done, blob.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail_errno(errno, "cannot write '{}': {}", path, std::strerror(errno));
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) return fail_errno(errno, "cannot sync '{}': {}", path, std::strerror(errno));
    log::info("device state saved to {} ({} bytes)", path, blob.size());
    return {};
}

Status load_state_file(RemoteProcess& proc, const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno(errno, "cannot open '{}': {}", path, std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail_errno(errno, "cannot stat '{}'", path);
    if (!S_ISREG(st.st_mode)) return fail("'{}' is not a regular file", path);
    if (static_cast<uint64_t>(st.st_size) > state::kMaxBlobBytes + state::kHeaderSize)
        return fail("'{}': {} bytes is larger than any device state", path, st.st_size);
    std::vector<uint8_t> blob(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < blob.size()) {
        ssize_t n = ::read(fd.get(), blob.data() + done, blob.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(errno, "cannot read '{}': {}", path, std::strerror(errno));
        if (n == 0) break;
        done += static_cast<size_t>(n);
    }
    blob.resize(done);
    auto img = state::decode(blob);
    if (!img.ok()) return fail("'{}': {}", path, img.error().message);
    if (auto s = apply_state(proc, *img); !s.ok()) return fail("'{}': {}", path, s.error().message);
    log::info("device state loaded from {} (saved by {})", path, img->producer);
    return {};
}

}  // namespace mpq::remote
