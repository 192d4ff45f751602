// Locks an io_uring to the operations its owner submits, so that a bug in
// this process cannot turn the ring into a way around seccomp (the kernel
// runs io_uring operations without consulting the seccomp filter).
#pragma once

#include <cstdint>
#include <span>

#include "util/result.h"

namespace mpq {

// `ring_fd` must come from io_uring_setup with IORING_SETUP_R_DISABLED.
// Allows exactly `ops` (IORING_OP_*) with at most the `sqe_flags` (IOSQE_*),
// no io_uring_register operation afterwards, and enables the ring.
Status restrict_uring(int ring_fd, std::span<const uint8_t> ops, uint8_t sqe_flags);

}  // namespace mpq
