// A raw disk image held in memory: the protocol driver the file driver is,
// over a byte vector instead of a host file, for tests and fuzzers that
// must not touch the file system. Same semantics as a buffered raw file:
// reads past the end read zeroes, writes past the end grow the image,
// discard leaves zeroes (a punched hole), read-only images refuse writes
// with EROFS. Growth past `max_size` fails with ENOSPC, as a full disk.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "block/block.h"

namespace mpq::block {

struct MemImage {
    std::vector<uint8_t> bytes;
    uint64_t max_size = 1ull << 30;
    uint64_t flushes = 0;  // flush() calls that succeeded
};

// The image is shared so a test can look at what reached the "disk" after
// the driver (and the backend owning it) are gone.
std::unique_ptr<BlockDriver> make_mem_driver(std::shared_ptr<MemImage> image,
                                             ReadOnly ro = ReadOnly::No);

}  // namespace mpq::block
