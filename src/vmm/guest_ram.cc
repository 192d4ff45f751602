#include "vmm/guest_ram.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mpq::vmm {

Result<std::unique_ptr<GuestRam>> GuestRam::create(uint64_t size, RamBacking backing,
                                                   RamShare share, const std::string& name, RamSeal seal) {
    if (size == 0 || size % 4096) return fail("RAM size {:#x} must be a non-zero multiple of 4 KiB", size);
    if (size > (uint64_t{1} << 40)) return fail("RAM size {:#x} too large", size);
    std::unique_ptr<GuestRam> r(new GuestRam());
    r->size_ = size;
    int flags = MAP_NORESERVE;
    int fd = -1;
    if (backing == RamBacking::Memfd) {
        unsigned mfd = MFD_CLOEXEC | (seal == RamSeal::Sealed ? MFD_ALLOW_SEALING : 0u);
        r->fd_.reset(::memfd_create(name.c_str(), mfd));
        if (!r->fd_) return fail_errno(errno, "memfd_create: {}", std::strerror(errno));
        if (::ftruncate(r->fd_.get(), static_cast<off_t>(size)) != 0) {
            return fail_errno(errno, "cannot size guest RAM memfd to {:#x}: {}", size, std::strerror(errno));
        }
        if (seal == RamSeal::Sealed &&
            ::fcntl(r->fd_.get(), F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
            return fail_errno(errno, "cannot seal the guest RAM memfd: {}", std::strerror(errno));
        }
        fd = r->fd_.get();
        r->share_ = share;
        flags |= share == RamShare::Shared ? MAP_SHARED : MAP_PRIVATE;
    } else {
        flags |= MAP_PRIVATE | MAP_ANONYMOUS;
        r->share_ = RamShare::Private;
    }
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED) return fail_errno(errno, "cannot map {:#x} bytes of guest RAM: {}", size, std::strerror(errno));
    r->base_ = static_cast<uint8_t*>(p);
    uint64_t low = size >= kPciHoleStart ? kBigLowRam : size;
    r->regions_.push_back({0, low, 0});
    if (size > low) r->regions_.push_back({kHighRamBase, size - low, low});
    return r;
}

GuestRam::~GuestRam() {
    if (base_) ::munmap(base_, size_);
}

uint8_t* GuestRam::host(uint64_t gpa, uint64_t len) const {
    for (const auto& r : regions_) {
        if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa)) {
            return base_ + r.offset + (gpa - r.gpa);
        }
    }
    return nullptr;
}

uint64_t GuestRam::contiguous(uint64_t gpa) const {
    for (const auto& r : regions_) {
        if (gpa >= r.gpa && gpa - r.gpa < r.size) return r.size - (gpa - r.gpa);
    }
    return 0;
}

Status GuestRam::read(uint64_t gpa, std::span<uint8_t> out) {
    uint8_t* h = host(gpa, out.size());
    if (!h) return fail("DMA read of {} bytes at {:#x} outside guest RAM", out.size(), gpa);
    std::memcpy(out.data(), h, out.size());
    return {};
}

Status GuestRam::write(uint64_t gpa, std::span<const uint8_t> in) {
    uint8_t* h = host(gpa, in.size());
    if (!h) return fail("DMA write of {} bytes at {:#x} outside guest RAM", in.size(), gpa);
    std::memcpy(h, in.data(), in.size());
    return {};
}

std::span<uint8_t> GuestRam::map(uint64_t gpa, uint64_t len) {
    uint8_t* h = host(gpa, len);
    return h ? std::span<uint8_t>(h, len) : std::span<uint8_t>();
}

}  // namespace mpq::vmm
