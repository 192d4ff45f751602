// Config space model shared by every emulated PCI function: read-only,
// writable and write-1-to-clear masks, BAR sizing and decoding, INTx.
#pragma once

#include <array>
#include <bitset>
#include <span>
#include <cstdint>

#include "mem/dma.h"
#include "pci/pci_function.h"

namespace mpq::pci {

// Standard config offsets (type 0 header).
inline constexpr uint32_t kVendorId = 0x00;       // 16-bit
inline constexpr uint32_t kDeviceId = 0x02;       // 16-bit
inline constexpr uint32_t kCommand = 0x04;        // 16-bit
inline constexpr uint32_t kStatus = 0x06;         // 16-bit, W1C error bits
inline constexpr uint32_t kRevision = 0x08;
inline constexpr uint32_t kClassProg = 0x09;      // prog-if, subclass, class
inline constexpr uint32_t kCacheLineSize = 0x0c;  // must be R/W (Linux MWI)
inline constexpr uint32_t kLatencyTimer = 0x0d;
inline constexpr uint32_t kHeaderType = 0x0e;
inline constexpr uint32_t kBar0 = 0x10;           // BARs 0..5 at 0x10 + 4*i
inline constexpr uint32_t kSubsysVendor = 0x2c;
inline constexpr uint32_t kSubsysId = 0x2e;
inline constexpr uint32_t kRomBar = 0x30;
inline constexpr uint32_t kCapPointer = 0x34;     // first capability
inline constexpr uint32_t kIntLine = 0x3c;
inline constexpr uint32_t kIntPin = 0x3d;

inline constexpr uint16_t kCmdIo = 0x0001;
inline constexpr uint16_t kCmdMem = 0x0002;
inline constexpr uint16_t kCmdMaster = 0x0004;
inline constexpr uint16_t kCmdSerr = 0x0100;
inline constexpr uint16_t kCmdIntxDisable = 0x0400;  // masks INTx output
// Writable COMMAND bits, as measured on stock QEMU 7.2 (0x0507).
inline constexpr uint16_t kCmdWritable = kCmdIo | kCmdMem | kCmdMaster | kCmdSerr | kCmdIntxDisable;
inline constexpr uint16_t kStatusInterrupt = 0x0008;  // mirrors the INTx level
inline constexpr uint16_t kStatusCapList = 0x0010;    // a capability list exists
// Error bits of STATUS, write-1-to-clear (parity, target/master aborts, SERR).
inline constexpr uint16_t kStatusW1c = 0xf900;
// Device-specific area: writable scratch in QEMU when there are no capabilities.
inline constexpr uint32_t kDeviceSpecific = 0x40;

// MSI capability (PCI 3.0 6.8.1), laid out as QEMU's msi_init() does:
// capability id, next pointer, message control, address (low, and high
// when 64-bit), data. No per-vector masking.
inline constexpr uint8_t kCapIdMsi = 0x05;
inline constexpr uint32_t kMsiControl = 0x02;      // offset in the capability, 16-bit
inline constexpr uint32_t kMsiAddressLo = 0x04;    // 32-bit, bits 1:0 reserved
inline constexpr uint32_t kMsiAddressHi = 0x08;    // 64-bit capability only
inline constexpr uint16_t kMsiEnable = 0x0001;
inline constexpr uint16_t kMsiQmask = 0x000e;      // log2 of vectors offered
inline constexpr uint16_t kMsiQsize = 0x0070;      // log2 of vectors enabled
inline constexpr uint16_t kMsi64Bit = 0x0080;

struct MsiCapDesc {
    uint8_t offset = 0;       // 0: no MSI capability
    bool addr64 = false;
    uint8_t log2_vectors = 0; // vectors offered = 1 << log2_vectors
};

struct PciIdentity {
    uint16_t vendor = 0;
    uint16_t device = 0;
    uint32_t class_code = 0;  // class << 16 | subclass << 8 | prog-if
    uint8_t revision = 0;
    uint16_t subsys_vendor = 0;
    uint16_t subsys_id = 0;
    uint8_t irq_pin = 1;  // 1 = INTA#
    uint8_t latency_timer = 0;  // read-only; QEMU's lsi53c895a sets 0xff
    std::array<BarDesc, kNumBars> bars{};
    MsiCapDesc msi{};
};

// Plain, copyable config-space state: saved, restored and compared in tests.
struct PciConfigState {
    std::array<uint8_t, kConfigSpaceSize> bytes{};
    bool irq_level = false;
};

inline constexpr unsigned kRegWindowSize = 256;

struct RegWindow {
    uint32_t bars = 0;                   // bit i: BAR i offsets [0, kRegWindowSize) are the window
    std::bitset<kRegWindowSize> pure;    // bytes a read of which changes nothing
};

class PciDevice : public PciFunction {
public:
    explicit PciDevice(const PciIdentity& id);

    uint32_t config_read(uint32_t off, unsigned len) override;
    void config_write(uint32_t off, uint32_t val, unsigned len) override;
    std::optional<BarHit> decode(AddressSpace space, uint64_t addr, unsigned size) const override;

    // Full PCI reset (power-on): config registers and the device.
    void pci_reset();

    // The register window a proxy may read from shared memory (MPQEXT
    // REG_MIRROR, proto/reg_mirror.h): which BARs alias it and which of its
    // bytes read without side effects. No window by default.
    virtual RegWindow reg_window() const { return {}; }
    // Fills the current read value of every pure byte of the window (the
    // others are not looked at). Must not change the device.
    virtual void reg_window_fill(std::span<uint8_t, kRegWindowSize> image) { (void)image; }
    // One-byte reads of side-effect bytes of the window whose outcome the
    // device can tell without doing them (an interrupt status that clears
    // when read): what the read returns, the window bytes it changes and the
    // device's interrupt level after it. Fills `out` from the front and says
    // how many; must not change the device. The register mirror publishes
    // them (proto/reg_mirror.h).
    struct ReadPrediction {
        uint8_t offset = 0;
        uint8_t value = 0;
        bool irq_level_after = false;  // the device's level, before INTx disable
        uint8_t changes = 0;
        std::array<uint8_t, 4> change_offset{};
        std::array<uint8_t, 4> change_value{};
    };
    static constexpr unsigned kMaxReadPredictions = 4;
    virtual unsigned predict_reads(std::span<ReadPrediction, kMaxReadPredictions> out) const {
        (void)out;
        return 0;
    }
    // A predicted read of window byte `offset` of `bar` that was answered
    // with `seen` from a publication the device has moved on from since: do
    // what that read did, as far as the device still can (for a status that
    // clears when read: clear the bits that were reported, keep the ones
    // raised since). The default reads the byte now.
    virtual void late_predicted_read(int bar, unsigned offset, uint8_t seen) {
        (void)seen;
        (void)bar_read(bar, offset, 1);
    }
    // INTx as the bus would see a device level (COMMAND's INTx disable).
    bool irq_output_for(bool level) const { return level && !(command() & kCmdIntxDisable); }

    // The new line learns the current level (if asserted).
    void attach_irq(IrqLine* line);
    void attach_dma(DmaSpace* dma) { dma_ = dma; }

    const PciIdentity& identity() const { return id_; }
    const PciConfigState& config_state() const { return cfg_; }
    void restore_config_state(const PciConfigState& s);

    // Current base of `bar` (0 if unprogrammed), and whether it decodes.
    uint64_t bar_address(int bar) const;
    bool bar_enabled(int bar) const;
    bool bus_master() const;
    uint16_t command() const;
    // The guest enabled MSI in the capability (always false without one).
    bool msi_enabled() const;

protected:
    // Raises or lowers INTx; forwards only changes of level.
    void set_irq(bool level);
    // DMA as bus master; fails when COMMAND.MASTER is off or no memory is attached.
    Status dma_read(uint64_t gpa, std::span<uint8_t> out);
    Status dma_write(uint64_t gpa, std::span<const uint8_t> in);
    DmaSpace* dma() const { return dma_; }

private:
    void init_config();
    void init_msi();
    void msi_config_written();
    void update_irq_output();

    PciIdentity id_;
    PciConfigState cfg_;
    std::array<uint8_t, kConfigSpaceSize> wmask_{};
    std::array<uint8_t, kConfigSpaceSize> w1cmask_{};
    IrqLine* irq_ = nullptr;
    DmaSpace* dma_ = nullptr;
    bool irq_out_ = false;  // level last forwarded to irq_
};

}  // namespace mpq::pci
