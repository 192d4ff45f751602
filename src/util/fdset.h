// File descriptors handed to the process over a monitor socket (SCM_RIGHTS),
// as QEMU keeps them: numbered fd sets (QMP add-fd / remove-fd /
// query-fdsets; a file name "/dev/fdset/N" opens a dup of a member whose
// access mode fits) and named fds (getfd / closefd). A sandboxed process
// cannot open paths, so this is how it gets new files. Loop thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::fdset {

inline constexpr std::string_view kPathPrefix = "/dev/fdset/";
// Bounds what a monitor client can make the process hold.
inline constexpr size_t kMaxFds = 32;

struct Member {
    int fd = -1;
    std::string opaque;
};
struct FdSetInfo {
    int64_t id = 0;
    std::vector<Member> fds;
};

// add-fd: takes ownership of `fd`; `id` = nullopt picks the lowest free set id.
// Returns the set id (the fd number is fd.get() before the call).
Result<int64_t> add(UniqueFd fd, std::optional<int64_t> id, std::string opaque);
// remove-fd: the whole set (fd = nullopt) or one member; QEMU's messages.
Status remove(int64_t id, std::optional<int64_t> fd);
std::vector<FdSetInfo> query();
// True for "/dev/fdset/..." names.
bool is_fdset_path(std::string_view path);
// A new fd (close-on-exec) for "/dev/fdset/N" opened with `flags`: a dup of
// a member whose access mode allows it; O_DIRECT is set on the dup when asked.
Result<UniqueFd> open_path(std::string_view path, int flags);

// getfd / closefd.
Status set_named(std::string name, UniqueFd fd);
Status close_named(std::string_view name);
// Takes a named fd out of the table (x-proxy-reconnect): the caller owns it.
Result<UniqueFd> take_named(std::string_view name);

// Everything closed (tests).
void clear();

}  // namespace mpq::fdset
