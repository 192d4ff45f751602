// What the block layer may still do once the process runs sandboxed: drives
// added at run time (blockdev-add, drive_add) open no path the sandbox
// forbids, start no thread and create no io_uring ring.
#pragma once

#include <cstdint>
#include <string_view>

#include "util/result.h"

namespace mpq {
class ThreadReserve;
}

namespace mpq::block {

// Opening files by path: any, read-only, or not at all (-sandbox open=rw|ro|deny).
enum class PathOpen : uint8_t { Any, ReadOnly, Deny };

struct RuntimeLimits {
    bool active = false;            // false: start-up, nothing restricted
    PathOpen path_open = PathOpen::Any;
    ThreadReserve* workers = nullptr;  // where late drives borrow I/O threads (null: none)
};

// Called once start-up is over (the remote: right after its sandbox is on).
void set_runtime_limits(RuntimeLimits limits);
const RuntimeLimits& runtime_limits();

// Whether `path` may be opened with `writable` now; the error names the way
// out (add-fd and /dev/fdset/N).
Status check_path_open(std::string_view path, bool writable);

}  // namespace mpq::block
