// Bus-master view of guest-physical memory. Devices reach guest RAM only
// through this interface; every implementation checks addr + len for overflow
// and bounds and reports a failure instead of touching memory it does not own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "util/result.h"

namespace mpq {

class DmaSpace {
public:
    virtual ~DmaSpace() = default;
    virtual Status read(uint64_t gpa, std::span<uint8_t> out) = 0;
    virtual Status write(uint64_t gpa, std::span<const uint8_t> in) = 0;
    // Direct pointer to [gpa, gpa+len) if it lies inside one RAM region, else
    // an empty span. Valid until the memory table changes (SYNC_SYSMEM):
    // callers must not keep it across a return to the event loop.
    virtual std::span<uint8_t> map(uint64_t gpa, uint64_t len) = 0;
};

}  // namespace mpq
