// Trace events as QEMU's log backend has them: `-trace PATTERN` turns events
// on, each one prints "name message" to stderr or the -D log file.
//
// Events are declared once, in the tables of events-*.def (name, typed
// arguments, format). A call site is one line:
//     MPQ_TRACE(lsi_reg_write, name, off, val);
// With the event off that costs one predictable branch on a flag; the
// arguments are not even evaluated.
#pragma once

#include <atomic>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace mpq::opts {
struct CommandLine;
}

namespace mpq::trace {

struct Event {
    const char* name;
    std::atomic<bool> on{false};
};

#define MPQ_TRACE_EVENT(name, params, args, fmt) \
    extern Event ev_##name;                      \
    void emit_##name params;
#include "trace/events.def"
#undef MPQ_TRACE_EVENT

// All events, in table order (the order `-trace help` lists them).
std::span<Event* const> all_events();
Event* find_event(std::string_view name);

// QEMU's patterns: '*' any run of characters, '?' one character.
bool is_pattern(std::string_view s);
bool glob_match(std::string_view pattern, std::string_view name);
// Sets every event matching `pattern`; returns how many matched.
size_t set_state(std::string_view pattern, bool on);

// -trace [enable=]PATTERN | events=FILE | file=FILE | help. Warnings for
// unknown exact names are printed as QEMU does; hard errors come back.
// `log_file` receives file=FILE (it replaces -D, as in QEMU).
enum class OptionOutcome { Continue, ExitSuccess };
Result<OptionOutcome> apply_option(std::string_view text, std::string* log_file);
// Both programs' start-up: every -trace in order, then -msg. `log_file`
// receives the last file=FILE.
Result<OptionOutcome> configure(const opts::CommandLine& cl, std::string* log_file);
// "NAME\n" per event, as `-trace help`.
std::string list_events();

// -msg timestamp=on: "PID@SECONDS.USEC:" before each line.
void set_timestamps(bool on);
// Lines per second the process may print before it drops lines (counted
// and reported on the next line that gets through); 0 = no limit.
inline constexpr uint64_t kDefaultRateLimit = 50000;
void set_rate_limit(uint64_t lines_per_second);
uint64_t dropped_lines();

// Formats and writes one line (called by the generated emit_* only).
[[gnu::format(printf, 2, 3)]] void write_event(const Event& ev, const char* fmt, ...);

}  // namespace mpq::trace

#define MPQ_TRACE_ON(name) __builtin_expect(::mpq::trace::ev_##name.on.load(std::memory_order_relaxed), 0)
#define MPQ_TRACE(name, ...)                                            \
    do {                                                                \
        if (MPQ_TRACE_ON(name)) ::mpq::trace::emit_##name(__VA_ARGS__); \
    } while (0)
