// The device registry: every device type either program can build, each
// registered once (src/devices/<type>.cc) with its name, its QEMU-style
// properties (type, default), a factory, and whether it exposes a SCSI bus.
// qemu-scsi-dev and mpqemu-system-x86_64 build devices only from here (see
// device_set.h), and parse -device and -drive only through parse_device()
// and parse_drive(); the monitors describe what was built from the same
// entries.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "block/block.h"
#include "pci/pci_device.h"
#include "scsi/scsi.h"
#include "util/options.h"
#include "util/result.h"

namespace mpq {
class EventLoop;
class DmaSpace;
class WorkQueue;
}  // namespace mpq

namespace mpq::devices {

enum class PropType : uint8_t {
    String,
    Bool,     // on/off, yes/no, true/false
    Uint,     // decimal or 0x hex, at most PropDef::max
    Size,     // 512, 4k, 1M ...
    PciAddr,  // SLOT[.FN], hex
};

struct PropDef {
    std::string_view name;
    PropType type;
    std::string_view default_value;  // "" = unset unless given
    uint64_t max = UINT64_MAX;       // Uint only
    std::string_view help = {};
};

enum class DeviceKind : uint8_t {
    PciFunction,  // plugs into the PCI bus (the VMM's, or a proxy's across the wire)
    ScsiDevice,   // plugs into a SCSI bus of another device
};
enum class ScsiBusProvider : uint8_t { No, Yes };

// Parsed -device properties: every given one checked against its PropDef,
// defaults filled in for the others.
class PropValues {
public:
    bool given(std::string_view name) const;
    // Value as typed (or the default); "" if neither.
    std::string str(std::string_view name) const;
    // Typed values; the parser already checked them, so these cannot fail
    // for a property of the right type.
    uint64_t uint(std::string_view name) const;
    bool flag(std::string_view name) const;
    // PciAddr: devfn (slot << 3 | fn), or -1 when not given.
    int devfn(std::string_view name) const;

    void set(std::string name, std::string value, bool given);

private:
    struct Item {
        std::string name, value;
        bool given;
    };
    const Item* find(std::string_view name) const;
    std::vector<Item> items_;
};

struct DeviceType;

struct DeviceConfig {
    const DeviceType* type = nullptr;
    std::string id;  // "" when none was given
    PropValues props;
};

// What a factory may use. The device set fills it in.
struct BuildContext {
    // The program's event loop (also a WorkQueue): fds, block I/O, and work
    // on host time such as the LSI's SCRIPTS yields, which must go on even
    // while a VMM's virtual clock stands still.
    EventLoop& loop;
    DmaSpace* dma;             // guest memory as the device's bus master sees it
    // Deferred work and timers on guest time: the device process's event
    // loop, the VMM's virtual clock, a ManualWorkQueue in tests.
    WorkQueue& timers;
    std::string name;          // the device's id, or a generated one
    // ScsiDevice: the bus and target it goes to (free), and its drive.
    scsi::Bus* bus = nullptr;
    unsigned scsi_id = 0;
    block::BlockBackend* drive = nullptr;
};

// What a factory built.
struct Built {
    std::unique_ptr<pci::PciDevice> pci;   // PciFunction
    scsi::Bus* scsi_bus = nullptr;         // ScsiBusProvider::Yes: owned by `pci`
    std::unique_ptr<scsi::Device> scsi;    // ScsiDevice: the set attaches it
};

struct DeviceType {
    std::string_view name;
    std::string_view description;  // one line, for -device help
    DeviceKind kind;
    ScsiBusProvider scsi_bus;
    std::span<const PropDef> props;  // type-specific; see common_props()
    Result<Built> (*build)(const DeviceConfig& cfg, BuildContext& ctx);
    std::string_view alias = {};  // another accepted name (QEMU's "lsi")
};

// Every registered type, in registration order.
std::span<const DeviceType* const> device_types();
const DeviceType* find_device_type(std::string_view name);
// Properties every type of `kind` has besides its own: driver and id; for
// PCI functions addr, multifunction ...; for SCSI devices their address
// (bus, channel, scsi-id, lun) and drive, which the device set resolves.
std::span<const PropDef> common_props(DeviceKind kind);
// "name: description" lines for -device help.
std::string device_help();

// Checks one -device argument against its type: an unknown driver, an
// unknown property or a value of the wrong form is refused with QEMU's
// wording (the caller prefixes the option).
Result<DeviceConfig> parse_device(const opts::KeyValues& kv);

// One -drive argument: the front-end keys (if, media, snapshot ...) checked
// here, the rest handed to the block layer.
Result<block::DriveOptions> parse_drive(const opts::KeyValues& kv);

// QEMU's PCI address syntax: "SLOT[.FN]" in hex (an optional 0x).
Result<int> parse_pci_addr(std::string_view s);

}  // namespace mpq::devices
