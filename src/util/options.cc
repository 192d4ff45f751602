#include "util/options.h"

#include <algorithm>
#include <cctype>

namespace mpq::opts {
namespace {

constexpr OptionDef kTable[] = {
    {"device", ArgKind::KeyValue, "driver", "add a device: DRIVER[,prop=value][,...]"},
    {"drive", ArgKind::KeyValue, "", "add a drive: id=ID,file=FILE[,format=raw|qcow2][,if=none]..."},
    {"object", ArgKind::KeyValue, "qom-type", "add an object: TYPE,id=ID[,prop=value]..."},
    {"machine", ArgKind::KeyValue, "type", "select the machine: TYPE[,prop=value]..."},
    {"M", ArgKind::KeyValue, "type", "same as -machine"},
    {"chardev", ArgKind::KeyValue, "backend", "add a character device: BACKEND,id=ID[,...]"},
    {"mon", ArgKind::KeyValue, "chardev", "attach a monitor: chardev=ID[,mode=readline|control]"},
    {"monitor", ArgKind::String, "", "HMP monitor on a character device (e.g. unix:PATH,server,nowait)"},
    {"qmp", ArgKind::String, "", "QMP monitor on a character device"},
    {"name", ArgKind::KeyValue, "guest", "name of this process (shown in logs and monitors)"},
    {"display", ArgKind::KeyValue, "type", "display backend (only 'none')"},
    {"nographic", ArgKind::None, "", "no display"},
    {"nodefaults", ArgKind::None, "", "no default devices"},
    {"D", ArgKind::String, "", "write logs to FILE"},
    {"d", ArgKind::String, "", "enable log items (comma separated)"},
    {"sandbox", ArgKind::KeyValue, "enable", "seccomp sandbox: on|off[,...]"},
    {"run-with", ArgKind::KeyValue, "", "process options: [chroot=DIR][,user=USER]..."},
    {"x-test-forbidden-syscall", ArgKind::String, "", "TEST ONLY: attempt a syscall the sandbox forbids"},
    {"x-worker", ArgKind::String, "", "on: a supervisor restarts the device worker if it dies; off: one process"},
    {"x-test-worker-fault", ArgKind::String, "", "TEST ONLY: fd=N or path=FIFO: a byte read there makes the worker fault"},
    {"x-test-worker-poison", ArgKind::String, "", "TEST ONLY: a BAR write of this value kills the worker"},
    {"x-worker-successor", ArgKind::String, "", "internal: a worker exec'd by the spawner for a live update"},
    {"x-worker-state-version", ArgKind::None, "", "internal: print the device state format version and exit"},
    {"S", ArgKind::None, "", "do not start CPUs"},
    {"m", ArgKind::KeyValue, "size", "guest RAM size (default unit MiB)"},
    {"accel", ArgKind::KeyValue, "accel", "accelerator: kvm|tcg|qtest"},
    {"qtest", ArgKind::String, "", "qtest protocol on a character device"},
    {"qtest-log", ArgKind::String, "", "qtest log file ('none' to disable)"},
    {"smp", ArgKind::KeyValue, "cpus", "number of vCPUs"},
    {"cpu", ArgKind::String, "", "CPU model"},
    {"kernel", ArgKind::String, "", "Linux kernel image"},
    {"initrd", ArgKind::String, "", "initial ram disk"},
    {"append", ArgKind::String, "", "kernel command line"},
    {"bios", ArgKind::String, "", "firmware image"},
    {"serial", ArgKind::String, "", "serial port on a character device"},
    {"numa", ArgKind::KeyValue, "type", "NUMA node: node,memdev=ID"},
    {"boot", ArgKind::KeyValue, "order", "boot order"},
    {"global", ArgKind::String, "", "set a default property: DRIVER.PROP=VALUE"},
    {"vga", ArgKind::String, "", "VGA card ('none')"},
    {"enable-kvm", ArgKind::None, "", "same as -accel kvm"},
    {"no-reboot", ArgKind::None, "", "exit instead of rebooting"},
    {"no-shutdown", ArgKind::None, "", "stop instead of exiting on guest shutdown"},
    {"incoming-state", ArgKind::String, "FILE", "start from a device state saved by x-device-state-save"},
    {"pidfile", ArgKind::String, "", "write the process id to FILE"},
    {"daemonize", ArgKind::None, "", "detach from the terminal"},
    {"trace", ArgKind::String, "", "trace events: [enable=]PATTERN, events=FILE, file=FILE, help"},
    {"msg", ArgKind::String, "", "message format: timestamp=on|off"},
    {"h", ArgKind::None, "", "print help and exit"},
    {"help", ArgKind::None, "", "print help and exit"},
    {"version", ArgKind::None, "", "print version and exit"},
};

// QEMU's get_opt_value(): up to an unescaped ',' ; ",," is a literal comma.
size_t take_value(std::string_view s, size_t pos, std::string& out) {
    out.clear();
    while (pos < s.size()) {
        if (s[pos] == ',') {
            if (pos + 1 < s.size() && s[pos + 1] == ',') {
                out.push_back(',');
                pos += 2;
                continue;
            }
            break;
        }
        out.push_back(s[pos++]);
    }
    return pos;
}

}  // namespace

std::span<const OptionDef> option_table() { return kTable; }

const OptionDef* find_option(std::string_view name) {
    for (const auto& d : kTable)
        if (d.name == name) return &d;
    return nullptr;
}

const std::string* KeyValues::find(std::string_view key) const {
    for (auto it = items.rbegin(); it != items.rend(); ++it)
        if (it->key == key) return &it->value;
    return nullptr;
}

std::string KeyValues::get(std::string_view key, std::string_view fallback) const {
    const std::string* v = find(key);
    return v ? *v : std::string(fallback);
}

Result<KeyValues> parse_keyvalues(std::string_view text, std::string_view implied_key) {
    KeyValues kv;
    size_t pos = 0;
    bool first = true;
    std::string word;
    while (pos < text.size()) {
        // The key ends at '=' or at an unescaped ',' (then it is a bare word).
        size_t eq = pos;
        while (eq < text.size() && text[eq] != '=' && text[eq] != ',') eq++;
        if (eq < text.size() && text[eq] == '=') {
            std::string key(text.substr(pos, eq - pos));
            if (key.empty()) return fail("Invalid parameter ''");
            pos = take_value(text, eq + 1, word);
            kv.items.push_back({std::move(key), word});
        } else {
            pos = take_value(text, pos, word);
            if (first && !implied_key.empty()) {
                kv.items.push_back({std::string(implied_key), word});
            } else if (word.empty()) {
                return fail("Invalid parameter ''");
            } else if (word.size() > 2 && word.compare(0, 2, "no") == 0) {
                kv.items.push_back({word.substr(2), "off"});
            } else {
                kv.items.push_back({word, "on"});
            }
        }
        first = false;
        if (pos < text.size()) pos++;  // the separating ','
    }
    if (first && !implied_key.empty()) kv.items.push_back({std::string(implied_key), ""});
    return kv;
}

std::string Option::where() const {
    std::string s = "-";
    s += def->name;
    if (def->kind != ArgKind::None) {
        s += ' ';
        s += text;
    }
    return s;
}

std::vector<const Option*> CommandLine::all(std::string_view name) const {
    std::vector<const Option*> v;
    for (const auto& o : options)
        if (o.name() == name) v.push_back(&o);
    return v;
}

const Option* CommandLine::last(std::string_view name) const {
    for (auto it = options.rbegin(); it != options.rend(); ++it)
        if (it->name() == name) return &*it;
    return nullptr;
}

Result<CommandLine> parse_command_line(std::span<const char* const> args,
                                       std::span<const std::string_view> accepted) {
    CommandLine cl;
    for (size_t i = 0; i < args.size(); i++) {
        std::string_view a = args[i] ? args[i] : "";
        if (a.empty() || a[0] != '-' || a == "-") {
            cl.positional.emplace_back(a);
            continue;
        }
        std::string_view name = a.substr(1);
        if (!name.empty() && name[0] == '-') name.remove_prefix(1);
        const OptionDef* def = find_option(name);
        bool ok = def && std::find(accepted.begin(), accepted.end(), def->name) != accepted.end();
        if (!ok) return fail("{}: invalid option", a);
        Option opt;
        opt.def = def;
        if (def->kind != ArgKind::None) {
            if (i + 1 >= args.size() || !args[i + 1]) return fail("-{}: requires an argument", def->name);
            opt.text = args[++i];
            if (def->kind == ArgKind::KeyValue) {
                if (!opt.text.empty() && opt.text[0] == '{')
                    return opt.error("JSON arguments are not supported");
                auto kv = parse_keyvalues(opt.text, def->implied_key);
                if (!kv) return opt.error(kv.error());
                opt.kv = std::move(*kv);
            }
        }
        cl.options.push_back(std::move(opt));
    }
    return cl;
}

Result<uint64_t> parse_uint(std::string_view s, std::string_view key, uint64_t max) {
    if (s.empty()) return fail("Parameter '{}' expects integer", key);
    int base = 10;
    size_t i = 0;
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    }
    uint64_t v = 0;
    for (; i < s.size(); i++) {
        int d;
        char c = s[i];
        if (c >= '0' && c <= '9') d = c - '0';
        else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return fail("Parameter '{}' expects integer", key);
        if (v > (UINT64_MAX - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base))
            return fail("Parameter '{}' expects integer below 2^64", key);
        v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
    }
    if (v > max) return fail("Parameter '{}' expects a value between 0 and {}", key, max);
    return v;
}

Result<uint64_t> parse_size(std::string_view s, std::string_view key, uint64_t default_unit) {
    auto bad = [&] { return fail("Parameter '{}' expects a non-negative number below 2^64", key); };
    if (s.empty()) return bad();
    size_t i = 0;
    uint64_t v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        uint64_t d = static_cast<uint64_t>(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return bad();
        v = v * 10 + d;
        i++;
    }
    if (i == 0) return bad();
    uint64_t mult = default_unit;
    if (i < s.size()) {
        if (i + 1 != s.size()) {
            // "1b"/"1B" is allowed by QEMU as bytes; anything longer is not.
            return bad();
        }
        switch (s[i]) {
        case 'b': case 'B': mult = 1; break;
        case 'k': case 'K': mult = 1ull << 10; break;
        case 'm': case 'M': mult = 1ull << 20; break;
        case 'g': case 'G': mult = 1ull << 30; break;
        case 't': case 'T': mult = 1ull << 40; break;
        case 'p': case 'P': mult = 1ull << 50; break;
        case 'e': case 'E': mult = 1ull << 60; break;
        default: return bad();
        }
    }
    if (mult && v > UINT64_MAX / mult) return bad();
    return v * mult;
}

Result<bool> parse_bool(std::string_view s, std::string_view key) {
    if (s == "on" || s == "yes" || s == "true" || s == "y") return true;
    if (s == "off" || s == "no" || s == "false" || s == "n") return false;
    return fail("Parameter '{}' expects 'on' or 'off'", key);
}

Status check_id(std::string_view s, std::string_view key) {
    bool ok = !s.empty() && std::isalpha(static_cast<unsigned char>(s[0]));
    for (char c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') ok = false;
    if (!ok) return fail("Parameter '{}' expects an identifier", key);
    return {};
}

Status check_known_keys(const KeyValues& kv, std::string_view type,
                        std::span<const std::string_view> known) {
    for (const auto& item : kv.items)
        if (std::find(known.begin(), known.end(), item.key) == known.end())
            return fail("Property '{}.{}' not found", type, item.key);
    return {};
}

}  // namespace mpq::opts
