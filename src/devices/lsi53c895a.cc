// Registration of the LSI53C895A SCSI controller (model: src/hw/lsi*).
#include "devices/types.h"
#include "hw/lsi53c895a.h"
#include "util/event_loop.h"

namespace mpq::devices {
namespace {

Result<Built> build_lsi(const DeviceConfig&, BuildContext& ctx) {
    auto lsi = hw::make_lsi53c895a(ctx.loop, ctx.name);
    Built b;
    b.scsi_bus = &lsi->bus();
    b.pci = std::move(lsi);
    return b;
}

}  // namespace

const DeviceType kLsi53c895aType{
    .name = "lsi53c895a",
    .description = "LSI53C895A SCSI controller (1000:0012), one SCSI bus ID.0",
    .kind = DeviceKind::PciFunction,
    .scsi_bus = ScsiBusProvider::Yes,
    .props = {},
    .build = build_lsi,
    .alias = "lsi",
};

}  // namespace mpq::devices
