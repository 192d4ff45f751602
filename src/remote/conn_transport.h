// How the bytes of one remote connection move between its socket and the
// protocol core (remote/wire_session.h). The serving logic (DeviceServer::
// serve) is written once against this interface; the two adapters differ only
// in who reads and writes the socket:
//  * SyscallTransport: the event loop's epoll says the socket is readable,
//    recvmsg reads it, each round's replies go out with one sendmsg. The
//    fallback where io_uring is forbidden (container runtimes' default seccomp
//    profiles) or MPQ_REMOTE_LOOP=epoll asks for it.
//  * RingTransport: the event loop's io_uring (EventLoop::enable_ring) always
//    has a receive pending on the socket; the replies of a round are sent
//    linked in front of the next receive, so the loop's one io_uring_enter per
//    round both sends the last reply and waits for the next request.
// Both parse with the same proto::Channel, so framing and fd handling are
// the same whichever reads the socket.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "proto/channel.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq {
class EventLoop;
}

namespace mpq::remote {

class ConnTransport {
public:
    // Why a transport stopped delivering frames.
    enum class End : uint8_t {
        Orderly,  // the proxy closed or reset the socket: the VM is going away
        Error,    // the stream is out of sync or the socket failed
    };
    // `input`: frames (or the end of them) can be taken with next().
    // `ended`: the socket is done with; `why` is a log line.
    struct Handlers {
        std::function<void()> input;
        std::function<void(End end, const std::string& why)> ended;
    };

    virtual ~ConnTransport() = default;

    // Starts watching the socket; false if the loop refused it.
    virtual bool start(Handlers h) = 0;
    // The next whole frame: Frame, WouldBlock (wait for input()), Closed at
    // a frame boundary, or an error (the connection must be dropped).
    virtual Result<proto::RecvState> next(proto::Frame& f) = 0;
    // A whole frame is buffered: next() returns it without waiting.
    virtual bool frame_ready() const = 0;
    // Hands over the encoded replies of the frames served so far (`out` is
    // emptied): sent now, or queued for the next wait().
    virtual Status send(std::vector<uint8_t>& out) = 0;
    // Nothing more to serve for now: from here on input() reports the next
    // frames. False if the wait could not be set up.
    virtual bool wait() = 0;
    virtual int fd() const = 0;
};

// Plain syscalls, driven by the loop's epoll. `sock` is non-blocking.
std::unique_ptr<ConnTransport> make_syscall_transport(EventLoop& loop, UniqueFd sock, int send_timeout_ms);
// The loop's io_uring (the loop must be in ring mode).
std::unique_ptr<ConnTransport> make_ring_transport(EventLoop& loop, UniqueFd sock, std::string name);

// How a receive through the ring that failed with `res` (< 0, not EINTR or
// EAGAIN) ends its connection; `send_error` is the errno of the send linked
// before it, 0 if that did not fail. The proxy going away (a reset, or the
// receive cancelled behind a send that met EPIPE or ECONNRESET) is orderly.
std::pair<ConnTransport::End, std::string> ring_receive_end(int res, int send_error);

}  // namespace mpq::remote
