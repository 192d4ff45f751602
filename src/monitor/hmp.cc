#include "monitor/hmp.h"

#include <array>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

#include "monitor/commands.h"
#include "trace/trace.h"
#include "util/options.h"

namespace mpq::monitor {
namespace {

struct HelpLine {
    const char* name;    // "quit|q"
    const char* params;  // "[cmd]"
    const char* text;
};

constexpr HelpLine kCommands[] = {
    {"block_resize", "device size", "resize a block image (size in MiB unless suffixed K, M, G, T)"},
    {"device_add", "driver[,prop=value][,...]", "add device, like -device on the command line"},
    {"device_del", "device", "remove device"},
    {"drive_add", "[-n] [[<domain>:]<bus>:]<slot> [file=file][,if=none][,...]",
     "add drive (if=none: attach it with device_add)"},
    {"help|?", "[cmd]", "show the help"},
    {"info", "[subcommand]", "show various information about the system state"},
    {"quit|q", "", "quit the emulator"},
    {"system_reset", "", "reset the system"},
    {"trace-event", "name on|off [vcpu]", "changes status of a specific trace event (vcpu: vCPU to set, default is all)"},
};

constexpr HelpLine kInfo[] = {
    {"block", "[device]", "show info of one block device or all block devices"},
    {"blockstats", "", "show block device statistics"},
    {"chardev", "", "show the character devices"},
    {"name", "", "show the current VM name"},
    {"pci", "", "show PCI info"},
    {"qtree", "", "show device tree"},
    {"remote-devices", "", "show the remote devices and their channels (mpqemu)"},
    {"status", "", "show the current VM status (running|paused)"},
    {"trace-events", "[name] [vcpu]", "show available trace-events & their state (name: event name pattern; vcpu: vCPU to query, default is any)"},
    {"version", "", "show the version of QEMU"},
    {"worker", "", "show the device worker and its restarts (mpqemu, -x-worker on)"},
};

// HMP's size arguments: an integer with an optional K/M/G/T/B suffix
// (powers of 1024), MiB when there is none, as QEMU's 'o' arguments.
bool parse_hmp_size(std::string_view text, uint64_t& out) {
    uint64_t v = 0;
    size_t i = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + static_cast<uint64_t>(text[i] - '0');
    }
    if (i == 0 || text.size() - i > 1) return false;
    unsigned shift = 20;
    if (i < text.size()) {
        switch (text[i] | 0x20) {
            case 'b': shift = 0; break;
            case 'k': shift = 10; break;
            case 'm': shift = 20; break;
            case 'g': shift = 30; break;
            case 't': shift = 40; break;
            default: return false;
        }
    }
    if (shift && v > (static_cast<uint64_t>(INT64_MAX) >> shift)) return false;
    out = v << shift;
    return out <= static_cast<uint64_t>(INT64_MAX);
}

std::string help_line(std::string_view prefix, const HelpLine& h) {
    return fmt::format("{}{} {} -- {}\n", prefix, h.name, h.params, h.text);
}

bool name_matches(const char* names, std::string_view word) {
    std::string_view n(names);
    while (!n.empty()) {
        auto bar = n.find('|');
        if (n.substr(0, bar) == word) return true;
        if (bar == std::string_view::npos) break;
        n.remove_prefix(bar + 1);
    }
    return false;
}

std::vector<std::string_view> split_words(std::string_view line) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
        size_t start = i;
        while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
        if (i > start) out.push_back(line.substr(start, i - start));
    }
    return out;
}

uint64_t u64(const Json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return 0;
    return it->is_number_unsigned() ? it->get<uint64_t>()
                                    : static_cast<uint64_t>(it->get<int64_t>());
}

std::string str(const Json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return {};
    return it->get<std::string>();
}

bool flag(const Json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::string format_pci(const Json& buses) {
    std::string out;
    for (const auto& bus : buses) {
        for (const auto& d : bus["devices"]) {
            out += fmt::format("  Bus {:2}, device {:3}, function {}:\n", u64(d, "bus"),
                               u64(d, "slot"), u64(d, "function"));
            const Json& ci = d["class_info"];
            std::string desc = str(ci, "desc");
            if (desc.empty()) desc = fmt::format("Class {:04x}", u64(ci, "class"));
            out += fmt::format("    {}: PCI device {:04x}:{:04x}\n", desc, u64(d["id"], "vendor"),
                               u64(d["id"], "device"));
            out += fmt::format("      PCI subsystem {:04x}:{:04x}\n",
                               u64(d["id"], "subsystem-vendor"), u64(d["id"], "subsystem"));
            uint64_t pin = u64(d, "irq_pin");
            if (d.contains("irq") && pin >= 1 && pin <= 4)
                out += fmt::format("      IRQ {}, pin {}\n", u64(d, "irq"),
                                   static_cast<char>('A' + pin - 1));
            for (const auto& r : d["regions"]) {
                uint64_t addr = u64(r, "address");  // -1 reads back as all-ones
                uint64_t last = addr + u64(r, "size") - 1;
                if (str(r, "type") == "io") {
                    out += fmt::format("      BAR{}: I/O at {:#06x} [{:#06x}].\n", u64(r, "bar"),
                                       addr, last);
                } else {
                    out += fmt::format("      BAR{}: {} bit{} memory at {:#010x} [{:#010x}].\n",
                                       u64(r, "bar"), flag(r, "mem_type_64") ? 64 : 32,
                                       flag(r, "prefetch") ? " prefetchable" : "", addr, last);
                }
            }
            out += fmt::format("      id \"{}\"\n", str(d, "qdev_id"));
        }
    }
    return out;
}

std::string format_block(const Json& list, std::string_view only) {
    std::string out;
    bool first = true;
    for (const auto& b : list) {
        std::string dev = str(b, "device");
        if (!only.empty() && dev != only) continue;
        if (!first) out += "\n";
        first = false;
        auto ins = b.find("inserted");
        if (ins == b.end()) {
            out += fmt::format("{}: [not inserted]\n", dev);
            continue;
        }
        out += fmt::format("{} ({}): {} ({}{})\n", dev, str(*ins, "node-name"), str(*ins, "file"),
                           str(*ins, "drv"), flag(*ins, "ro") ? ", read-only" : "");
        if (auto q = str(b, "qdev"); !q.empty())
            out += fmt::format("    Attached to:      {}\n", q);
        const Json& c = (*ins)["cache"];
        out += fmt::format("    Cache mode:       {}{}{}\n",
                           flag(c, "writeback") ? "writeback" : "writethrough",
                           flag(c, "direct") ? ", direct" : "",
                           flag(c, "no-flush") ? ", ignore flushes" : "");
    }
    return out;
}

// QEMU's info qtree layout for what x-query-qtree lists: the host bridge's
// PCI bus, each device with its properties, a controller's SCSI bus under it.
std::string format_qtree(const Json& devs, Role role) {
    std::string out = "bus: main-system-bus\n  type System\n";
    out += fmt::format("  dev: {}, id \"\"\n", role == Role::Vmm ? "i440FX-pcihost" : "remote-pcihost");
    out += "    bus: pci.0\n      type PCI\n";
    auto device = [&](const Json& d, size_t indent) {
        std::string pad(indent, ' ');
        std::string o = fmt::format("{}dev: {}, id \"{}\"\n", pad, str(d, "driver"), str(d, "id"));
        for (const auto& p : d["props"]) {
            std::string name = str(p, "name"), value = str(p, "value");
            bool number = !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
            if (number)
                o += fmt::format("{}  {} = {} ({:#x})\n", pad, name, value, std::stoull(value));
            else if (name == "addr")
                o += fmt::format("{}  {} = {}\n", pad, name, value);
            else
                o += fmt::format("{}  {} = \"{}\"\n", pad, name, value);
        }
        return o;
    };
    for (const auto& d : devs) {
        if (str(d, "bus") != "pci.0") continue;
        out += device(d, 6);
        std::string child = str(d, "child-bus");
        if (child.empty()) continue;
        out += fmt::format("        bus: {}\n          type SCSI\n", child);
        for (const auto& k : devs)
            if (str(k, "bus") == child) out += device(k, 10);
    }
    return out;
}

std::string format_blockstats(const Json& list) {
    std::string out;
    for (const auto& b : list) {
        const Json& s = b["stats"];
        out += fmt::format(
            "{}: rd_bytes={} wr_bytes={} rd_operations={} wr_operations={} flush_operations={} "
            "wr_total_time_ns={} rd_total_time_ns={} flush_total_time_ns={} rd_merged={} "
            "wr_merged={} idle_time_ns={}\n",
            str(b, "device"), u64(s, "rd_bytes"), u64(s, "wr_bytes"), u64(s, "rd_operations"),
            u64(s, "wr_operations"), u64(s, "flush_operations"), u64(s, "wr_total_time_ns"),
            u64(s, "rd_total_time_ns"), u64(s, "flush_total_time_ns"), u64(s, "rd_merged"),
            u64(s, "wr_merged"), u64(s, "idle_time_ns"));
    }
    return out;
}

}  // namespace

std::string to_crlf(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 16);
    for (char c : text) {
        if (c == '\n') out.push_back('\r');
        out.push_back(c);
    }
    return out;
}

bool Hmp::call(std::string_view cmd, const Json& args, Json& out, std::string& err) const {
    QmpReply r = qmp_.execute(cmd, args);
    if (!r.is_ok()) {
        err = fmt::format("Error: {}\n", r.error().desc);
        return false;
    }
    out = r.value();
    return true;
}

std::string Hmp::help(std::string_view what) const {
    std::string out;
    if (what.empty()) {
        for (const auto& h : kCommands) out += help_line("", h);
        return out;
    }
    if (what == "info") {
        for (const auto& h : kInfo) out += help_line("info ", h);
        return out;
    }
    for (const auto& h : kCommands)
        if (name_matches(h.name, what)) return help_line("", h);
    return fmt::format("unknown command: '{}'\n", what);
}

std::string Hmp::info(std::string_view what, std::string_view arg) const {
    Json r;
    std::string err;
    if (what == "version") {
        if (!call("query-version", Json::object(), r, err)) return err;
        const Json& q = r["qemu"];
        return fmt::format("{}.{}.{} ({})\n", u64(q, "major"), u64(q, "minor"), u64(q, "micro"),
                           str(r, "package"));
    }
    if (what == "status") {
        if (!call("query-status", Json::object(), r, err)) return err;
        std::string st = str(r, "status");
        if (flag(r, "running")) return "VM status: running\n";
        if (st == "paused") return "VM status: paused\n";
        return fmt::format("VM status: paused ({})\n", st);
    }
    if (what == "worker") {
        if (!call("x-query-worker", Json::object(), r, err)) return err;
        std::string last = "none";
        if (r.contains("last-exit")) {
            const Json& l = r["last-exit"];
            last = l.contains("signal") ? fmt::format("signal {}", u64(l, "signal"))
                                        : fmt::format("exit status {}", u64(l, "status"));
        }
        std::string spare = r.contains("spare") && u64(r, "spare") ? fmt::format("pid {}", u64(r, "spare")) : "none";
        return fmt::format("worker pid {}, restarts {}, last exit: {}, state format version {}, "
                           "{} rounds published ({} ns each on average), spare: {}\n",
                           u64(r, "pid"), u64(r, "restarts"), last, u64(r, "state-version"),
                           u64(r, "published-rounds"), u64(r, "publish-avg-ns"), spare);
    }
    if (what == "name") {
        if (!call("query-name", Json::object(), r, err)) return err;
        return r.contains("name") ? str(r, "name") + "\n" : std::string();
    }
    if (what == "pci") {
        if (!call("query-pci", Json::object(), r, err)) return err;
        return format_pci(r);
    }
    if (what == "block") {
        if (!call("query-block", Json::object(), r, err)) return err;
        std::string out = format_block(r, arg);
        if (out.empty() && !arg.empty()) return fmt::format("Device '{}' not found\n", arg);
        // A proxied controller's disks are its device process's: say where
        // they are listed rather than show a copy that could be stale.
        Json rd;
        if (role_ == Role::Vmm && arg.empty() && call("query-remote-devices", Json::object(), rd, err)) {
            for (const auto& d : rd)
                out += fmt::format("{}{} ({}): disks are listed by its device process's monitor\n",
                                   out.empty() ? "" : "\n", str(d, "id"), str(d, "driver"));
        }
        return out;
    }
    if (what == "qtree") {
        if (!call("x-query-qtree", Json::object(), r, err)) return err;
        return format_qtree(r, role_);
    }
    if (what == "blockstats") {
        if (!call("query-blockstats", Json::object(), r, err)) return err;
        return format_blockstats(r);
    }
    if (what == "chardev") {
        if (!call("query-chardev", Json::object(), r, err)) return err;
        std::string out;
        for (const auto& c : r)
            out += fmt::format("{}: filename={}\n", str(c, "label"), str(c, "filename"));
        return out;
    }
    if (what == "trace-events") {
        Json args{{"name", arg.empty() ? std::string("*") : std::string(arg)}};
        if (!call("trace-event-get-state", args, r, err)) return err.substr(std::string_view("Error: ").size());
        std::string out;
        for (const auto& e : r)
            out += fmt::format("{} : state {}\n", str(e, "name"), str(e, "state") == "enabled" ? 1 : 0);
        return out;
    }
    if (what == "remote-devices") {
        if (!call("query-remote-devices", Json::object(), r, err)) return err;
        std::string out;
        for (const auto& d : r) {
            out += fmt::format("{}: {}, channel {}", str(d, "id"), str(d, "driver"),
                               str(d, "channel"));
            if (d.contains("fd")) out += fmt::format(" (fd {})", u64(d, "fd"));
            if (auto p = str(d, "peer"); !p.empty()) out += fmt::format(", peer {}", p);
            std::string feats;
            for (const auto& f : d["features"])
                if (f.is_string()) feats += (feats.empty() ? "" : ",") + f.get<std::string>();
            if (!feats.empty()) out += fmt::format(", features {}", feats);
            out += "\n";
        }
        return out;
    }
    return fmt::format("unknown command: 'info {}'\n", what);
}

std::string Hmp::run(std::string_view line) const {
    MPQ_TRACE(mpq_monitor_hmp_command, std::string(line).c_str());
    auto words = split_words(line);
    if (words.empty()) return {};
    std::string_view cmd = words[0];
    std::string_view a1 = words.size() > 1 ? words[1] : std::string_view();
    std::string_view a2 = words.size() > 2 ? words[2] : std::string_view();
    if (cmd == "help" || cmd == "?") return help(a1);
    if (cmd == "info") {
        if (a1.empty()) return help("info");
        return info(a1, a2);
    }
    Json r;
    std::string err;
    if (cmd == "system_reset") return call("system_reset", Json::object(), r, err) ? "" : err;
    if (cmd == "block_resize") {
        uint64_t size = 0;
        if (a1.empty() || a2.empty()) return "block_resize: device and size are required\n";
        if (!parse_hmp_size(a2, size)) return "invalid size\n";
        Json args{{"device", std::string(a1)}, {"size", size}};
        return call("block_resize", args, r, err) ? "" : err;
    }
    if (cmd == "trace-event") {
        static constexpr std::string_view kTry = "Try \"help trace-event\" for more information\n";
        if (a1.empty()) return fmt::format("trace-event: string expected\n{}", kTry);
        if (a2 != "on" && a2 != "off") return fmt::format("Expected 'on' or 'off'\n{}", kTry);
        Json args{{"name", std::string(a1)}, {"enable", a2 == "on"}};
        if (call("trace-event-set-state", args, r, err)) return "";
        return err.substr(std::string_view("Error: ").size());
    }
    if (cmd == "drive_add") {
        // QEMU's form: drive_add [-n] ADDR OPTIONS; the address means nothing with if=none.
        size_t i = 1;
        if (i < words.size() && words[i] == "-n") i++;
        if (i + 1 >= words.size()) return "drive_add: an address and the drive options are required\n";
        return call("x-drive-add", Json{{"options", std::string(words[i + 1])}}, r, err) ? "OK\n" : err;
    }
    if (cmd == "device_add") {
        if (a1.empty()) return "device_add: driver and properties are required\n";
        auto kv = opts::parse_keyvalues(a1, "driver");
        if (!kv) return fmt::format("Error: {}\n", kv.error().message);
        Json args = Json::object();
        for (const auto& item : kv->items) args[item.key] = item.value;
        return call("device_add", args, r, err) ? "" : err;
    }
    if (cmd == "device_del") {
        if (a1.empty()) return "device_del: a device id is required\n";
        return call("device_del", Json{{"id", std::string(a1)}}, r, err) ? "" : err;
    }
    if (cmd == "quit" || cmd == "q") return call("quit", Json::object(), r, err) ? "" : err;
    return fmt::format("unknown command: '{}'\n", cmd);
}

HmpSession::HmpSession(const Hmp& hmp, Echo echo, Writer write)
    : hmp_(hmp), echo_(echo), write_(std::move(write)) {}

void HmpSession::start() {
    write_(fmt::format("QEMU {}.{}.{} monitor - type 'help' for more information\r\n(qemu) ",
                       kQemuMajor, kQemuMinor, kQemuMicro));
}

void HmpSession::execute() {
    std::string out;
    if (echo_ == Echo::On) out += "\r\n";
    out += to_crlf(hmp_.run(line_));
    out += "(qemu) ";
    line_.clear();
    write_(out);
}

bool HmpSession::feed(std::string_view bytes) {
    std::string echo;
    for (char ch : bytes) {
        auto c = static_cast<unsigned char>(ch);
        bool was_cr = last_cr_;
        last_cr_ = false;
        if (esc_ != Esc::None) {
            // Swallow terminal escape sequences (arrows etc.), bounded.
            if (esc_ == Esc::Esc) {
                esc_ = (c == '[' || c == 'O') ? Esc::Csi : Esc::None;
            } else if ((c >= 0x40 && c <= 0x7e) || ++esc_len_ > 16) {
                esc_ = Esc::None;
            }
            if (esc_ == Esc::None) esc_len_ = 0;
            continue;
        }
        if (c == 0x1b) {
            esc_ = Esc::Esc;
            continue;
        }
        if (c == '\r' || c == '\n') {
            if (c == '\n' && was_cr) continue;  // "\r\n" is one line end
            last_cr_ = c == '\r';
            if (!echo.empty() && echo_ == Echo::On) write_(echo);
            echo.clear();
            execute();
            continue;
        }
        if (c == 0x7f || c == 0x08) {
            if (!line_.empty()) {
                line_.pop_back();
                echo += "\b \b";
            }
            continue;
        }
        if (c == 0x15 || c == 0x03) {  // ^U, ^C: drop the line
            line_.clear();
            echo += "\r\n(qemu) ";
            continue;
        }
        if (c < 0x20 && c != '\t') continue;
        if (line_.size() >= kMaxLine) {
            write_(fmt::format("\r\nError: line longer than {} bytes, closing\r\n", kMaxLine));
            return false;
        }
        line_.push_back(ch);
        if (echo_ == Echo::On) echo.push_back(ch);
    }
    if (!echo.empty() && echo_ == Echo::On) write_(echo);
    return true;
}

}  // namespace mpq::monitor
