// The edu device as a guest drives it: register and config accesses of any
// width, time passing (deferred factorials, DMA timers), PCI resets, DMA
// between a fuzzed guest memory and the device's buffer. Synchronous: time
// is a ManualWorkQueue, guest memory a host buffer, so an input runs in
// microseconds and reproduces from its file alone.
//
// Input: [ops_len:u16 LE][ops: 8 bytes each][guest RAM image (up to 64 KiB)]
// op = [kind:u8][size:u8][offset:u16 LE][value:u32 LE]; see do_op().
// Checks, besides ASan/UBSan: INTx follows the interrupt status and the
// INTx-disable bit after every op, and the device writes guest memory only
// when guest time passes with a DMA to RAM running.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "hw/edu.h"
#include "mem/guest_memory.h"
#include "util/manual_work_queue.h"

namespace {

constexpr size_t kRamSize = 64 * 1024;

// Guest memory that counts the device's writes (it has no other way in).
class WatchedMemory final : public mpq::DmaSpace {
public:
    explicit WatchedMemory(mpq::GuestMemory& m) : m_(m) {}
    mpq::Status read(uint64_t gpa, std::span<uint8_t> out) override { return m_.read(gpa, out); }
    mpq::Status write(uint64_t gpa, std::span<const uint8_t> in) override {
        ++writes;
        return m_.write(gpa, in);
    }
    std::span<uint8_t> map(uint64_t gpa, uint64_t len) override {
        ++writes;  // a mapping could be written through
        return m_.map(gpa, len);
    }
    uint64_t writes = 0;

private:
    mpq::GuestMemory& m_;
};

class Line final : public mpq::pci::IrqLine {
public:
    void set_level(bool l) override { level = l; }
    bool level = false;
};

[[noreturn]] void fail(const char* what, size_t op_offset) {
    std::fprintf(stderr, "edu_fuzz: %s (op %zu)\n", what, op_offset / 8);
    std::abort();
}

unsigned width(uint8_t sel) { return 1u << (sel & 3); }  // 1, 2, 4, 8

void do_op(mpq::hw::Edu& edu, mpq::ManualWorkQueue& timers, const uint8_t* op) {
    uint8_t kind = op[0] % 8;
    unsigned size = width(op[1]);
    uint32_t off;
    uint32_t v32;
    std::memcpy(&v32, op + 4, 4);
    uint16_t o16;
    std::memcpy(&o16, op + 2, 2);
    off = o16;
    // 8-byte values repeat the 32 bits, so ~0 and large counts are reachable.
    uint64_t val = (static_cast<uint64_t>(v32) << 32) | v32;
    switch (kind) {
    case 0:
    case 1:
        // Registers live below 0x100; the high bits of the size byte reach the rest of the BAR.
        if (op[1] & 0x80) off = (static_cast<uint32_t>(o16) << 4) % mpq::hw::kEduMmioSize;
        else off &= 0xff;
        if (off > mpq::hw::kEduMmioSize - size) off = mpq::hw::kEduMmioSize - size;
        if (kind == 0) (void)edu.bar_read(0, off, size);
        else edu.bar_write(0, off, size == 8 ? val : v32, size);
        break;
    case 2:
    case 3:
        if (size == 8) size = 4;
        off &= 0xff;
        if (off > 256 - size) off = 256 - size;
        if (kind == 2) (void)edu.config_read(off, size);
        else edu.config_write(off, v32, size);
        break;
    case 4: timers.run_deferred(); break;
    case 5: timers.advance(static_cast<uint64_t>(v32) * 1000); break;  // up to ~71 min of guest time
    case 6: edu.pci_reset(); break;
    case 7: timers.advance(mpq::hw::kEduDmaDelayNs); break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    size_t ops_len = static_cast<size_t>(data[0] | (data[1] << 8)) * 8;
    data += 2;
    size -= 2;
    if (ops_len > size) ops_len = size - size % 8;
    const uint8_t* ops = data;
    std::vector<uint8_t> ram(kRamSize);
    std::memcpy(ram.data(), data + ops_len, std::min(size - ops_len, kRamSize));

    mpq::ManualWorkQueue timers;
    mpq::GuestMemory mem;
    if (!mem.set_host_region(0, ram.data(), ram.size()).ok()) std::abort();
    WatchedMemory watched(mem);
    Line line;
    {
        mpq::hw::Edu edu(timers, mpq::hw::kEduDefaultDmaMask);
        edu.attach_dma(&watched);
        edu.attach_irq(&line);
        bool reset_seen = false;
        for (size_t i = 0; i + 8 <= ops_len; i += 8) {
            // Guest memory is written only when time passes with a DMA to
            // RAM running, once per transfer.
            const uint8_t kind = ops[i] % 8;
            const bool time_op = kind == 4 || kind == 5 || kind == 7;
            const bool may_write = time_op && (edu.state().dma_cmd & mpq::hw::kEduDmaRun) &&
                                   (edu.state().dma_cmd & mpq::hw::kEduDmaToRam);
            const uint64_t writes_before = watched.writes;
            do_op(edu, timers, ops + i);
            if (watched.writes - writes_before > (may_write ? 1u : 0u))
                fail("guest memory written without a DMA to RAM", i);
            // INTx: asserted exactly when some cause is pending and not
            // masked. A PCI reset lowers it and keeps the causes, as QEMU's
            // edu does, until the next raise or until no cause is left.
            const bool level = edu.config_state().irq_level;
            if (kind == 6) reset_seen = true;
            else if (level || edu.state().irq_status == 0) reset_seen = false;
            if (!reset_seen && level != (edu.state().irq_status != 0)) fail("interrupt status and level disagree", i);
            if (line.level != (level && !(edu.command() & mpq::pci::kCmdIntxDisable)))
                fail("INTx line does not follow level and INTx-disable", i);
        }
    }
    timers.advance(mpq::hw::kEduDmaDelayNs);  // pending work of a destroyed device is a no-op
    return 0;
}
