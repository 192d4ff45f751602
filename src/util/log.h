// One-line diagnostics to stderr (or the -D log file), prefixed with the
// program name, as QEMU's error_report() does.
#pragma once

#include <cstdio>
#include <string_view>

#include <fmt/format.h>

namespace mpq::log {

enum class Level { Error, Warning, Info, Debug };

void set_program_name(std::string_view name);
// Redirects all further output to `path` (QEMU's -D). Returns false on failure.
bool set_file(const char* path);
void set_level(Level max_level);
void write(Level level, std::string_view msg);
// As write(), with QEMU's location between the program name and the level:
// `where` is ": -trace x" or ":FILE:LINE" ("prog: -trace x: warning: ...").
void write_at(Level level, std::string_view where, std::string_view msg);
// The fd log lines go to (the -D file or stderr); trace lines share it.
int output_fd();
// -msg timestamp=on: an ISO 8601 UTC time before each message.
void set_timestamps(bool on);
// Cheap test so that disabled levels cost no formatting (hot paths).
bool enabled(Level level);

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Error)) write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Warning)) write(Level::Warning, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Info)) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Debug)) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace mpq::log
