#include "pci/pci_device.h"

#include <cassert>
#include <cstring>

namespace mpq::pci {
namespace {

uint32_t bar_offset(int bar) { return kBar0 + 4 * static_cast<uint32_t>(bar); }

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint16_t get16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
uint32_t get32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }

}  // namespace

PciDevice::PciDevice(const PciIdentity& id) : id_(id) { init_config(); }

void PciDevice::init_config() {
    auto& c = cfg_.bytes;
    c.fill(0);
    wmask_.fill(0);
    w1cmask_.fill(0);
    put16(&c[kVendorId], id_.vendor);
    put16(&c[kDeviceId], id_.device);
    c[kRevision] = id_.revision;
    c[kClassProg] = static_cast<uint8_t>(id_.class_code);
    c[kClassProg + 1] = static_cast<uint8_t>(id_.class_code >> 8);
    c[kClassProg + 2] = static_cast<uint8_t>(id_.class_code >> 16);
    c[kLatencyTimer] = id_.latency_timer;
    put16(&c[kSubsysVendor], id_.subsys_vendor);
    put16(&c[kSubsysId], id_.subsys_id);
    c[kIntPin] = id_.irq_pin;

    put16(&wmask_[kCommand], kCmdWritable);
    put16(&w1cmask_[kStatus], kStatusW1c);
    wmask_[kCacheLineSize] = 0xff;
    wmask_[kIntLine] = 0xff;
    std::memset(&wmask_[kDeviceSpecific], 0xff, kConfigSpaceSize - kDeviceSpecific);

    for (int i = 0; i < kNumBars; i++) {
        const BarDesc& b = id_.bars[i];
        if (b.kind == BarKind::None) continue;
        // Our own table: sizes are powers of two, as PCI requires.
        assert(b.size >= (b.kind == BarKind::Io ? 4u : 16u) && (b.size & (b.size - 1)) == 0);
        put32(&c[bar_offset(i)], b.kind == BarKind::Io ? 1u : 0u);
        put32(&wmask_[bar_offset(i)], ~(b.size - 1));
    }
    if (id_.msi.offset != 0) init_msi();
    cfg_.irq_level = false;
}

void PciDevice::init_msi() {
    const MsiCapDesc& m = id_.msi;
    const uint32_t size = m.addr64 ? 0x0e : 0x0a;
    // Our own table: the capability lies in the device-specific area.
    assert(m.offset >= kDeviceSpecific && m.offset + size <= kConfigSpaceSize && m.log2_vectors <= 5);
    auto& c = cfg_.bytes;
    c[m.offset] = kCapIdMsi;
    c[m.offset + 1] = c[kCapPointer];  // the list so far (empty: 0)
    c[kCapPointer] = m.offset;
    put16(&c[kStatus], static_cast<uint16_t>(get16(&c[kStatus]) | kStatusCapList));
    put16(&c[m.offset + kMsiControl],
          static_cast<uint16_t>((m.addr64 ? kMsi64Bit : 0) | (m.log2_vectors << 1)));
    // As QEMU: the capability is read-only but for enable, the enabled
    // vector count, the address and the data.
    std::memset(&wmask_[m.offset], 0, size);
    put16(&wmask_[m.offset + kMsiControl], kMsiQsize | kMsiEnable);
    put32(&wmask_[m.offset + kMsiAddressLo], 0xfffffffcu);
    if (m.addr64) put32(&wmask_[m.offset + kMsiAddressHi], 0xffffffffu);
    put16(&wmask_[m.offset + size - 2], 0xffff);
}

bool PciDevice::msi_enabled() const {
    return id_.msi.offset != 0 && (get16(&cfg_.bytes[id_.msi.offset + kMsiControl]) & kMsiEnable);
}

void PciDevice::msi_config_written() {
    // Once enabled, more vectors than offered are cut back to the offer
    // (QEMU does the same; the spec leaves it undefined).
    if (!msi_enabled()) return;
    uint8_t* ctl = &cfg_.bytes[id_.msi.offset + kMsiControl];
    uint16_t v = get16(ctl);
    unsigned enabled = (v & kMsiQsize) >> 4, offered = (v & kMsiQmask) >> 1;
    if (enabled > offered) put16(ctl, static_cast<uint16_t>((v & ~kMsiQsize) | (offered << 4)));
}

uint32_t PciDevice::config_read(uint32_t off, unsigned len) {
    if (len == 0 || len > 4 || off >= kConfigSpaceSize || len > kConfigSpaceSize - off)
        return ~0u;
    uint32_t v = 0;
    std::memcpy(&v, &cfg_.bytes[off], len);  // little-endian host (x86-64)
    return v;
}

void PciDevice::config_write(uint32_t off, uint32_t val, unsigned len) {
    if (len == 0 || len > 4 || off >= kConfigSpaceSize || len > kConfigSpaceSize - off) return;
    uint16_t old_cmd = command();
    for (unsigned i = 0; i < len; i++) {
        uint8_t b = static_cast<uint8_t>(val >> (8 * i));
        uint32_t a = off + i;
        uint8_t& cur = cfg_.bytes[a];
        cur = static_cast<uint8_t>((cur & ~wmask_[a]) | (b & wmask_[a]));
        cur = static_cast<uint8_t>(cur & ~(b & w1cmask_[a]));
    }
    if ((old_cmd ^ command()) & kCmdIntxDisable) update_irq_output();
    if (id_.msi.offset != 0 && off < id_.msi.offset + 4u && off + len > id_.msi.offset + kMsiControl)
        msi_config_written();
}

uint16_t PciDevice::command() const { return get16(&cfg_.bytes[kCommand]); }
bool PciDevice::bus_master() const { return command() & kCmdMaster; }

uint64_t PciDevice::bar_address(int bar) const {
    if (bar < 0 || bar >= kNumBars || id_.bars[bar].kind == BarKind::None) return 0;
    uint32_t raw = get32(&cfg_.bytes[bar_offset(bar)]);
    return raw & ~(id_.bars[bar].size - 1);
}

// QEMU's pci_bar_address(): decoding enabled in COMMAND, base not 0, and the
// BAR must not reach the top of the 32-bit space (which also rules out the
// all-ones value software writes while sizing).
bool PciDevice::bar_enabled(int bar) const {
    if (bar < 0 || bar >= kNumBars) return false;
    const BarDesc& b = id_.bars[bar];
    if (b.kind == BarKind::None) return false;
    uint16_t need = b.kind == BarKind::Io ? kCmdIo : kCmdMem;
    if (!(command() & need)) return false;
    uint64_t base = bar_address(bar);
    uint64_t last = base + b.size - 1;
    return base != 0 && last > base && last < 0xffffffffull;
}

std::optional<BarHit> PciDevice::decode(AddressSpace space, uint64_t addr, unsigned size) const {
    if (size == 0) return std::nullopt;
    BarKind want = space == AddressSpace::Io ? BarKind::Io : BarKind::Mem32;
    for (int i = 0; i < kNumBars; i++) {
        if (id_.bars[i].kind != want || !bar_enabled(i)) continue;
        uint64_t base = bar_address(i);
        if (addr < base) continue;
        uint64_t off = addr - base;
        if (off < id_.bars[i].size && size <= id_.bars[i].size - off) return BarHit{i, off};
    }
    return std::nullopt;
}

void PciDevice::pci_reset() {
    init_config();
    update_irq_output();
    device_reset();
}

void PciDevice::attach_irq(IrqLine* line) {
    irq_ = line;
    irq_out_ = false;
    update_irq_output();
}

void PciDevice::restore_config_state(const PciConfigState& s) {
    // Only what software can change is taken from `s`; identity, BAR types
    // and other read-only bits stay ours even if the saved image is corrupt.
    PciConfigState saved = s;
    init_config();
    for (unsigned a = 0; a < kConfigSpaceSize; a++) {
        uint8_t m = wmask_[a] | w1cmask_[a];
        cfg_.bytes[a] = static_cast<uint8_t>((cfg_.bytes[a] & ~m) | (saved.bytes[a] & m));
    }
    cfg_.irq_level = saved.irq_level;
    uint16_t st = get16(&cfg_.bytes[kStatus]);
    put16(&cfg_.bytes[kStatus], cfg_.irq_level ? (st | kStatusInterrupt) : (st & ~kStatusInterrupt));
    if (id_.msi.offset != 0) msi_config_written();
    update_irq_output();
}

void PciDevice::set_irq(bool level) {
    if (cfg_.irq_level == level) return;
    cfg_.irq_level = level;
    uint16_t st = get16(&cfg_.bytes[kStatus]);
    put16(&cfg_.bytes[kStatus], level ? (st | kStatusInterrupt) : (st & ~kStatusInterrupt));
    update_irq_output();
}

void PciDevice::update_irq_output() {
    bool out = cfg_.irq_level && !(command() & kCmdIntxDisable);
    if (out == irq_out_) return;
    irq_out_ = out;
    if (irq_) irq_->set_level(out);
}

Status PciDevice::dma_read(uint64_t gpa, std::span<uint8_t> out) {
    if (!bus_master()) return fail("DMA read at {:#x}: bus mastering is disabled", gpa);
    if (!dma_) return fail("DMA read at {:#x}: no guest memory", gpa);
    return dma_->read(gpa, out);
}

Status PciDevice::dma_write(uint64_t gpa, std::span<const uint8_t> in) {
    if (!bus_master()) return fail("DMA write at {:#x}: bus mastering is disabled", gpa);
    if (!dma_) return fail("DMA write at {:#x}: no guest memory", gpa);
    return dma_->write(gpa, in);
}

}  // namespace mpq::pci
