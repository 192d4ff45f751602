// Skeleton: PCI identity, BARs and SCRIPTS RAM only. The register file and
// the SCRIPTS processor replace this.
#include "hw/lsi53c895a.h"

#include <array>
#include <cstring>

namespace mpq::hw {
namespace {

pci::PciIdentity lsi_identity() {
    pci::PciIdentity id;
    id.vendor = kLsiVendor;
    id.device = kLsiDevice;
    id.class_code = kLsiClass;
    id.subsys_vendor = 0;
    id.subsys_id = 0x1000;
    id.irq_pin = 1;
    id.bars[0] = {pci::BarKind::Io, kLsiIoBarSize};
    id.bars[1] = {pci::BarKind::Mem32, kLsiMmioBarSize};
    id.bars[2] = {pci::BarKind::Mem32, kLsiRamBarSize};
    return id;
}

class LsiSkeleton final : public Lsi53c895a {
public:
    explicit LsiSkeleton(std::string id) : Lsi53c895a(lsi_identity()), id_(std::move(id)) {}

    uint64_t bar_read(int bar, uint64_t off, unsigned size) override {
        if (bar != 2 || off + size > ram_.size()) return 0;
        uint64_t v = 0;
        std::memcpy(&v, &ram_[off], size);
        return v;
    }
    void bar_write(int bar, uint64_t off, uint64_t val, unsigned size) override {
        if (bar != 2 || off + size > ram_.size()) return;
        std::memcpy(&ram_[off], &val, size);
    }
    void device_reset() override {}
    scsi::Bus& bus() override { return bus_; }
    const std::string& id() const override { return id_; }

private:
    std::string id_;
    scsi::Bus bus_;
    std::array<uint8_t, kLsiRamBarSize> ram_{};
};

}  // namespace

std::unique_ptr<Lsi53c895a> make_lsi53c895a(EventLoop& loop, const std::string& id) {
    (void)loop;
    return std::make_unique<LsiSkeleton>(id);
}

}  // namespace mpq::hw
