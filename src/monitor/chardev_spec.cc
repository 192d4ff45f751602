#include "monitor/chardev_spec.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

namespace mpq::monitor {
namespace {

constexpr size_t kMaxOptString = 4096;   // a command-line argument, not a document
constexpr size_t kMaxUnixPath = 107;     // sockaddr_un::sun_path minus the NUL

Result<uint16_t> parse_port(std::string_view s) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v > 65535)
        return fail("invalid port '{}'", s);
    return static_cast<uint16_t>(v);
}

Status check_path(std::string_view path) {
    if (path.empty()) return fail("chardev: socket path is empty");
    if (path.size() > kMaxUnixPath)
        return fail("chardev: socket path too long ({} > {} bytes)", path.size(), kMaxUnixPath);
    if (path.find('\0') != std::string_view::npos) return fail("chardev: NUL in socket path");
    return {};
}

// Applies the socket flags shared by the shorthand and -chardev forms.
// Returns false when `key` is not one of them.
Result<bool> apply_socket_flag(ChardevSpec& c, std::string_view key, std::string_view val,
                               bool has_val) {
    if (key == "server") {
        auto b = parse_qemu_bool(key, has_val ? val : "on");
        if (!b) return b.take_error();
        c.server = *b ? ServerMode::Server : ServerMode::Client;
        return true;
    }
    if (key == "wait") {
        auto b = parse_qemu_bool(key, has_val ? val : "on");
        if (!b) return b.take_error();
        c.wait = *b ? WaitMode::Wait : WaitMode::NoWait;
        return true;
    }
    if (key == "nowait" && !has_val) {
        c.wait = WaitMode::NoWait;
        return true;
    }
    // Accepted for compatibility; they change nothing for a monitor socket.
    if (key == "nodelay" || key == "ipv4" || key == "ipv6") {
        if (has_val) {
            auto b = parse_qemu_bool(key, val);
            if (!b) return b.take_error();
        }
        return true;
    }
    return false;
}

}  // namespace

Result<bool> parse_qemu_bool(std::string_view key, std::string_view v) {
    if (v == "on" || v == "yes" || v == "true") return true;
    if (v == "off" || v == "no" || v == "false") return false;
    return fail("Parameter '{}' expects 'on' or 'off'", key);
}

Result<std::vector<QemuOpt>> split_qemu_opts(std::string_view s) {
    if (s.size() > kMaxOptString) return fail("option string too long ({} bytes)", s.size());
    std::vector<QemuOpt> out;
    std::string cur;
    auto push = [&]() -> Status {
        if (cur.empty()) return fail("empty parameter in '{}'", s);
        auto eq = cur.find('=');
        if (eq == std::string::npos) {
            out.push_back(QemuOpt{cur, std::string(), false});
        } else {
            if (eq == 0) return fail("parameter without a name in '{}'", s);
            out.push_back(QemuOpt{cur.substr(0, eq), cur.substr(eq + 1), true});
        }
        cur.clear();
        return {};
    };
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == ',') {
            if (i + 1 < s.size() && s[i + 1] == ',') {  // ",," is a literal comma
                cur.push_back(',');
                ++i;
                continue;
            }
            MPQ_TRY(push());
            continue;
        }
        cur.push_back(s[i]);
    }
    MPQ_TRY(push());
    return out;
}

std::string ChardevSpec::describe() const {
    const char* srv = server == ServerMode::Server ? ",server=on" : "";
    switch (kind) {
    case ChardevKind::Unix: return fmt::format("unix:{}{}", path, srv);
    case ChardevKind::Tcp:
        return fmt::format("tcp:{}:{}{}", host.empty() ? "127.0.0.1" : host, port, srv);
    case ChardevKind::Stdio: return "stdio";
    case ChardevKind::Null: return "null";
    }
    return "unknown";
}

Result<ChardevSpec> parse_chardev_shorthand(std::string_view spec, std::string id) {
    ChardevSpec c;
    c.id = std::move(id);
    if (spec == "stdio") {
        c.kind = ChardevKind::Stdio;
        return c;
    }
    if (spec == "none" || spec == "null") {
        c.kind = ChardevKind::Null;
        return c;
    }
    auto opts_r = split_qemu_opts(spec);
    if (!opts_r) return opts_r.take_error();
    auto& opts = *opts_r;
    const std::string& head = opts.front().key;
    if (opts.front().has_value)
        return fail("chardev: '{}': expected unix:PATH, tcp:HOST:PORT or stdio", spec);
    if (head.rfind("unix:", 0) == 0) {
        c.kind = ChardevKind::Unix;
        c.path = head.substr(5);
        MPQ_TRY(check_path(c.path));
    } else if (head.rfind("tcp:", 0) == 0) {
        c.kind = ChardevKind::Tcp;
        std::string_view hp = std::string_view(head).substr(4);
        auto colon = hp.rfind(':');
        if (colon == std::string_view::npos) return fail("chardev: '{}': missing port", spec);
        std::string_view host = hp.substr(0, colon);
        if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
            host = host.substr(1, host.size() - 2);  // [::1]
        c.host = std::string(host);
        auto port = parse_port(hp.substr(colon + 1));
        if (!port) return fail("chardev: '{}': {}", spec, port.error().message);
        c.port = *port;
    } else {
        return fail("chardev: '{}': unsupported backend (unix:, tcp:, stdio, none)", spec);
    }
    for (size_t i = 1; i < opts.size(); ++i) {
        const auto& [k, v, has_val] = opts[i];
        auto r = apply_socket_flag(c, k, v, has_val);
        if (!r) return fail("chardev: {}", r.error().message);
        if (!*r) return fail("chardev: Invalid parameter '{}'", k);
    }
    return c;
}

Result<ChardevSpec> parse_chardev_option(std::string_view optstr) {
    auto opts_r = split_qemu_opts(optstr);
    if (!opts_r) return opts_r.take_error();
    auto& opts = *opts_r;
    ChardevSpec c;
    std::string backend = opts.front().key;
    if (opts.front().has_value) {
        // "backend=socket,..." is also accepted by QEMU.
        if (backend != "backend") return fail("-chardev: missing backend in '{}'", optstr);
        backend = opts.front().value;
    }
    bool have_port = false;
    if (backend == "socket") {
        c.server = ServerMode::Client;
        c.wait = WaitMode::Wait;
    } else if (backend == "stdio") {
        c.kind = ChardevKind::Stdio;
    } else if (backend == "null") {
        c.kind = ChardevKind::Null;
    } else {
        return fail("-chardev: backend '{}' is not supported here (socket, stdio, null)", backend);
    }
    for (size_t i = 1; i < opts.size(); ++i) {
        const auto& [k, v, has_val] = opts[i];
        if (k == "id") {
            c.id = v;
            continue;
        }
        if (backend == "stdio" && k == "signal") {
            auto b = parse_qemu_bool(k, has_val ? v : "on");
            if (!b) return fail("-chardev: {}", b.error().message);
            continue;
        }
        if (backend != "socket") return fail("-chardev: Invalid parameter '{}'", k);
        if (k == "path") {
            c.kind = ChardevKind::Unix;
            c.path = v;
            MPQ_TRY(check_path(c.path));
            continue;
        }
        if (k == "host") {
            c.host = v;
            continue;
        }
        if (k == "port") {
            auto p = parse_port(v);
            if (!p) return fail("-chardev: {}", p.error().message);
            c.port = *p;
            have_port = true;
            continue;
        }
        auto r = apply_socket_flag(c, k, v, has_val);
        if (!r) return fail("-chardev: {}", r.error().message);
        if (!*r) return fail("-chardev: Invalid parameter '{}'", k);
    }
    if (c.id.empty()) return fail("-chardev: Parameter 'id' is missing");
    if (c.id.size() > 127 || !std::all_of(c.id.begin(), c.id.end(), [](char ch) {
            return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.';
        }) || !std::isalpha(static_cast<unsigned char>(c.id[0])))
        return fail("-chardev: Parameter 'id' expects an identifier");
    if (backend == "socket") {
        if (c.kind == ChardevKind::Unix && have_port)
            return fail("-chardev: path and port are mutually exclusive");
        if (c.kind != ChardevKind::Unix) {
            if (!have_port) return fail("-chardev: socket needs path= or host=/port=");
            c.kind = ChardevKind::Tcp;
        }
    }
    return c;
}

Result<bool> MonitorOptions::consume(std::string_view opt, std::string_view arg) {
    if (opt.rfind("--", 0) == 0) opt.remove_prefix(1);
    if (opt == "-monitor" || opt == "-qmp" || opt == "-qmp-pretty") {
        std::string label = fmt::format("compat_monitor{}", compat_index_++);
        auto c = parse_chardev_shorthand(arg, label);
        if (!c) return fail("{} {}: {}", opt, arg, c.error().message);
        if (c->kind == ChardevKind::Null) return true;  // "-monitor none"
        MonitorSpec m;
        m.mode = opt == "-monitor" ? MonitorMode::Hmp : MonitorMode::Qmp;
        m.pretty = opt == "-qmp-pretty" ? Pretty::On : Pretty::Off;
        m.chardev = std::move(*c);
        monitors_.push_back(std::move(m));
        return true;
    }
    if (opt == "-chardev") {
        auto c = parse_chardev_option(arg);
        if (!c) return fail("-chardev {}: {}", arg, c.error().message);
        for (const auto& existing : chardevs_)
            if (existing.id == c->id) return fail("-chardev: duplicate ID '{}'", c->id);
        chardevs_.push_back(std::move(*c));
        return true;
    }
    if (opt == "-mon") {
        auto opts = split_qemu_opts(arg);
        if (!opts) return fail("-mon {}: {}", arg, opts.error().message);
        Mon m{"", MonitorMode::Hmp, Pretty::Off};
        for (const auto& [k, v, has_val] : *opts) {
            if (k == "chardev") {
                m.chardev_id = v;
            } else if (k == "mode") {
                if (v == "readline") m.mode = MonitorMode::Hmp;
                else if (v == "control") m.mode = MonitorMode::Qmp;
                else return fail("-mon: Parameter 'mode' expects 'readline' or 'control'");
            } else if (k == "pretty") {
                auto b = parse_qemu_bool(k, has_val ? v : "on");
                if (!b) return fail("-mon: {}", b.error().message);
                m.pretty = *b ? Pretty::On : Pretty::Off;
            } else if (k != "id") {
                return fail("-mon: Invalid parameter '{}'", k);
            }
        }
        if (m.chardev_id.empty()) return fail("-mon: Parameter 'chardev' is missing");
        mons_.push_back(std::move(m));
        return true;
    }
    return false;
}

Status MonitorOptions::finish() {
    if (finished_) return {};
    for (const auto& m : mons_) {
        auto it = std::find_if(chardevs_.begin(), chardevs_.end(),
                               [&](const ChardevSpec& c) { return c.id == m.chardev_id; });
        if (it == chardevs_.end()) return fail("-mon: chardev '{}' not found", m.chardev_id);
        if (std::find(used_.begin(), used_.end(), m.chardev_id) != used_.end())
            return fail("-mon: chardev '{}' is already in use", m.chardev_id);
        used_.push_back(m.chardev_id);
        if (it->kind == ChardevKind::Null) continue;
        monitors_.push_back(MonitorSpec{m.mode, m.pretty, *it});
    }
    unsigned stdio = 0;
    for (const auto& m : monitors_) {
        if (m.chardev.kind == ChardevKind::Stdio) ++stdio;
        if (m.chardev.kind == ChardevKind::Tcp && m.chardev.server == ServerMode::Client &&
            m.chardev.host.empty())
            return fail("chardev '{}': a client socket needs a host", m.chardev.id);
    }
    if (stdio > 1) return fail("only one monitor may use stdio");
    finished_ = true;
    return {};
}

std::vector<ChardevSpec> MonitorOptions::unused_chardevs() const {
    std::vector<ChardevSpec> out;
    for (const auto& c : chardevs_)
        if (std::find(used_.begin(), used_.end(), c.id) == used_.end()) out.push_back(c);
    return out;
}

}  // namespace mpq::monitor
