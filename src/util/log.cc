#include "util/log.h"

#include <sys/time.h>
#include <time.h>

#include <cstdio>
#include <mutex>
#include <string>

namespace mpq::log {
namespace {
std::string g_name = "mpqemu";
FILE* g_out = nullptr;
Level g_level = Level::Info;
std::mutex g_mu;  // block I/O worker threads may log too
bool g_timestamps = false;

std::string timestamp() {
    if (!g_timestamps) return {};
    timeval tv{};
    gettimeofday(&tv, nullptr);
    tm t{};
    gmtime_r(&tv.tv_sec, &t);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z ", t.tm_year + 1900, t.tm_mon + 1,
                       t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<long>(tv.tv_usec));
}
}  // namespace

void set_program_name(std::string_view name) { g_name = std::string(name); }

bool set_file(const char* path) {
    FILE* f = std::fopen(path, "a");
    if (!f) return false;
    std::setvbuf(f, nullptr, _IOLBF, 0);
    std::lock_guard lk(g_mu);
    if (g_out) std::fclose(g_out);
    g_out = f;
    return true;
}

void set_level(Level max_level) { g_level = max_level; }

bool enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(g_level); }

void write(Level level, std::string_view msg) {
    if (static_cast<int>(level) > static_cast<int>(g_level)) return;
    static constexpr const char* kTag[] = {"", "warning: ", "info: ", "debug: "};
    std::lock_guard lk(g_mu);
    FILE* out = g_out ? g_out : stderr;
    fmt::print(out, "{}{}: {}{}\n", timestamp(), g_name, kTag[static_cast<int>(level)], msg);
}

void write_at(Level level, std::string_view where, std::string_view msg) {
    if (static_cast<int>(level) > static_cast<int>(g_level)) return;
    static constexpr const char* kTag[] = {"", "warning: ", "info: ", "debug: "};
    std::lock_guard lk(g_mu);
    FILE* out = g_out ? g_out : stderr;
    fmt::print(out, "{}{}{}: {}{}\n", timestamp(), g_name, where, kTag[static_cast<int>(level)], msg);
}

int output_fd() {
    FILE* out = g_out;
    return out ? fileno(out) : 2;
}

void set_timestamps(bool on) {
    g_timestamps = on;
    // glibc reads the time zone (opens /etc/localtime) on the first
    // gmtime_r: done now, while open() is allowed, not at the first
    // timestamped line after the sandbox closed it (SIGSYS).
    if (on) ::tzset();
}

}  // namespace mpq::log
