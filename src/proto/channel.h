// Frame transport over a SOCK_STREAM unix socket, byte-compatible with QEMU
// 7.2's mpqemu channel: header + payload in one sendmsg (two iovecs) with the
// fds as one SCM_RIGHTS message on that first sendmsg; the receiver reads the
// header (collecting fds), then exactly `size` payload bytes.
//
// The receive side is incremental so that it works on non-blocking sockets
// driven by an event loop: a frame that arrives in pieces is kept in the
// channel until it is complete, and a peer that stops mid-frame never blocks
// us. On a blocking socket recv() simply waits for the whole frame.
//
// Received fds are returned as they came: we do not clear O_NONBLOCK as QEMU
// does (file status flags are shared with the sender, and we poll anyway).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "proto/wire.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::proto {

// Which side receives a frame: requests go to the remote, replies to the proxy.
enum class Role : uint8_t { Remote, Proxy };

// One frame, allocation-free: inline payload and a fixed fd array.
struct Frame {
    Header hdr{};
    alignas(8) std::array<uint8_t, kMaxPayload> payload{};
    std::array<UniqueFd, kMaxFdsOnWire> fds;
    unsigned num_fds = 0;
    // More fds arrived than the frame can hold (or the kernel truncated the
    // control data): all of them were closed; validate() rejects the frame.
    unsigned dropped_fds = 0;
    bool ctrunc = false;

    int32_t cmd() const { return hdr.cmd; }
    uint64_t size() const { return hdr.size; }
    // Copies the payload out as T. Callers validate the size first; a short
    // payload reads as zero-padded, never past the buffer.
    template <typename T>
    T as() const {
        static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kMaxPayload);
        T v;
        std::memcpy(&v, payload.data(), sizeof(T));
        return v;
    }
    // Takes fd `i` out of the frame (the frame no longer closes it).
    UniqueFd take_fd(unsigned i) { return i < num_fds ? std::move(fds[i]) : UniqueFd(); }
    void close_fds();
    // Back to an empty frame (fds closed, payload zeroed up to the old size).
    void reset();
};

enum class RecvState : uint8_t {
    Frame,       // `out` holds a complete frame
    WouldBlock,  // non-blocking socket: nothing more yet (a partial frame is kept)
    Closed,      // orderly EOF at a frame boundary
};

class Channel {
public:
    Channel() = default;
    explicit Channel(UniqueFd sock) : sock_(std::move(sock)) {}
    Channel(Channel&&) = default;
    Channel& operator=(Channel&&) = default;

    int fd() const { return sock_.get(); }
    bool valid() const { return sock_.valid(); }
    void close();
    // How long send() waits for room on a full non-blocking socket before it
    // fails (-1 = forever). A server sets a bound so that a peer that sends
    // requests but never reads the replies cannot stall its event loop.
    void set_send_timeout_ms(int ms) { send_timeout_ms_ = ms; }

    // Sends one frame. Writes the rest after a partial sendmsg (without fds),
    // retries EINTR, waits for POLLOUT on a non-blocking socket. At most
    // kMaxFdsOnWire fds, at most kMaxPayload bytes.
    Status send(int32_t cmd, std::span<const uint8_t> payload, std::span<const int> fds = {});
    Status send(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds = {}) {
        return send(static_cast<int32_t>(cmd), payload, fds);
    }
    template <typename T>
    Status send_struct(Cmd cmd, const T& body, std::span<const int> fds = {}) {
        static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kMaxPayload);
        return send(cmd, std::span(reinterpret_cast<const uint8_t*>(&body), sizeof(T)), fds);
    }
    Status send_ret(uint64_t value) { return send_struct(Cmd::Ret, value); }
    // The DEVICE_RESET reply: a bare header with size 0.
    Status send_empty(Cmd cmd) { return send(cmd, {}); }

    // Receives the next frame into `out` (its old contents are dropped).
    // Errors (EOF inside a frame, size > 192, socket errors) mean the stream
    // is out of sync: the caller should drop the connection. Any fds of the
    // broken frame have been closed.
    Result<RecvState> recv(Frame& out);

    // Proxy side only (h-vmm): the reply to a synchronous request. A remote
    // never sends anything unsolicited, so the header and a u64 RET payload
    // are read with one recvmsg instead of two; a reply of another size is
    // completed as recv() does. Bytes past the frame, or fds (a RET never
    // carries any; they are discarded and reported as truncated control
    // data, which validate() rejects), mean the peer is out of protocol.
    Result<RecvState> recv_reply(Frame& out);

    // A frame has been partly received.
    bool mid_frame() const { return rx_have_ != 0; }

private:
    Error rx_fail(Error e);

    UniqueFd sock_;
    int send_timeout_ms_ = -1;
    Frame rx_;          // frame being assembled
    size_t rx_have_ = 0;  // bytes of header + payload received so far
};

// The receiver's validity rules (spec §1.4, plus our stricter "no fds where
// none belong"), one check per command. A failing frame was still read whole,
// so the stream stays in sync.
Status validate(const Frame& f, Role receiver);

// "PCI_CFGREAD", ..., "cmd 9" for unknown values.
const char* cmd_name(int32_t cmd);

// Checks that `fd` is an eventfd (SET_IRQFD carries two).
bool is_eventfd(int fd);

}  // namespace mpq::proto
