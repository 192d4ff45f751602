// The QEMU-style option parser on hostile command lines: the input is split
// on NUL bytes into argv; the first byte picks which program's option set is
// accepted. Also drives the key=value, size, uint, bool and id helpers, and
// the device registry's -drive and -device parsers (every registered type's
// properties) on every argument. Must never crash; errors must say something.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "block/block.h"
#include "devices/registry.h"
#include "util/options.h"

namespace {

constexpr std::string_view kRemote[] = {"device", "drive", "object", "machine", "chardev",
                                        "mon", "monitor", "qmp", "name", "display",
                                        "nodefaults", "D", "d", "sandbox", "run-with", "S"};

void check_error(const mpq::Error& e) {
    if (e.message.empty()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0 || size > 8192) return 0;
    std::vector<std::string> args;
    std::string cur;
    for (size_t i = 1; i < size; ++i) {
        if (data[i] == 0) {
            args.push_back(cur);
            cur.clear();
        } else {
            cur.push_back(static_cast<char>(data[i]));
        }
    }
    args.push_back(cur);
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());

    std::vector<std::string_view> accepted;
    if (data[0] & 1) {
        accepted.assign(std::begin(kRemote), std::end(kRemote));
    } else {
        for (const auto& d : mpq::opts::option_table()) accepted.push_back(d.name);
    }
    auto cl = mpq::opts::parse_command_line(argv, accepted);
    if (!cl.ok()) {
        check_error(cl.error());
    } else {
        for (const auto& o : cl->options) {
            (void)o.where();
            // The -drive and -device consumers: every key a user can type reaches them.
            if (o.def->name == "drive") {
                auto d = mpq::devices::parse_drive(o.kv);
                if (!d.ok()) check_error(d.error());
            } else if (o.def->name == "device") {
                auto d = mpq::devices::parse_device(o.kv);
                if (!d.ok()) check_error(d.error());
                // Typed getters on every property of the parsed type.
                if (d.ok())
                    for (const auto& p : d->type->props) (void)d->props.uint(p.name), (void)d->props.flag(p.name);
            }
        }
    }
    for (const auto& a : args) {
        auto kv = mpq::opts::parse_keyvalues(a, "driver");
        if (!kv.ok()) check_error(kv.error());
        if (auto r = mpq::opts::parse_size(a, "size"); !r.ok()) check_error(r.error());
        if (auto r = mpq::opts::parse_uint(a, "n", 1u << 20); !r.ok()) check_error(r.error());
        if (auto r = mpq::opts::parse_bool(a, "b"); !r.ok()) check_error(r.error());
        if (auto r = mpq::opts::check_id(a); !r.ok()) check_error(r.error());
    }
    return 0;
}
