// Registration of QEMU's educational device (model: src/hw/edu.*).
#include "devices/types.h"
#include "hw/edu.h"

namespace mpq::devices {
namespace {

constexpr PropDef kProps[] = {
    // QEMU's default, hw::kEduDefaultDmaMask.
    {"dma_mask", PropType::Uint, "0xfffffff", UINT64_MAX, "guest addresses the DMA engine reaches"},
};

Result<Built> build_edu(const DeviceConfig& cfg, BuildContext& ctx) {
    Built b;
    b.pci = std::make_unique<hw::Edu>(ctx.timers, cfg.props.uint("dma_mask"));
    return b;
}

}  // namespace

const DeviceType kEduType{
    .name = "edu",
    .description = "QEMU's educational PCI device (1234:11e8): factorial, DMA, INTx",
    .kind = DeviceKind::PciFunction,
    .scsi_bus = ScsiBusProvider::No,
    .props = kProps,
    .build = build_edu,
};

}  // namespace mpq::devices
