// An in-memory protocol driver for tests and fuzzing. It can simulate a
// power failure: the image keeps what was flushed plus a random subset of
// the writes issued since the last flush.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "block/block.h"

namespace mpq::block::qcow2 {

struct MemStore {
    std::vector<uint8_t> data;     // what reads see
    std::vector<uint8_t> durable;  // what survives a power failure
    struct Write {
        uint64_t off;
        std::vector<uint8_t> bytes;
    };
    std::vector<Write> unflushed;
    bool track_durability = false;
    uint64_t max_size = 1ull << 32;  // writes beyond fail with ENOSPC
    uint64_t writes = 0, flushes = 0;
    int64_t fail_write_at = -1;  // the n-th write (0-based) fails with EIO
    // Power failure in the middle of an operation: just before the n-th
    // write, `crashed` receives crash_image() and I/O goes on.
    int64_t crash_at_write = -1;
    std::vector<uint8_t> crashed;
    bool has_crashed = false;
    // The process dying just before the n-th write: `killed` receives what
    // reads saw then (the kernel keeps every completed write of a killed
    // process) and I/O goes on.
    int64_t kill_at_write = -1;
    std::vector<uint8_t> killed;
    bool has_killed = false;
    std::mt19937_64 rng{1};

    // The image after a power failure at this instant.
    std::vector<uint8_t> crash_image(std::mt19937_64& rng) const;
};

std::unique_ptr<BlockDriver> make_memory_file(std::shared_ptr<MemStore> store);

}  // namespace mpq::block::qcow2
