// LSI53C895A PCI SCSI controller (1000:0012) with its SCRIPTS processor.
#pragma once

#include <memory>
#include <string>

#include "hw/lsi_snapshot.h"
#include "hw/lsi_state.h"
#include "pci/pci_device.h"
#include "scsi/scsi.h"

namespace mpq {
class WorkQueue;
}

namespace mpq::hw {

inline constexpr uint16_t kLsiVendor = 0x1000;
inline constexpr uint16_t kLsiDevice = 0x0012;
inline constexpr uint32_t kLsiClass = 0x010000;  // SCSI storage controller
inline constexpr uint32_t kLsiIoBarSize = 256;
inline constexpr uint32_t kLsiMmioBarSize = 1024;
inline constexpr uint32_t kLsiRamBarSize = 8192;

class Lsi53c895a;

// Work units one SCRIPTS activation may spend before it yields (one per
// fetched dword, one per 4 KiB moved, one per 64 message bytes).
inline constexpr unsigned kLsiDefaultScriptsBudget = 10000;

struct LsiTuning {
    // The device processes keep the default. A fuzzer lowers it so that an
    // endless SCRIPTS loop costs little per input; the guest sees the same
    // results, spread over more activations.
    unsigned scripts_budget = kLsiDefaultScriptsBudget;
};

// Builds a controller. Its SCSI bus is `bus()`: attach scsi-hd targets there.
// SCRIPTS resumptions and yields are queued on `wq`: the event loop in the
// device process, a ManualWorkQueue in tests and fuzzers.
std::unique_ptr<Lsi53c895a> make_lsi53c895a(WorkQueue& wq, const std::string& id,
                                            LsiTuning tuning = {});

class Lsi53c895a : public pci::PciDevice {
public:
    using pci::PciDevice::PciDevice;
    virtual scsi::Bus& bus() = 0;
    virtual const std::string& id() const = 0;
    // Device state (registers, SCRIPTS processor, SCRIPTS RAM). SCSI
    // requests in flight are not part of it: restore cancels them, and a
    // data-phase move that was waiting for one ends in a bus reset
    // interrupt, the same recovery a guest sees after an unexpected reset.
    virtual LsiState save_state() const = 0;
    virtual void restore_state(const LsiState& state) = 0;
    // Complete state, SCSI requests in flight included (hw/lsi_snapshot.h).
    // Taken between event-loop rounds with the targets quiesced (no block
    // I/O in flight); an error otherwise. restore_snapshot() checks the
    // snapshot against this controller and its bus before changing
    // anything: a bad one is refused and leaves the device as it was.
    virtual Result<LsiSnapshot> snapshot() const = 0;
    virtual Status restore_snapshot(const LsiSnapshot& snap) = 0;
};

}  // namespace mpq::hw
