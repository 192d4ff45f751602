// PCI bus 0 of the `pc` machine: 256 device/function slots, decoding of
// memory and I/O cycles by absolute address (every function says which BAR,
// if any, claims an address), and config mechanism #1 at 0xcf8/0xcfc.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pci/pci_function.h"
#include "util/result.h"

namespace mpq::vmm {

inline constexpr int kNumDevfn = 256;
inline constexpr int kFirstDeviceSlot = 2;  // 0 host bridge, 1 PIIX3

constexpr int make_devfn(int slot, int fn) { return (slot << 3) | fn; }
constexpr int devfn_slot(int devfn) { return devfn >> 3; }
constexpr int devfn_fn(int devfn) { return devfn & 7; }

// Ports of the configuration mechanism (named once, used by the bus and tests).
inline constexpr uint16_t kPortConfigAddress = 0xcf8;  // 32-bit address register
inline constexpr uint16_t kPortResetControl = 0xcf9;   // PIIX3 RCR, 8-bit
inline constexpr uint16_t kPortConfigData = 0xcfc;     // 0xcfc..0xcff
inline constexpr uint32_t kConfigEnable = 0x80000000u;

struct PciSlot {
    int devfn = -1;
    std::string id;
    pci::PciFunction* fn = nullptr;  // not owned
};

struct PciDecode {
    pci::PciFunction* fn;
    pci::BarHit hit;
};

class PciBus {
public:
    // Places `fn` at `devfn`; fails if taken or out of range.
    Status add(int devfn, std::string id, pci::PciFunction* fn);
    // Takes `fn` off the bus (no effect if it is not on it).
    void remove(pci::PciFunction* fn);
    // First free function-0 slot at or after kFirstDeviceSlot.
    Result<int> free_devfn() const;
    pci::PciFunction* at(int devfn) const {
        return devfn >= 0 && devfn < kNumDevfn ? slots_[devfn] : nullptr;
    }
    const std::vector<PciSlot>& devices() const { return list_; }

    // Which function claims [addr, addr+size) right now.
    std::optional<PciDecode> decode(pci::AddressSpace space, uint64_t addr, unsigned size) const;

    // Config cycles with bus/device/function already split out. Absent
    // functions read as all-ones and ignore writes. The access is clipped to
    // the 256-byte space, as QEMU's host bridge does.
    uint32_t config_read(int bus, int devfn, uint32_t off, unsigned len) const;
    void config_write(int bus, int devfn, uint32_t off, uint32_t val, unsigned len);

    // Config mechanism #1 (ports 0xcf8 and 0xcfc-0xcff). Returns false if
    // `port` is not one of them. 0xcf9 goes to `on_reset_control`.
    bool io_read(uint16_t port, unsigned size, uint32_t* val);
    bool io_write(uint16_t port, uint32_t val, unsigned size);
    uint32_t config_address() const { return config_address_; }

    std::function<void(uint8_t)> on_reset_control;

private:
    std::array<pci::PciFunction*, kNumDevfn> slots_{};
    std::vector<PciSlot> list_;
    std::vector<pci::PciFunction*> decoders_;  // functions that may own BARs
    uint32_t config_address_ = 0;
    uint8_t reset_control_ = 0;
};

}  // namespace mpq::vmm
