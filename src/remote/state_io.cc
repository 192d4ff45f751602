#include "remote/state_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "hw/lsi53c895a.h"
#include "scsi/scsi_hd.h"
#include "state/live.h"
#include "util/log.h"
#include "util/unique_fd.h"

namespace mpq::remote {

namespace {

// The saved-state format carries lsi53c895a functions and their disks; a
// process serving another device type cannot save or load state.
Result<state::LiveDevices> live_devices(RemoteProcess& proc) {
    state::LiveDevices live;
    for (auto& d : proc.drives()) live.drives.push_back({d.opts.id, d.backend.get()});
    for (const auto* k : proc.disks())
        live.disks.push_back({k->id, k->parent, k->drive, k->scsi_id, k->scsi.get()});
    for (const auto& f : proc.functions()) {
        auto* lsi = dynamic_cast<hw::Lsi53c895a*>(f.dev);
        if (!lsi) return fail("device '{}' ({}) has no saved-state support", f.id, f.driver);
        live.functions.push_back({f.id, f.driver, lsi});
    }
    return live;
}

}  // namespace

Result<state::DeviceStateImage> capture_state(RemoteProcess& proc) {
    auto live = live_devices(proc);
    if (!live.ok()) return live.take_error();
    return state::capture(*live, std::string("qemu-scsi-dev ") + MPQ_VERSION);
}

Status apply_state(RemoteProcess& proc, const state::DeviceStateImage& img) {
    auto live = live_devices(proc);
    if (!live.ok()) return live.take_error();
    return state::apply(img, *live);
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
