// Serves the QEMU 7.2 wire protocol (plus the negotiated MPQEXT extensions)
// on the remote's sockets: per connection, a protocol core (WireSession,
// remote/wire_session.h) that turns frames into device actions and replies,
// and a transport (remote/conn_transport.h) that moves the bytes: the event
// loop's io_uring when the loop is in ring mode, plain epoll + recvmsg/sendmsg
// otherwise. serve() below, the one loop between the two, is the same for both.
//
// A frame that was read whole but is invalid never costs the connection (see
// wire_session.h); the connection is dropped only when the stream is out of
// sync (truncated frame, size > 192, socket error).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mem/guest_memory.h"
#include "proto/channel.h"
#include "remote/conn_transport.h"
#include "remote/irq_line.h"
#include "remote/wire_session.h"

namespace mpq {
class EventLoop;
}
namespace mpq::pci {
class PciDevice;
}

namespace mpq::remote {

class DeviceServer {
public:
    // Called when the last connection is gone: true if it went away in an
    // orderly way (EOF at a frame boundary).
    using OnIdle = std::function<void(bool orderly)>;

    DeviceServer(EventLoop& loop, GuestMemory& memory, OnIdle on_idle);
    ~DeviceServer();
    DeviceServer(const DeviceServer&) = delete;
    DeviceServer& operator=(const DeviceServer&) = delete;

    // Serves `sock` (made non-blocking); `devices[0]` is the default device,
    // the others are reachable through SELECT_DEVICE after MULTIDEV is
    // negotiated.
    Status add_connection(UniqueFd sock, std::vector<ServedDevice> devices);
    size_t connections() const { return conns_.size(); }

    // Worker mode (remote/worker.h): connections read with MSG_PEEK, the
    // complete state published at the end of every round before its
    // replies go out. `capture` returns the encoded device state.
    using CaptureState = std::function<Result<std::vector<uint8_t>>()>;
    // `drain` waits for the drives' I/O in flight (their completions then
    // queue device work); `capture` takes and encodes the state.
    using Drain = std::function<void()>;
    void enable_publishing(Drain drain, CaptureState capture);
    // A successor takes over from the last published round: connection
    // state, the fds its predecessor handed to the supervisor, the journal
    // (a request handled but not consumed is consumed, not re-applied; its
    // replies are sent unless they went out already). Call after every
    // add_connection(), before the loop runs.
    Status take_over();
    const ServerStats& stats() const { return stats_; }

private:
    struct Conn;
    // Takes and handles the frames `c` has buffered, up to a budget; sends
    // the replies; waits for more when none is left.
    void serve(Conn& c);
    // Runs the device work that frames served so far started, before a
    // read is answered and before waiting for more (see the .cc).
    void settle();
    void defer_serve(Conn& c);
    void ended(Conn& c, ConnTransport::End end, const std::string& why);
    void drop(Conn& c, bool orderly);
    void install_round_hooks();
    void publish_round();
    void answer_as_dead(Conn& c, const proto::Frame& f);

    EventLoop& loop_;
    GuestMemory& memory_;
    OnIdle on_idle_;
    std::vector<std::unique_ptr<Conn>> conns_;
    proto::Frame frame_;  // reused for every frame
    ServerStats stats_;
    bool round_hooks_ = false;
    bool serving_ = false;  // in serve(): frame_ is in use
    uint32_t next_index_ = 0;
    Drain drain_;
    CaptureState capture_;
};

}  // namespace mpq::remote
