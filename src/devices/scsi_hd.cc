// Registration of the SCSI disk (model: src/scsi/scsi_hd*).
#include "devices/types.h"
#include "scsi/scsi_hd.h"
#include "util/event_loop.h"

namespace mpq::devices {
namespace {

constexpr PropDef kProps[] = {
    {"serial", PropType::String, ""},
    {"wwn", PropType::Uint, "0"},
    {"vendor", PropType::String, "QEMU"},
    {"product", PropType::String, "QEMU HARDDISK"},
    {"ver", PropType::String, "2.5+"},
    {"logical_block_size", PropType::Size, "512"},
    {"physical_block_size", PropType::Size, "512"},
    {"write-cache", PropType::String, "auto"},
    // Accepted for QEMU command lines; they change nothing here.
    {"removable", PropType::Bool, "off"},
    {"dpofua", PropType::Bool, "off"},
    {"rotation_rate", PropType::Uint, "0", UINT16_MAX},
    {"share-rw", PropType::Bool, "off"},
    {"bootindex", PropType::String, ""},
    {"discard_granularity", PropType::Size, "0"},
    {"min_io_size", PropType::Size, "0"},
    {"opt_io_size", PropType::Size, "0"},
};

Result<Built> build_scsi_hd(const DeviceConfig& cfg, BuildContext& ctx) {
    const PropValues& p = cfg.props;
    // The device set resolved the bus, the target id and the drive.
    if (!ctx.bus || !ctx.drive) return fail("scsi-hd: no bus or drive");
    scsi::ScsiHdProps hp;
    hp.id = cfg.id;
    hp.scsi_id = ctx.scsi_id;
    if (p.given("serial")) hp.serial = p.str("serial");
    hp.vendor = p.str("vendor");
    hp.product = p.str("product");
    hp.ver = p.str("ver");
    hp.wwn = p.uint("wwn");
    uint64_t lbs = p.uint("logical_block_size");
    if (lbs != 512 && lbs != 4096) return fail("logical_block_size must be 512 or 4096");
    hp.logical_block_size = static_cast<uint32_t>(lbs);
    if (std::string wc = p.str("write-cache"); wc != "auto") {  // auto: the model's default
        auto b = opts::parse_bool(wc, "write-cache");
        if (!b.ok()) return b.take_error();
        hp.write_cache = *b ? scsi::WriteCache::On : scsi::WriteCache::Off;
    }
    auto dev = scsi::make_scsi_hd(ctx.loop, *ctx.drive, hp);
    if (!dev.ok()) return dev.take_error();
    Built b;
    b.scsi = std::move(*dev);
    return b;
}

}  // namespace

const DeviceType kScsiHdType{
    .name = "scsi-hd",
    .description = "SCSI disk on a controller's bus (drive=ID, bus=CTRL.0, scsi-id=N)",
    .kind = DeviceKind::ScsiDevice,
    .scsi_bus = ScsiBusProvider::No,
    .props = kProps,
    .build = build_scsi_hd,
};

}  // namespace mpq::devices
