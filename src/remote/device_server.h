// Serves the QEMU 7.2 wire protocol (plus the negotiated MPQEXT extensions)
// on the remote's sockets. The register path stays lean: the epoll handler
// reads frames straight from the socket into one reusable Frame, drains what
// is available (up to the first request that needs a reply), dispatches
// without allocating and answers with one sendmsg.
//
// With the event loop in ring mode (EventLoop::enable_ring) a connection is
// served through the loop's io_uring instead: a
// receive is always pending on the socket and replies are queued sends, so
// the loop's one io_uring_enter per round both sends the last reply and waits
// for the next request.
//
// Unlike stock QEMU, bad input does not kill the process: a frame that was
// read whole (unknown command, wrong size or fds, out-of-range access, bad
// fd type) gets one log line and, where a reply is due, an all-ones RET; the
// connection is dropped only when the stream is out of sync (truncated frame,
// size > 192, socket error).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mem/guest_memory.h"
#include "proto/channel.h"
#include "remote/irq_line.h"

namespace mpq {
class EventLoop;
}
namespace mpq::pci {
class PciDevice;
}

namespace mpq::remote {

// What a connection may address.
struct ServedDevice {
    std::string id;
    pci::PciDevice* dev = nullptr;
    EventfdIrqLine* irq = nullptr;
};

struct ServerStats {
    uint64_t frames = 0;
    uint64_t bad_frames = 0;
    uint64_t resets = 0;
    uint64_t sysmem_updates = 0;
};

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
    const ServerStats& stats() const { return stats_; }

private:
    struct Conn;
    struct RingIo;
    void on_readable(Conn& c);
    // Stops watching `c` (epoll or ring); its pending ring operations are
    // cancelled and find it gone when they complete.
    void forget(Conn& c);
    // Ring mode.
    std::shared_ptr<RingIo> make_ring_io(Conn* c);
    bool ring_arm_recv(Conn& c);
    void ring_received(Conn& c, int res);
    void ring_serve_buffered(Conn& c);
    void ring_queue(Conn& c, const proto::Header& h, std::span<const uint8_t> payload);
    // false: the connection is gone (closed or out of sync).
    bool handle(Conn& c, proto::Frame& f);
    void reply(Conn& c, uint64_t v);
    void trace(const Conn& c, const proto::Frame& f);  // -d: one line per frame
    void reply_empty(Conn& c);
    void drop(Conn& c, bool orderly);

    void do_cfg_read(Conn& c, const proto::Frame& f);
    void do_cfg_write(Conn& c, const proto::Frame& f);
    void do_bar_read(Conn& c, const proto::Frame& f);
    // Ack::None: a posted write (BAR_WRITE_POSTED), nothing goes back.
    enum class Ack : uint8_t { Ret, None };
    void do_bar_write(Conn& c, const proto::Frame& f, Ack ack);
    void ack(Conn& c, Ack a, uint64_t v);
    void do_sync_sysmem(Conn& c, proto::Frame& f);
    void do_set_irqfd(Conn& c, proto::Frame& f);
    void do_device_reset(Conn& c);
    void do_select_device(Conn& c, const proto::Frame& f);
    void do_mirror_setup(Conn& c, proto::Frame& f);
    // Round hooks of the loop, installed with the first mirror.
    void mirrors_begin();
    void mirrors_publish();

    EventLoop& loop_;
    GuestMemory& memory_;
    OnIdle on_idle_;
    std::vector<std::unique_ptr<Conn>> conns_;
    proto::Frame frame_;  // reused for every frame
    ServerStats stats_;
    std::vector<RamRegion> regions_;  // reused for SYNC_SYSMEM
    bool round_hooks_ = false;
};

}  // namespace mpq::remote
