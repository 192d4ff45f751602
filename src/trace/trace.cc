#include "trace/trace.h"

#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "util/log.h"
#include "util/options.h"

namespace mpq::trace {

// ------------------------------------------------------------- the table --

#define MPQ_TRACE_ARGS(...) __VA_OPT__(, ) __VA_ARGS__
#define MPQ_TRACE_EVENT(name, params, args, fmt) \
    Event ev_##name{#name};                      \
    void emit_##name params { write_event(ev_##name, fmt MPQ_TRACE_ARGS args); }
#include "trace/events.def"
#undef MPQ_TRACE_EVENT

namespace {

#define MPQ_TRACE_EVENT(name, params, args, fmt) &ev_##name,
Event* const kAll[] = {
#include "trace/events.def"
};
#undef MPQ_TRACE_EVENT

std::atomic<bool> g_timestamps{false};
std::atomic<uint64_t> g_rate{kDefaultRateLimit};
std::atomic<uint64_t> g_window{0};       // second the count below belongs to
std::atomic<uint64_t> g_in_window{0};    // lines admitted in it
std::atomic<uint64_t> g_dropped{0};      // total
std::atomic<uint64_t> g_unreported{0};   // dropped since the last report line

uint64_t coarse_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec);
}

// The guest decides how often device events fire: a per-second budget keeps
// a flood of them from filling the host's disk or pinning a core on output.
bool admit() {
    uint64_t rate = g_rate.load(std::memory_order_relaxed);
    if (rate == 0) return true;
    uint64_t now = coarse_seconds();
    uint64_t w = g_window.load(std::memory_order_relaxed);
    if (w != now && g_window.compare_exchange_strong(w, now)) g_in_window.store(0);
    if (g_in_window.fetch_add(1, std::memory_order_relaxed) < rate) return true;
    g_dropped.fetch_add(1, std::memory_order_relaxed);
    g_unreported.fetch_add(1, std::memory_order_relaxed);
    return false;
}

int thread_id() {
    thread_local int tid = static_cast<int>(::syscall(SYS_gettid));
    return tid;
}

constexpr size_t kMaxLine = 4096;

// One write(2) per line: lines of concurrent threads never interleave, and
// the output goes to an fd opened before the sandbox closed open(2).
void put_line(const Event& ev, const char* fmt, va_list ap) {
    thread_local char buf[kMaxLine];
    size_t n = 0;
    if (g_timestamps.load(std::memory_order_relaxed)) {
        timeval tv{};
        gettimeofday(&tv, nullptr);
        int r = std::snprintf(buf, kMaxLine, "%d@%zu.%06zu:", thread_id(), static_cast<size_t>(tv.tv_sec),
                              static_cast<size_t>(tv.tv_usec));
        n = r > 0 ? static_cast<size_t>(r) : 0;
    }
    int r = std::snprintf(buf + n, kMaxLine - n, "%s ", ev.name);
    n += r > 0 ? static_cast<size_t>(r) : 0;
    if (n < kMaxLine - 1) {
        r = std::vsnprintf(buf + n, kMaxLine - n, fmt, ap);
        if (r > 0) n += static_cast<size_t>(r);
    }
    if (n > kMaxLine - 2) n = kMaxLine - 2;  // truncated: keep the newline
    buf[n++] = '\n';
    int fd = log::output_fd();
    const char* p = buf;
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        p += w;
        n -= static_cast<size_t>(w);
    }
}

void write_raw(const Event& ev, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    put_line(ev, fmt, ap);
    va_end(ap);
}

bool is_help(std::string_view s) { return s == "help" || s == "?"; }

// QEMU's trace_enable_events(): a leading '-' disables; an exact name that
// exists nowhere gets a warning, a pattern that matches nothing does not.
void enable_events(std::string_view line, std::string_view where) {
    bool on = !line.starts_with('-');
    std::string_view p = on ? line : line.substr(1);
    if (set_state(p, on) == 0 && !is_pattern(p))
        log::write_at(log::Level::Warning, where, fmt::format("trace event '{}' does not exist", p));
}

Status read_events_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return fail_errno(errno, "{}: {}", path, std::strerror(errno));
    char line[1024];
    unsigned lineno = 0;
    while (std::fgets(line, sizeof line, f)) {
        ++lineno;
        size_t len = std::strlen(line);
        if (len <= 1) continue;  // empty line
        // As QEMU: the last character is the newline; nothing else is trimmed.
        line[len - 1] = '\0';
        if (line[0] == '#') continue;
        enable_events(line, fmt::format(":{}:{}", path, lineno));
    }
    std::fclose(f);
    return {};
}

}  // namespace

void write_event(const Event& ev, const char* fmt, ...) {
    if (!admit()) return;
    if (uint64_t d = g_unreported.exchange(0, std::memory_order_relaxed))
        write_raw(ev_mpq_trace_dropped, "%" PRIu64 " trace lines dropped by the rate limit", d);
    va_list ap;
    va_start(ap, fmt);
    put_line(ev, fmt, ap);
    va_end(ap);
}

std::span<Event* const> all_events() { return kAll; }

Event* find_event(std::string_view name) {
    for (Event* e : kAll)
        if (name == e->name) return e;
    return nullptr;
}

bool is_pattern(std::string_view s) { return s.find_first_of("*?") != std::string_view::npos; }

bool glob_match(std::string_view pat, std::string_view name) {
    // Iterative matcher with one backtrack point (the last '*'): linear
    // enough for event names, no recursion on hostile patterns.
    size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
    while (n < name.size()) {
        if (p < pat.size() && (pat[p] == '?' || pat[p] == name[n])) {
            ++p;
            ++n;
        } else if (p < pat.size() && pat[p] == '*') {
            star = p++;
            mark = n;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            n = ++mark;
        } else {
            return false;
        }
    }
    while (p < pat.size() && pat[p] == '*') ++p;
    return p == pat.size();
}

size_t set_state(std::string_view pattern, bool on) {
    size_t n = 0;
    for (Event* e : kAll) {
        if (!glob_match(pattern, e->name)) continue;
        e->on.store(on, std::memory_order_relaxed);
        ++n;
    }
    return n;
}

std::string list_events() {
    std::string out;
    for (const Event* e : kAll) {
        out += e->name;
        out += '\n';
    }
    return out;
}

Result<OptionOutcome> apply_option(std::string_view text, std::string* log_file) {
    auto kv = opts::parse_keyvalues(text, "enable");
    if (!kv.ok()) return fail("-trace {}: {}", text, kv.error().message);
    for (const auto& item : kv->items)
        if (item.key != "enable" && item.key != "events" && item.key != "file" && item.key != "x-rate-limit")
            return fail("-trace {}: Invalid parameter '{}'", text, item.key);
    // x-rate-limit=N (ours): lines per second before lines are dropped.
    if (const std::string* r = kv->find("x-rate-limit")) {
        auto v = opts::parse_uint(*r, "x-rate-limit");
        if (!v.ok()) return fail("-trace {}: {}", text, v.error().message);
        set_rate_limit(*v);
    }
    std::string where = fmt::format(": -trace {}", text);
    if (const std::string* ev = kv->find("events")) {
        MPQ_TRY(read_events_file(*ev));
    }
    if (const std::string* f = kv->find("file"); f && log_file) *log_file = *f;
    if (const std::string* en = kv->find("enable")) {
        if (is_help(*en)) {
            std::fputs(list_events().c_str(), stdout);
            return OptionOutcome::ExitSuccess;
        }
        enable_events(*en, where);
    }
    return OptionOutcome::Continue;
}

Result<OptionOutcome> configure(const opts::CommandLine& cl, std::string* log_file) {
    for (const opts::Option* o : cl.all("trace")) {
        auto r = apply_option(o->text, log_file);
        if (!r.ok() || *r == OptionOutcome::ExitSuccess) return r;
    }
    for (const opts::Option* o : cl.all("msg")) {
        auto kv = opts::parse_keyvalues(o->text, "timestamp");
        if (!kv.ok()) return o->error(kv.error());
        for (const auto& item : kv->items)
            if (item.key != "timestamp" && item.key != "guest-name")
                return o->error("Invalid parameter '{}'", item.key);
        if (const std::string* t = kv->find("timestamp")) {
            auto on = opts::parse_bool(*t, "timestamp");
            if (!on.ok()) return o->error(on.error());
            set_timestamps(*on);
            log::set_timestamps(*on);
        }
    }
    return OptionOutcome::Continue;
}

void set_timestamps(bool on) { g_timestamps.store(on); }
void set_rate_limit(uint64_t lines_per_second) { g_rate.store(lines_per_second); }
uint64_t dropped_lines() { return g_dropped.load(); }

}  // namespace mpq::trace
