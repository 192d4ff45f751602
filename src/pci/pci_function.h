// A PCI function as seen from a bus: config cycles and BAR accesses.
// Implemented by emulated devices (pci/pci_device.h) and by the VMM's proxy,
// which forwards the same calls over the wire to a remote process.
#pragma once

#include <cstdint>
#include <optional>

namespace mpq::pci {

inline constexpr unsigned kConfigSpaceSize = 256;
inline constexpr int kNumBars = 6;

enum class AddressSpace : uint8_t { Io, Memory };
enum class BarKind : uint8_t { None, Io, Mem32 };

struct BarDesc {
    BarKind kind = BarKind::None;
    uint32_t size = 0;  // power of two; 0 with BarKind::None
};

struct BarHit {
    int bar;
    uint64_t offset;
};

class IrqLine {
public:
    virtual ~IrqLine() = default;
    virtual void set_level(bool asserted) = 0;
};

class PciFunction {
public:
    virtual ~PciFunction() = default;
    // len is 1, 2 or 4; off + len <= kConfigSpaceSize (callers check).
    virtual uint32_t config_read(uint32_t off, unsigned len) = 0;
    virtual void config_write(uint32_t off, uint32_t val, unsigned len) = 0;
    // size is 1, 2, 4 or 8; offset is inside the BAR.
    virtual uint64_t bar_read(int bar, uint64_t offset, unsigned size) = 0;
    virtual void bar_write(int bar, uint64_t offset, uint64_t val, unsigned size) = 0;
    // Which BAR (if any) decodes [addr, addr+size) in `space` right now:
    // programmed, and enabled by COMMAND.IO / COMMAND.MEM.
    virtual std::optional<BarHit> decode(AddressSpace space, uint64_t addr, unsigned size) const = 0;
    // Device reset (DEVICE_RESET on the wire): device registers only; PCI
    // config (BARs, COMMAND) is kept, as stock QEMU's remote does.
    virtual void device_reset() = 0;
};

}  // namespace mpq::pci
