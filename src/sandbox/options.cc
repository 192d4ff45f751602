// `-sandbox` and `-run-with` parsing (QEMU's syntax: `on|off` is the implied
// `enable` key, then key=value pairs separated by commas; ",," is a literal
// comma inside a value).
#include <charconv>
#include <string>
#include <utility>

#include "sandbox/sandbox.h"

namespace mpq::sandbox {
namespace {

constexpr size_t kMaxOptionLength = 4096;  // a command-line value, not a file

// Splits on single commas; ",," stays a comma in the value.
Result<std::vector<std::string>> split_commas(std::string_view s) {
    std::vector<std::string> parts(1);
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == ',') {
            if (i + 1 < s.size() && s[i + 1] == ',') {
                parts.back().push_back(',');
                ++i;
            } else {
                parts.emplace_back();
            }
        } else {
            parts.back().push_back(s[i]);
        }
    }
    return parts;
}

Result<bool> parse_bool(std::string_view key, std::string_view v) {
    if (v == "on" || v == "yes" || v == "true") return true;
    if (v == "off" || v == "no" || v == "false") return false;
    return fail("-sandbox: {} expects on or off, not '{}'", key, v);
}

Result<Group> parse_group(std::string_view key, std::string_view v) {
    if (v == "deny") return Group::Deny;
    if (v == "allow") return Group::Allow;
    // QEMU's elevateprivileges=children also sets no_new_privs, which we
    // always do: same as deny here.
    if (key == "elevateprivileges" && v == "children") return Group::Deny;
    return fail("-sandbox: invalid argument '{}' for {} (allow or deny)", v, key);
}

}  // namespace

Result<SandboxOptions> parse_option(std::string_view value, SandboxOptions base) {
    if (value.size() > kMaxOptionLength) return fail("-sandbox: value too long");
    auto parts = split_commas(value);
    MPQ_TRY(parts);
    SandboxOptions o = std::move(base);
    bool first = true;
    for (const std::string& part : *parts) {
        std::string_view p = part;
        size_t eq = p.find('=');
        std::string_view key, val;
        if (eq == std::string_view::npos) {
            if (!first) return fail("-sandbox: '{}' needs a value (key=value)", p);
            key = "enable";
            val = p;
        } else {
            key = p.substr(0, eq);
            val = p.substr(eq + 1);
        }
        first = false;
        if (key == "enable") {
            auto b = parse_bool(key, val);
            if (!b) return b.take_error();
            o.mode = *b ? Mode::On : Mode::Off;
        } else if (key == "obsolete" || key == "elevateprivileges" || key == "spawn" ||
                   key == "resourcecontrol") {
            auto g = parse_group(key, val);
            if (!g) return g.take_error();
            if (key == "obsolete") o.obsolete = *g;
            else if (key == "elevateprivileges") o.elevate_privileges = *g;
            else if (key == "spawn") o.spawn = *g;
            else o.resource_control = *g;
        } else if (key == "action") {
            if (val == "kill") o.action = Action::Kill;
            else if (val == "log") o.action = Action::Log;
            else if (val == "trap") o.action = Action::Trap;
            else return fail("-sandbox: action must be kill, log or trap, not '{}'", val);
        } else if (key == "namespaces") {
            auto b = parse_bool(key, val);
            if (!b) return b.take_error();
            o.namespaces = *b ? Namespaces::New : Namespaces::Keep;
        } else if (key == "pidns") {
            auto b = parse_bool(key, val);
            if (!b) return b.take_error();
            o.pid_namespace = *b ? Namespaces::New : Namespaces::Keep;
        } else if (key == "open") {
            if (val == "deny") o.open = OpenPolicy::Deny;
            else if (val == "ro") o.open = OpenPolicy::ReadOnly;
            else if (val == "rw") o.open = OpenPolicy::ReadWrite;
            else return fail("-sandbox: open must be deny, ro or rw, not '{}'", val);
        } else if (key == "nofile-margin") {
            unsigned n = 0;
            auto [ptr, ec] = std::from_chars(val.data(), val.data() + val.size(), n);
            if (ec != std::errc() || ptr != val.data() + val.size() || val.empty() || n > 65536)
                return fail("-sandbox: nofile-margin must be a number 0..65536, not '{}'", val);
            o.nofile_margin = n;
        } else {
            return fail("-sandbox: unknown parameter '{}'", key);
        }
    }
    return o;
}

Status parse_run_with(std::string_view value, SandboxOptions& opts) {
    if (value.size() > kMaxOptionLength) return fail("-run-with: value too long");
    auto parts = split_commas(value);
    MPQ_TRY(parts);
    for (const std::string& part : *parts) {
        std::string_view p = part;
        if (p.starts_with("user=")) {
            std::string_view name = p.substr(5);
            if (name.empty() || name.size() > 256 || name.find('\0') != std::string_view::npos)
                return fail("-run-with: user= needs a user name");
            opts.run_as_user = std::string(name);
        } else {
            return fail("-run-with: unknown parameter '{}' (only user=NAME)", p);
        }
    }
    return {};
}

}  // namespace mpq::sandbox
