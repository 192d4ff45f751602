#include "block/runtime.h"

#include <cerrno>

#include "util/fdset.h"

namespace mpq::block {
namespace {
RuntimeLimits g_limits;
}

void set_runtime_limits(RuntimeLimits limits) { g_limits = limits; }
const RuntimeLimits& runtime_limits() { return g_limits; }

Status check_path_open(std::string_view path, bool writable) {
    if (!g_limits.active || fdset::is_fdset_path(path)) return {};
    if (g_limits.path_open == PathOpen::Deny)
        return fail_errno(EACCES, "Could not open '{}': the sandbox allows no new path to be opened "
                                  "(-sandbox open=deny); pass the file with add-fd and use /dev/fdset/N",
                          path);
    if (g_limits.path_open == PathOpen::ReadOnly && writable)
        return fail_errno(EACCES, "Could not open '{}' for writing: the sandbox allows read-only opens only "
                                  "(-sandbox open=ro); pass the file with add-fd and use /dev/fdset/N, "
                                  "or read-only=on",
                          path);
    return {};
}

}  // namespace mpq::block
