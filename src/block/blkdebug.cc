#include "block/blkdebug.h"
#include "block/runtime.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/unique_fd.h"

namespace mpq::block {
namespace {

// A rules file is a handful of lines; anything near this is not one.
constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxRules = 4096;
// Linux errno values stop well below this (MAX_ERRNO is 4095).
constexpr uint64_t kMaxErrno = 4095;

constexpr uint32_t bit(BlkdebugIo io) { return 1u << static_cast<unsigned>(io); }
// QEMU's default when a rule names no iotype: every kind but block-status.
constexpr uint32_t kAllIo = bit(BlkdebugIo::Read) | bit(BlkdebugIo::Write) |
                            bit(BlkdebugIo::WriteZeroes) | bit(BlkdebugIo::Discard) |
                            bit(BlkdebugIo::Flush);

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

// QEMU_OPT_NUMBER: an unsigned integer, decimal, 0x hex or 0 octal.
Result<uint64_t> parse_number(std::string_view key, std::string_view v) {
    unsigned base = 10;
    std::string_view digits = v;
    if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
        base = 16;
        digits.remove_prefix(2);
    } else if (digits.size() > 1 && digits[0] == '0') {
        base = 8;
        digits.remove_prefix(1);
    }
    if (digits.empty()) return fail("Parameter '{}' expects a number", key);
    uint64_t n = 0;
    for (char c : digits) {
        unsigned d;
        if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
        else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
        else return fail("Parameter '{}' expects a number", key);
        if (d >= base) return fail("Parameter '{}' expects a number", key);
        if (n > (UINT64_MAX - d) / base) return fail("Parameter '{}' is out of range", key);
        n = n * base + d;
    }
    return n;
}

Result<bool> parse_bool(std::string_view key, std::string_view v) {
    if (v == "on" || v == "yes" || v == "true" || v == "y") return true;
    if (v == "off" || v == "no" || v == "false" || v == "n") return false;
    return fail("Parameter '{}' expects 'on' or 'off'", key);
}

Result<BlkdebugEvent> parse_event(std::string_view v) {
    if (v == "read_aio") return BlkdebugEvent::ReadAio;
    if (v == "write_aio") return BlkdebugEvent::WriteAio;
    if (v == "flush_to_os") return BlkdebugEvent::FlushToOs;
    if (v == "flush_to_disk") return BlkdebugEvent::FlushToDisk;
    if (v == "pwritev") return BlkdebugEvent::Pwritev;
    if (v == "pwritev_zero") return BlkdebugEvent::PwritevZero;
    if (v == "pwritev_done") return BlkdebugEvent::PwritevDone;
    return fail("blkdebug event '{}' is not supported (read_aio, write_aio, flush_to_os, "
                "flush_to_disk, pwritev, pwritev_zero, pwritev_done)", v);
}

// 0 = block-status: a valid QEMU type that no request here ever has.
Result<uint32_t> parse_iotype(std::string_view v) {
    if (v == "read") return bit(BlkdebugIo::Read);
    if (v == "write") return bit(BlkdebugIo::Write);
    if (v == "write-zeroes") return bit(BlkdebugIo::WriteZeroes);
    if (v == "discard") return bit(BlkdebugIo::Discard);
    if (v == "flush") return bit(BlkdebugIo::Flush);
    if (v == "block-status") return 0u;
    return fail("Parameter 'iotype' does not accept value '{}'", v);
}

struct Section {
    BlkdebugRule::Action action;
    size_t line;
    std::vector<std::pair<std::string, std::string>> kv;
};

Result<BlkdebugRule> build_rule(const Section& s, std::string_view origin) {
    BlkdebugRule r;
    r.action = s.action;
    r.io_mask = kAllIo;
    bool have_event = false;
    auto where = [&](const std::string& msg) {
        return fail("{}:{}: {}", origin, s.line, msg);
    };
    for (const auto& [k, v] : s.kv) {
        const bool inject = s.action == BlkdebugRule::Action::InjectError;
        if (k == "event") {
            auto e = parse_event(v);
            if (!e) return where(e.error().message);
            r.event = *e;
            have_event = true;
        } else if (k == "state") {
            auto n = parse_number(k, v);
            if (!n) return where(n.error().message);
            r.state = *n;
        } else if (inject && k == "errno") {
            auto n = parse_number(k, v);
            if (!n) return where(n.error().message);
            if (*n > kMaxErrno) return where(fmt::format("errno {} is out of range", *n));
            r.err = static_cast<int>(*n);
        } else if (inject && k == "sector") {
            auto n = parse_number(k, v);
            if (!n) return where(n.error().message);
            if (*n > static_cast<uint64_t>(INT64_MAX) / 512)
                return where(fmt::format("sector {} is out of range", *n));
            r.offset = static_cast<int64_t>(*n * 512);
        } else if (inject && k == "once") {
            auto b = parse_bool(k, v);
            if (!b) return where(b.error().message);
            r.once = *b ? BlkdebugRule::Once::Yes : BlkdebugRule::Once::No;
        } else if (inject && k == "immediately") {
            auto b = parse_bool(k, v);
            if (!b) return where(b.error().message);
        } else if (inject && k == "iotype") {
            auto m = parse_iotype(v);
            if (!m) return where(m.error().message);
            r.io_mask = *m;
        } else if (!inject && k == "new_state") {
            auto n = parse_number(k, v);
            if (!n) return where(n.error().message);
            r.new_state = *n;
        } else {
            return where(fmt::format("Invalid parameter '{}'", k));
        }
    }
    if (!have_event) return where("Missing event name for rule");
    return r;
}

}  // namespace

Result<std::vector<BlkdebugRule>> parse_blkdebug_config(std::string_view text,
                                                        std::string_view origin) {
    if (text.size() > kMaxConfigBytes) return fail("{}: blkdebug config file too large", origin);
    std::vector<Section> sections;
    size_t lineno = 0;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = trim(text.substr(0, nl));
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        ++lineno;
        if (line.empty() || line.front() == '#') continue;
        if (line.front() == '[') {
            if (line.back() != ']') return fail("{}:{}: parse error", origin, lineno);
            std::string_view group = trim(line.substr(1, line.size() - 2));
            // `[group "id"]`: QEMU allows an id; blkdebug rules ignore it.
            if (size_t sp = group.find_first_of(" \t"); sp != std::string_view::npos) {
                std::string_view id = trim(group.substr(sp));
                if (id.size() < 2 || id.front() != '"' || id.back() != '"')
                    return fail("{}:{}: parse error", origin, lineno);
                group = group.substr(0, sp);
            }
            BlkdebugRule::Action a;
            if (group == "inject-error") a = BlkdebugRule::Action::InjectError;
            else if (group == "set-state") a = BlkdebugRule::Action::SetState;
            else return fail("{}:{}: There is no option group '{}'", origin, lineno, group);
            if (sections.size() >= kMaxRules)
                return fail("{}:{}: more than {} rules", origin, lineno, kMaxRules);
            sections.push_back(Section{a, lineno, {}});
            continue;
        }
        // key = "value", optionally followed by a # comment (QEMU ignores
        // whatever follows the closing quote; we allow only a comment).
        size_t eq = line.find('=');
        if (eq == std::string_view::npos) return fail("{}:{}: parse error", origin, lineno);
        std::string_view key = trim(line.substr(0, eq));
        std::string_view rest = trim(line.substr(eq + 1));
        size_t close = rest.size() > 1 ? rest.find('"', 1) : std::string_view::npos;
        if (key.empty() || key.find_first_of(" \t\"") != std::string_view::npos ||
            rest.empty() || rest.front() != '"' || close == std::string_view::npos)
            return fail("{}:{}: parse error (want: key = \"value\")", origin, lineno);
        std::string_view val = rest.substr(1, close - 1);
        std::string_view tail = trim(rest.substr(close + 1));
        if (!tail.empty() && tail.front() != '#')
            return fail("{}:{}: parse error after the value", origin, lineno);
        if (sections.empty()) return fail("{}:{}: no group defined", origin, lineno);
        sections.back().kv.emplace_back(std::string(key), std::string(val));
    }
    std::vector<BlkdebugRule> rules;
    for (const Section& s : sections) {
        auto r = build_rule(s, origin);
        if (!r) return r.take_error();
        rules.push_back(*r);
    }
    return rules;
}

Result<std::vector<BlkdebugRule>> read_blkdebug_config(const std::string& path) {
    MPQ_TRY(check_path_open(path, false));
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        int e = errno;
        return fail_errno(e, "Could not read blkdebug config file '{}': {}", path,
                          std::strerror(e));
    }
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            return fail_errno(e, "Could not read blkdebug config file '{}': {}", path,
                              std::strerror(e));
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxConfigBytes)
            return fail("blkdebug config file '{}' is too large", path);
    }
    return parse_blkdebug_config(text, path);
}

BlkdebugRules::BlkdebugRules(std::vector<BlkdebugRule> rules, BlkdebugPosition pos)
    : pos_(pos), rules_(std::move(rules)), gone_(rules_.size(), false) {}

void BlkdebugRules::raise(BlkdebugEvent ev) {
    // Evaluated against the state before the event; set-state takes effect
    // after every rule of the event was looked at (QEMU's order).
    uint64_t next = state_;
    bool replaced = false;
    for (size_t i = 0; i < rules_.size(); ++i) {
        const BlkdebugRule& r = rules_[i];
        if (gone_[i] || r.event != ev || (r.state != 0 && r.state != state_)) continue;
        if (r.action == BlkdebugRule::Action::SetState) {
            next = r.new_state;
        } else {
            // The first inject-error rule of an event replaces the active set.
            if (!replaced) active_.clear();
            replaced = true;
            active_.push_back(i);
        }
    }
    state_ = next;
}

int BlkdebugRules::on_request(BlkdebugIo io, uint64_t off, uint64_t len) {
    std::lock_guard lk(mu_);
    const bool under_format = pos_ == BlkdebugPosition::UnderFormat;
    switch (io) {
        case BlkdebugIo::Read:
            if (under_format) raise(BlkdebugEvent::ReadAio);
            break;
        case BlkdebugIo::Write:
            if (under_format) raise(BlkdebugEvent::WriteAio);
            raise(BlkdebugEvent::Pwritev);
            break;
        case BlkdebugIo::WriteZeroes: raise(BlkdebugEvent::PwritevZero); break;
        case BlkdebugIo::Flush:
            raise(BlkdebugEvent::FlushToOs);
            raise(BlkdebugEvent::FlushToDisk);
            break;
        case BlkdebugIo::Discard: break;  // no event of its own; active rules still apply
    }
    for (auto it = active_.begin(); it != active_.end(); ++it) {
        BlkdebugRule& r = rules_[*it];
        if (!(r.io_mask & bit(io))) continue;
        // A sector matches a request that covers it; a request without
        // length (flush) matches sector-less rules only.
        if (r.offset >= 0) {
            uint64_t o = static_cast<uint64_t>(r.offset);
            if (len == 0 || o < off || o - off >= len) continue;
        }
        int err = r.err;
        if (err == 0) return 0;  // QEMU: the first matching rule decides, errno 0 = pass
        if (r.once == BlkdebugRule::Once::Yes) {
            // Gone for good: out of the active set, and never activated again.
            gone_[*it] = true;
            active_.erase(it);
        }
        ++injected_;
        return err;
    }
    return 0;
}

void BlkdebugRules::after_request(BlkdebugIo io) {
    if (io != BlkdebugIo::Write && io != BlkdebugIo::WriteZeroes) return;
    std::lock_guard lk(mu_);
    raise(BlkdebugEvent::PwritevDone);
}

uint64_t BlkdebugRules::state() const {
    std::lock_guard lk(mu_);
    return state_;
}

uint64_t BlkdebugRules::injected() const {
    std::lock_guard lk(mu_);
    return injected_;
}

}  // namespace mpq::block
