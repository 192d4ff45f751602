#include "vmm/pci_bus.h"

namespace mpq::vmm {

Status PciBus::add(int devfn, std::string id, pci::PciFunction* fn) {
    if (devfn < 0 || devfn >= kNumDevfn) return fail("PCI address {:#x} out of range", devfn);
    if (slots_[devfn]) {
        return fail("PCI: slot {} function {} not available for {}", devfn_slot(devfn),
                    devfn_fn(devfn), id);
    }
    slots_[devfn] = fn;
    list_.push_back({devfn, std::move(id), fn});
    decoders_.push_back(fn);
    return {};
}

void PciBus::remove(pci::PciFunction* fn) {
    for (auto& s : slots_)
        if (s == fn) s = nullptr;
    std::erase_if(list_, [fn](const PciSlot& s) { return s.fn == fn; });
    std::erase_if(decoders_, [fn](pci::PciFunction* d) { return d == fn; });
}

Result<int> PciBus::free_devfn() const {
    for (int slot = kFirstDeviceSlot; slot < 32; ++slot) {
        bool used = false;
        for (int f = 0; f < 8; ++f) used |= slots_[make_devfn(slot, f)] != nullptr;
        if (!used) return make_devfn(slot, 0);
    }
    return fail("PCI: no free slot for device");
}

std::optional<PciDecode> PciBus::decode(pci::AddressSpace space, uint64_t addr,
                                        unsigned size) const {
    for (auto* fn : decoders_) {
        if (auto hit = fn->decode(space, addr, size)) return PciDecode{fn, *hit};
    }
    return std::nullopt;
}

uint32_t PciBus::config_read(int bus, int devfn, uint32_t off, unsigned len) const {
    uint32_t ones = len >= 4 ? 0xffffffffu : (1u << (8 * len)) - 1;
    pci::PciFunction* fn = bus == 0 ? at(devfn) : nullptr;
    if (!fn || off >= pci::kConfigSpaceSize) return ones;
    if (off + len > pci::kConfigSpaceSize) len = pci::kConfigSpaceSize - off;
    // A 3-byte remainder is read as 2 + 1 so that functions only see 1/2/4.
    if (len == 3) {
        return fn->config_read(off, 2) | (fn->config_read(off + 2, 1) << 16);
    }
    return fn->config_read(off, len);
}

void PciBus::config_write(int bus, int devfn, uint32_t off, uint32_t val, unsigned len) {
    pci::PciFunction* fn = bus == 0 ? at(devfn) : nullptr;
    if (!fn || off >= pci::kConfigSpaceSize) return;
    if (off + len > pci::kConfigSpaceSize) len = pci::kConfigSpaceSize - off;
    if (len == 3) {
        fn->config_write(off, val & 0xffff, 2);
        fn->config_write(off + 2, (val >> 16) & 0xff, 1);
        return;
    }
    fn->config_write(off, val, len);
}

bool PciBus::io_read(uint16_t port, unsigned size, uint32_t* val) {
    if (port == kPortResetControl && size == 1) {
        *val = reset_control_;
        return true;
    }
    if (port >= kPortConfigAddress && port < kPortConfigAddress + 4) {
        // Only a 32-bit access at 0xcf8 reaches the address register.
        *val = (port == kPortConfigAddress && size == 4) ? config_address_ : 0xffffffffu;
        if (size < 4) *val &= (1u << (8 * size)) - 1;
        return true;
    }
    if (port >= kPortConfigData && port < kPortConfigData + 4) {
        uint32_t a = config_address_;
        if (!(a & kConfigEnable)) {
            *val = size >= 4 ? 0xffffffffu : (1u << (8 * size)) - 1;
            return true;
        }
        uint32_t off = (a | (port & 3u)) & 0xffu;
        *val = config_read((a >> 16) & 0xff, (a >> 8) & 0xff, off, size);
        return true;
    }
    return false;
}

bool PciBus::io_write(uint16_t port, uint32_t val, unsigned size) {
    if (port == kPortResetControl && size == 1) {
        // RCR: bit 2 requests a reset (bit 1 selects hard reset); only bit 1 is stored.
        reset_control_ = val & 0x02;
        if ((val & 0x04) && on_reset_control) on_reset_control(static_cast<uint8_t>(val));
        return true;
    }
    if (port >= kPortConfigAddress && port < kPortConfigAddress + 4) {
        if (port == kPortConfigAddress && size == 4) config_address_ = val;
        return true;
    }
    if (port >= kPortConfigData && port < kPortConfigData + 4) {
        uint32_t a = config_address_;
        if (!(a & kConfigEnable)) return true;
        uint32_t off = (a | (port & 3u)) & 0xffu;
        config_write((a >> 16) & 0xff, (a >> 8) & 0xff, off, val, size);
        return true;
    }
    return false;
}

}  // namespace mpq::vmm
