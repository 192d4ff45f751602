#include "hw/edu.h"

#include "util/log.h"

namespace mpq::hw {
namespace {

pci::PciIdentity edu_identity() {
    pci::PciIdentity id;
    id.vendor = kEduVendor;
    id.device = kEduDevice;
    id.revision = kEduRevision;
    id.class_code = kEduClass;
    // QEMU's default subsystem for devices that name none.
    id.subsys_vendor = 0x1af4;
    id.subsys_id = 0x1100;
    id.irq_pin = 1;
    id.bars[0] = {pci::BarKind::Mem32, kEduMmioSize};
    id.msi = {kEduMsiOffset, true, 0};  // 64-bit addresses, one vector
    return id;
}

// n! mod 2^32. From 34 on the product holds 2^32 as a factor and stays 0,
// which bounds the loop however large the guest's n.
uint32_t factorial(uint32_t n) {
    uint32_t r = 1;
    while (n > 0 && r != 0) r *= n--;
    return r;
}

// Which widths a register takes (edu.rst: 4 below 0x80, 4 or 8 above).
bool access_ok(uint64_t offset, unsigned size) {
    return offset < 0x80 ? size == 4 : (size == 4 || size == 8);
}

}  // namespace

Edu::Edu(WorkQueue& work, uint64_t dma_mask)
    : pci::PciDevice(edu_identity()), work_(work), dma_mask_(dma_mask),
      self_(std::make_shared<Edu*>(this)) {}

Edu::~Edu() {
    if (dma_timer_) work_.cancel_timer(dma_timer_);
}

uint64_t Edu::bar_read(int bar, uint64_t offset, unsigned size) {
    const uint64_t none = size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
    if (bar != 0 || !access_ok(offset, size)) return none;
    uint64_t v = ~0ull;
    switch (offset) {
    case kEduRegId: v = kEduIdValue; break;
    case kEduRegLiveness: v = st_.liveness; break;
    case kEduRegFactorial: v = st_.factorial; break;
    case kEduRegStatus: v = st_.status; break;
    case kEduRegIrqStatus: v = st_.irq_status; break;
    case kEduRegDmaSrc: v = st_.dma_src; break;
    case kEduRegDmaDst: v = st_.dma_dst; break;
    case kEduRegDmaCount: v = st_.dma_count; break;
    case kEduRegDmaCmd: v = st_.dma_cmd; break;
    default: break;
    }
    return v & none;
}

void Edu::bar_write(int bar, uint64_t offset, uint64_t val, unsigned size) {
    if (bar != 0 || !access_ok(offset, size)) return;
    if (size == 4) val &= 0xffffffffull;
    // The DMA registers are frozen while a transfer runs.
    const bool dma_busy = st_.dma_cmd & kEduDmaRun;
    switch (offset) {
    case kEduRegLiveness: st_.liveness = ~static_cast<uint32_t>(val); break;
    case kEduRegFactorial: start_factorial(static_cast<uint32_t>(val)); break;
    case kEduRegStatus:
        // Only the interrupt-enable bit is writable.
        st_.status = (st_.status & ~kEduStatusIrqFact) | (static_cast<uint32_t>(val) & kEduStatusIrqFact);
        break;
    case kEduRegIrqRaise: raise(static_cast<uint32_t>(val)); break;
    case kEduRegIrqAck: lower(static_cast<uint32_t>(val)); break;
    case kEduRegDmaSrc: if (!dma_busy) st_.dma_src = val; break;
    case kEduRegDmaDst: if (!dma_busy) st_.dma_dst = val; break;
    case kEduRegDmaCount: if (!dma_busy) st_.dma_count = val; break;
    case kEduRegDmaCmd:
        if (!(val & kEduDmaRun)) break;
        if (!dma_busy) st_.dma_cmd = val;
        // As QEMU: a start while busy only postpones the completion.
        start_dma();
        break;
    default: break;
    }
}

void Edu::start_factorial(uint32_t n) {
    if (st_.status & kEduStatusComputing) return;  // the running computation wins
    st_.factorial = n;
    st_.status |= kEduStatusComputing;
    std::weak_ptr<Edu*> weak = self_;
    work_.defer([weak] {
        if (auto s = weak.lock()) (*s)->finish_factorial();
    });
}

void Edu::finish_factorial() {
    if (!(st_.status & kEduStatusComputing)) return;
    st_.factorial = factorial(st_.factorial);
    st_.status &= ~kEduStatusComputing;
    if (st_.status & kEduStatusIrqFact) raise(kEduIrqFactorial);
}

void Edu::start_dma() {
    if (dma_timer_) work_.cancel_timer(dma_timer_);
    std::weak_ptr<Edu*> weak = self_;
    dma_timer_ = work_.add_timer(kEduDmaDelayNs, [weak] {
        if (auto s = weak.lock()) {
            (*s)->dma_timer_ = 0;
            (*s)->finish_dma();
        }
    });
}

void Edu::finish_dma() {
    if (!(st_.dma_cmd & kEduDmaRun)) return;
    const bool to_ram = st_.dma_cmd & kEduDmaToRam;
    // The device end of the transfer must lie inside the buffer; the guest
    // end is cut to the DMA mask, as QEMU does, and then goes through the
    // bounds-checked guest-memory accessor.
    const uint64_t dev_addr = to_ram ? st_.dma_src : st_.dma_dst;
    const uint64_t guest_addr = (to_ram ? st_.dma_dst : st_.dma_src) & dma_mask_;
    const uint64_t n = st_.dma_count;
    if (dev_addr < kEduDmaBufBase || n > kEduDmaBufSize || dev_addr - kEduDmaBufBase > kEduDmaBufSize - n) {
        ++stats_.dma_out_of_range;
        log::debug("edu: DMA of {} bytes at {:#x} is outside the buffer; nothing moved", n, dev_addr);
    } else {
        std::span<uint8_t> buf(st_.dma_buf.data() + (dev_addr - kEduDmaBufBase), static_cast<size_t>(n));
        Status s = to_ram ? dma_write(guest_addr, buf) : dma_read(guest_addr, buf);
        if (s.ok()) {
            ++stats_.dma_done;
        } else {
            ++stats_.dma_failed;
            log::debug("edu: DMA of {} bytes at guest {:#x} failed: {}", n, guest_addr, s.error().message);
        }
    }
    st_.dma_cmd &= ~kEduDmaRun;
    if (st_.dma_cmd & kEduDmaIrq) raise(kEduIrqDma);
}

void Edu::raise(uint32_t bits) {
    st_.irq_status |= bits;
    if (st_.irq_status) set_irq(true);
}

void Edu::lower(uint32_t bits) {
    st_.irq_status &= ~bits;
    if (!st_.irq_status) set_irq(false);
}

}  // namespace mpq::hw
