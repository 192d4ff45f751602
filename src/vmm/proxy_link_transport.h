// How a ProxyLink's frames move (the protocol itself is LinkSession's,
// vmm/proxy_link_session.h): one interface, two thin adapters.
//  * Syscalls: sendmsg, then a blocking recvmsg with the socket's receive
//    timeout (the kernel wakes us exactly when the reply lands). The fallback
//    where io_uring is forbidden (container runtimes' default seccomp
//    profiles) or not available.
//  * Uring: one io_uring_enter sends the request and brings the first bytes
//    of its reply, with the irq eventfds polled in the same ring
//    (vmm/proxy_ring.h). Frames with fds go out by sendmsg.
// Both parse with the same proto::Channel.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "proto/channel.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::vmm {

// How a request waits for its reply: one io_uring_enter per access (with the
// irq eventfds polled in the same ring), or plain sendmsg + recvmsg + poll.
enum class LinkIo : uint8_t { Uring, Syscalls };

class LinkTransport {
public:
    virtual ~LinkTransport() = default;

    // Sends a request and receives the whole frame that answers it into
    // `reply` (not yet validated). An error says why the socket is unusable
    // from now on (timeout, closed by the remote, out of sync).
    virtual Status exchange(proto::Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds,
                            proto::Frame& reply) = 0;
    // Sends a frame nobody answers.
    virtual Status send(proto::Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds) = 0;
    virtual int fd() const = 0;

    // Irq eventfds watched along with the replies: -1 when this transport
    // cannot (then the caller polls the fd itself).
    virtual int watch_irq(int fd) = 0;
    virtual void unwatch_irq(int slot) = 0;
    // The eventfd behind `slot` was written before the last reply arrived.
    virtual bool irq_signalled(int slot) = 0;
    virtual bool uses_ring() const = 0;
};

// `sock`: a connected, blocking AF_UNIX stream socket whose receive timeout
// is `timeout_ms`. LinkIo::Uring falls back to syscalls where io_uring is
// not available. `poll_us`: see vmm/reply_poll.h.
std::unique_ptr<LinkTransport> make_link_transport(UniqueFd sock, LinkIo io, uint32_t timeout_ms,
                                                   uint32_t poll_us);

}  // namespace mpq::vmm
