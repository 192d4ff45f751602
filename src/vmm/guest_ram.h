// Guest RAM of the VMM: one host mapping laid out as on QEMU's i440FX `pc`
// machine (below 4 GiB up to the PCI hole, the rest from 4 GiB). Backed by a
// memfd when `-object memory-backend-memfd` asks for it, so that the fd can be
// handed to remote device processes (SYNC_SYSMEM); otherwise anonymous.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mem/dma.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::vmm {

enum class RamBacking : uint8_t { Anonymous, Memfd };
enum class RamShare : uint8_t { Shared, Private };
// memory-backend-memfd's seal= (QEMU's default on): the memfd can neither
// grow nor shrink, nor take new seals, once sized. A remote then knows its
// mapping of guest RAM cannot lose pages under it, and can write guest RAM
// through the file without checking its size first.
enum class RamSeal : uint8_t { Sealed, Unsealed };

inline constexpr uint64_t kPciHoleStart = 0xe0000000ull;  // low RAM ends here at most
inline constexpr uint64_t kBigLowRam = 0xc0000000ull;     // low RAM when RAM >= kPciHoleStart
inline constexpr uint64_t kHighRamBase = 0x100000000ull;

struct RamRegionInfo {
    uint64_t gpa;
    uint64_t size;
    uint64_t offset;  // offset inside the backing fd (and the host mapping)
};

class GuestRam final : public DmaSpace {
public:
    static Result<std::unique_ptr<GuestRam>> create(uint64_t size, RamBacking backing,
                                                    RamShare share, const std::string& name,
                                                    RamSeal seal = RamSeal::Sealed);
    ~GuestRam() override;
    GuestRam(const GuestRam&) = delete;
    GuestRam& operator=(const GuestRam&) = delete;

    uint64_t size() const { return size_; }
    // The fd remote processes may map, or -1 when RAM is anonymous or private.
    int shareable_fd() const { return share_ == RamShare::Shared ? fd_.get() : -1; }
    const std::vector<RamRegionInfo>& regions() const { return regions_; }

    // Host pointer for [gpa, gpa+len) if it lies inside one region, else null.
    uint8_t* host(uint64_t gpa, uint64_t len) const;
    // Bytes of RAM contiguous from gpa (0 if gpa is not RAM).
    uint64_t contiguous(uint64_t gpa) const;

    Status read(uint64_t gpa, std::span<uint8_t> out) override;
    Status write(uint64_t gpa, std::span<const uint8_t> in) override;
    std::span<uint8_t> map(uint64_t gpa, uint64_t len) override;

private:
    GuestRam() = default;
    uint64_t size_ = 0;
    uint8_t* base_ = nullptr;
    UniqueFd fd_;
    RamShare share_ = RamShare::Private;
    std::vector<RamRegionInfo> regions_;
};

}  // namespace mpq::vmm
