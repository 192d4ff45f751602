#include "util/uring_restrict.h"

#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace mpq {

namespace {

// Debian's liburing 2.3 declares but does not export the two helpers.
int ring_register(int ring_fd, unsigned op, void* arg, unsigned n) {
    long rc = ::syscall(__NR_io_uring_register, ring_fd, op, arg, n);
    return rc < 0 ? -errno : 0;
}

}  // namespace

Status restrict_uring(int ring_fd, std::span<const uint8_t> ops, uint8_t sqe_flags) {
    std::vector<io_uring_restriction> res(ops.size() + 1);
    for (size_t i = 0; i < ops.size(); ++i) {
        res[i].opcode = IORING_RESTRICTION_SQE_OP;
        res[i].sqe_op = ops[i];
    }
    res.back().opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    res.back().sqe_flags = sqe_flags;
    if (int err = ring_register(ring_fd, IORING_REGISTER_RESTRICTIONS, res.data(), static_cast<unsigned>(res.size()));
        err != 0) {
        return fail_errno(-err, "io_uring restrictions: {}", std::strerror(-err));
    }
    if (int err = ring_register(ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0); err != 0)
        return fail_errno(-err, "io_uring enable: {}", std::strerror(-err));
    return {};
}

}  // namespace mpq
