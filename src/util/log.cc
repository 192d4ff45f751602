#include "util/log.h"

#include <cstdio>
#include <mutex>
#include <string>

namespace mpq::log {
namespace {
std::string g_name = "mpqemu";
FILE* g_out = nullptr;
Level g_level = Level::Info;
std::mutex g_mu;  // block I/O worker threads may log too
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
    fmt::print(out, "{}: {}{}\n", g_name, kTag[static_cast<int>(level)], msg);
}

}  // namespace mpq::log
