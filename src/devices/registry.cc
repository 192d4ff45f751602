#include "devices/registry.h"

#include <algorithm>
#include <cctype>

#include "devices/types.h"

namespace mpq::devices {
namespace {

// The one list of device types. A new type: its model in src/hw (or
// src/scsi), its registration in src/devices/<name>.cc, one line here.
constexpr const DeviceType* kTypes[] = {
    &kLsi53c895aType,
    &kScsiHdType,
    &kEduType,
};

constexpr PropDef kBaseProps[] = {
    {"driver", PropType::String, ""},
    {"id", PropType::String, ""},
};

// Accepted on every PCI function, as QEMU's PCIDevice has them. Only addr
// and multifunction mean something here; the others are checked and kept.
constexpr PropDef kPciProps[] = {
    {"driver", PropType::String, ""},
    {"id", PropType::String, ""},
    {"addr", PropType::PciAddr, ""},
    {"multifunction", PropType::Bool, "off"},
    {"romfile", PropType::String, ""},
    {"rombar", PropType::Uint, "1", UINT32_MAX},
    {"failover_pair_id", PropType::String, ""},
    {"acpi-index", PropType::Uint, "0", UINT32_MAX},
};

constexpr PropDef kScsiProps[] = {
    {"driver", PropType::String, ""},
    {"id", PropType::String, ""},
    {"bus", PropType::String, ""},
    {"channel", PropType::Uint, "0", UINT32_MAX},
    {"scsi-id", PropType::Uint, "", UINT32_MAX},
    {"lun", PropType::Uint, "0", UINT32_MAX},
    {"drive", PropType::String, ""},
};

const PropDef* find_prop(const DeviceType& t, std::string_view key) {
    for (const PropDef& p : common_props(t.kind))
        if (p.name == key) return &p;
    for (const PropDef& p : t.props)
        if (p.name == key) return &p;
    return nullptr;
}

Status check_value(const DeviceType& t, const PropDef& p, std::string_view v) {
    switch (p.type) {
    case PropType::String:
        return {};
    case PropType::Bool:
        if (auto b = opts::parse_bool(v, p.name); !b.ok()) return b.take_error();
        return {};
    case PropType::Uint:
        if (auto u = opts::parse_uint(v, p.name, p.max); !u.ok()) return u.take_error();
        return {};
    case PropType::Size:
        if (auto u = opts::parse_size(v, p.name); !u.ok()) return u.take_error();
        return {};
    case PropType::PciAddr:
        if (!parse_pci_addr(v).ok()) return fail("Property '{}.{}' doesn't take value '{}'", t.name, p.name, v);
        return {};
    }
    return {};
}

}  // namespace

std::span<const DeviceType* const> device_types() { return kTypes; }

const DeviceType* find_device_type(std::string_view name) {
    for (const DeviceType* t : kTypes)
        if (t->name == name || (!t->alias.empty() && t->alias == name)) return t;
    return nullptr;
}

std::span<const PropDef> common_props(DeviceKind kind) {
    switch (kind) {
    case DeviceKind::PciFunction: return kPciProps;
    case DeviceKind::ScsiDevice: return kScsiProps;
    }
    return kBaseProps;
}

std::string device_help() {
    std::string out = "available devices:";
    for (const DeviceType* t : kTypes) out += fmt::format("\n  {:<12} {}", t->name, t->description);
    return out;
}

bool PropValues::given(std::string_view name) const {
    const Item* i = find(name);
    return i && i->given;
}

std::string PropValues::str(std::string_view name) const {
    const Item* i = find(name);
    return i ? i->value : std::string();
}

uint64_t PropValues::uint(std::string_view name) const {
    const Item* i = find(name);
    if (!i || i->value.empty()) return 0;
    if (auto v = opts::parse_uint(i->value, name); v.ok()) return *v;
    if (auto v = opts::parse_size(i->value, name); v.ok()) return *v;
    return 0;
}

bool PropValues::flag(std::string_view name) const {
    const Item* i = find(name);
    if (!i || i->value.empty()) return false;
    auto b = opts::parse_bool(i->value, name);
    return b.ok() && *b;
}

int PropValues::devfn(std::string_view name) const {
    const Item* i = find(name);
    if (!i || i->value.empty()) return -1;
    auto d = parse_pci_addr(i->value);
    return d.ok() ? *d : -1;
}

void PropValues::set(std::string name, std::string value, bool given) {
    for (Item& i : items_) {
        if (i.name == name) {
            i.value = std::move(value);
            i.given = given;
            return;
        }
    }
    items_.push_back(Item{std::move(name), std::move(value), given});
}

const PropValues::Item* PropValues::find(std::string_view name) const {
    for (const Item& i : items_)
        if (i.name == name) return &i;
    return nullptr;
}

Result<DeviceConfig> parse_device(const opts::KeyValues& kv) {
    std::string driver = kv.get("driver");
    if (driver == "help" || driver == "?") return fail("{}", device_help());
    const DeviceType* t = find_device_type(driver);
    if (!t) return fail("'{}' is not a valid device model name", driver);
    DeviceConfig cfg;
    cfg.type = t;
    for (const auto& item : kv.items) {
        const PropDef* p = find_prop(*t, item.key);
        if (!p) return fail("Property '{}.{}' not found", t->name, item.key);
        MPQ_TRY(check_value(*t, *p, item.value));
    }
    for (const PropDef& p : common_props(t->kind)) cfg.props.set(std::string(p.name), std::string(p.default_value), false);
    for (const PropDef& p : t->props) cfg.props.set(std::string(p.name), std::string(p.default_value), false);
    for (const auto& item : kv.items) cfg.props.set(item.key, item.value, true);  // the last one wins
    if (kv.has("id")) {
        cfg.id = kv.get("id");
        MPQ_TRY(opts::check_id(cfg.id));
    }
    return cfg;
}

Result<block::DriveOptions> parse_drive(const opts::KeyValues& kv) {
    static constexpr std::string_view kKeys[] = {
        "id", "file", "format", "if", "cache", "aio", "readonly", "read-only", "l2-cache-size", "media",
        "index", "discard", "detect-zeroes", "werror", "rerror", "snapshot", "cache.direct",
        "cache.no-flush", "driver", "config", "image.filename", "image.driver"};
    // What only the drive front end knows; the block layer owns the rest
    // (cache modes, aio, ...).
    static constexpr std::string_view kFrontEnd[] = {"if", "media", "index", "snapshot", "discard",
                                                     "detect-zeroes", "werror", "rerror"};
    std::string fmt_name = kv.get("format", "raw");
    for (const auto& item : kv.items)
        if (std::find(std::begin(kKeys), std::end(kKeys), item.key) == std::end(kKeys))
            return fail("Block format '{}' does not support the option '{}'", fmt_name, item.key);
    std::string id = kv.get("id");
    if (id.empty()) return fail("drive needs an id (id=ID)");
    MPQ_TRY(opts::check_id(id));
    std::string iface = kv.get("if", "none");
    if (iface != "none") return fail("if={} is not supported here (use if=none)", iface);
    if (kv.get("media", "disk") != "disk") return fail("media={} is not supported", kv.get("media"));
    if (kv.has("snapshot")) {
        auto b = opts::parse_bool(kv.get("snapshot"), "snapshot");
        if (!b.ok()) return b.take_error();
        if (*b) return fail("snapshot=on is not supported");
    }
    if (kv.get("file").empty() && kv.get("image.filename").empty())
        return fail("A block device must be specified for \"file\"");
    std::vector<std::pair<std::string, std::string>> block_kv;
    for (const auto& item : kv.items)
        if (std::find(std::begin(kFrontEnd), std::end(kFrontEnd), item.key) == std::end(kFrontEnd))
            block_kv.emplace_back(item.key, item.value);
    return block::parse_drive_options(block_kv);
}

Result<int> parse_pci_addr(std::string_view s) {
    auto hex = [](std::string_view v, int max) -> int {
        if (v.empty() || v.size() > 2) return -1;
        int x = 0;
        for (char c : v) {
            if (!std::isxdigit(static_cast<unsigned char>(c))) return -1;
            x = x * 16 + (std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                                                                     : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
        }
        return x <= max ? x : -1;
    };
    size_t dot = s.find('.');
    std::string_view slot = s.substr(0, dot);
    std::string_view fn = dot == std::string_view::npos ? std::string_view("0") : s.substr(dot + 1);
    if (slot.starts_with("0x")) slot.remove_prefix(2);
    int sl = hex(slot, 31), f = fn.size() == 1 ? hex(fn, 7) : -1;
    if (sl < 0 || f < 0) return fail("Property 'addr' doesn't take value '{}'", s);
    return (sl << 3) | f;
}

}  // namespace mpq::devices
