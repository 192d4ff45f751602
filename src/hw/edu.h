// QEMU's educational PCI device "edu" (1234:11e8), as QEMU's
// docs/specs/edu.rst describes it: an identification register, a liveness
// check, a factorial unit, an interrupt raise/acknowledge pair, and a DMA
// engine moving up to 4 KiB between guest memory and a buffer the device
// keeps at DMA address 0x40000. Interrupts use INTx: the config space
// carries the same MSI capability as QEMU's edu, but neither the 7.2 wire
// nor our VMM can deliver a message-signalled interrupt.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "pci/pci_device.h"
#include "util/work_queue.h"

namespace mpq::hw {

inline constexpr uint16_t kEduVendor = 0x1234;   // QEMU's vendor id
inline constexpr uint16_t kEduDevice = 0x11e8;
inline constexpr uint8_t kEduRevision = 0x10;
inline constexpr uint32_t kEduClass = 0x00ff00;  // "other" (class 0x00, subclass 0xff)
inline constexpr uint32_t kEduMmioSize = 1u << 20;  // BAR0
inline constexpr uint8_t kEduMsiOffset = 0x40;   // where QEMU's msi_init() puts it

// BAR0 registers. Offsets below 0x80 take 4-byte accesses only, the DMA
// registers 4 or 8; any other access reads all-ones and writes nothing.
inline constexpr uint32_t kEduRegId = 0x00;          // RO 0xRRrr00ed: version 1.0
inline constexpr uint32_t kEduRegLiveness = 0x04;    // RW reads back the inverse of the last write
inline constexpr uint32_t kEduRegFactorial = 0x08;   // RW write n, read n! (mod 2^32) once computed
inline constexpr uint32_t kEduRegStatus = 0x20;      // RW see kEduStatus*
inline constexpr uint32_t kEduRegIrqStatus = 0x24;   // RO causes of the pending interrupt
inline constexpr uint32_t kEduRegIrqRaise = 0x60;    // WO ORs the value into IrqStatus
inline constexpr uint32_t kEduRegIrqAck = 0x64;      // WO clears the value's bits from IrqStatus
inline constexpr uint32_t kEduRegDmaSrc = 0x80;      // RW 64-bit DMA source address
inline constexpr uint32_t kEduRegDmaDst = 0x88;      // RW 64-bit DMA destination address
inline constexpr uint32_t kEduRegDmaCount = 0x90;    // RW bytes to move
inline constexpr uint32_t kEduRegDmaCmd = 0x98;      // RW see kEduDma*

inline constexpr uint32_t kEduIdValue = 0x010000ed;
inline constexpr uint32_t kEduStatusComputing = 0x01;  // factorial in progress (read-only bit)
inline constexpr uint32_t kEduStatusIrqFact = 0x80;    // interrupt when the factorial is done
inline constexpr uint32_t kEduIrqFactorial = 0x001;    // IrqStatus bit raised by the factorial unit
inline constexpr uint32_t kEduIrqDma = 0x100;          // IrqStatus bit raised by the DMA engine
inline constexpr uint64_t kEduDmaRun = 0x1;            // start; reads 1 until the transfer is done
inline constexpr uint64_t kEduDmaToRam = 0x2;          // direction: 0 RAM -> buffer, 1 buffer -> RAM
inline constexpr uint64_t kEduDmaIrq = 0x4;            // raise kEduIrqDma when done
inline constexpr uint64_t kEduDmaBufBase = 0x40000;    // the buffer's DMA address
inline constexpr uint32_t kEduDmaBufSize = 4096;
inline constexpr uint64_t kEduDmaDelayNs = 100'000'000;  // guest time from start to completion
inline constexpr uint64_t kEduDefaultDmaMask = (1ull << 28) - 1;  // the dma_mask property's default (28 bits)

// Everything the guest can change besides config space.
struct EduState {
    uint32_t liveness = 0;  // as read back (the inverse of what was written)
    uint32_t factorial = 0;
    uint32_t status = 0;
    uint32_t irq_status = 0;
    uint64_t dma_src = 0;
    uint64_t dma_dst = 0;
    uint64_t dma_count = 0;
    uint64_t dma_cmd = 0;
    std::array<uint8_t, kEduDmaBufSize> dma_buf{};
};

// Counts of guest mistakes the device refused (tests, fuzzing).
struct EduStats {
    uint64_t dma_done = 0;
    uint64_t dma_out_of_range = 0;  // transfer not inside the 4 KiB buffer
    uint64_t dma_failed = 0;        // guest memory refused it (bus master off, no RAM there)
};

class Edu final : public pci::PciDevice {
public:
    // Factorials run as deferred work on `work`, DMA completes on one of
    // its timers (guest time).
    Edu(WorkQueue& work, uint64_t dma_mask);
    ~Edu() override;

    uint64_t bar_read(int bar, uint64_t offset, unsigned size) override;
    void bar_write(int bar, uint64_t offset, uint64_t val, unsigned size) override;
    // QEMU's edu has no reset of its own: a reset changes only config space
    // (and so lowers INTx); the registers and the buffer survive it.
    void device_reset() override {}

    const EduState& state() const { return st_; }
    const EduStats& stats() const { return stats_; }

private:
    void start_factorial(uint32_t n);
    void finish_factorial();
    void start_dma();
    void finish_dma();
    void raise(uint32_t bits);
    void lower(uint32_t bits);

    WorkQueue& work_;
    uint64_t dma_mask_;
    EduState st_;
    EduStats stats_;
    WorkQueue::TimerId dma_timer_ = 0;
    // Deferred work and timers hold this weakly: a device destroyed first
    // turns them into no-ops.
    std::shared_ptr<Edu*> self_;
};

}  // namespace mpq::hw
