// Frame transport over a SOCK_STREAM unix socket, byte-compatible with QEMU
// 7.2's mpqemu channel: header + payload in one sendmsg (two iovecs) with the
// fds as one SCM_RIGHTS message on that first sendmsg.
//
// The receive side is buffered: one recvmsg takes whatever the socket holds
// (up to kRxBufSize bytes), so a request costs one syscall instead of two
// (header, then payload), and frames a peer pipelines come out of the buffer
// without any. It works on non-blocking sockets driven by an event loop: a
// frame that arrives in pieces is kept until it is complete, and a peer that
// stops mid-frame never blocks us. On a blocking socket recv() waits for the
// rest of the frame.
//
// Fds: the kernel hands the fds of one sendmsg to the read that takes the
// first byte of that sendmsg, and ends that read with its data. Since a
// sender attaches fds to the sendmsg that starts a frame, they belong to the
// last frame that starts inside the read that brought them. Fds that come
// with a read in which no frame starts were attached mid-frame: they are
// closed and that frame is rejected by validate().
//
// Received fds are returned as they came: we do not clear O_NONBLOCK as QEMU
// does (file status flags are shared with the sender, and we poll anyway).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

struct msghdr;

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

    // The command as read: possibly one no row of the table describes.
    Cmd cmd() const { return static_cast<Cmd>(hdr.cmd); }
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
    Status send(Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds = {});
    // Sends bytes that are whole encoded frames (no fds), as send() does.
    Status send_bytes(std::span<const uint8_t> frames);
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

    // Proxy side: the reply to a synchronous request, as recv(), but
    // bytes buffered past the reply mean the peer sent something nobody asked
    // for (a remote never does): an error, the stream is out of sync.
    Result<RecvState> recv_reply(Frame& out);

    // Bytes are buffered (part of a frame, or frames not yet taken).
    bool mid_frame() const { return rx_end_ != rx_begin_; }
    // A whole frame is buffered: recv() returns it without a syscall. A
    // caller that waits for readiness must drain these first.
    bool frame_ready() const;

    // For a caller that reads the socket itself (the proxy's io_uring path,
    // which takes no fds): appends those bytes to the receive buffer as if
    // recv() had read them. False if they do not fit (nothing is appended).
    bool rx_feed(std::span<const uint8_t> bytes);

    // For a caller that reads the socket itself, fds included (the remote's
    // io_uring loop), in three steps: a read into rx_space() (only when no
    // whole frame is buffered, as recv() does), rx_commit() of what that read
    // returned, then next_buffered() until WouldBlock.
    std::span<uint8_t> rx_space();
    // `n` bytes were put at rx_space() by a recvmsg with `msg` (its control
    // data holds the fds, if any): they and the fds are kept as recv() keeps
    // them. n == 0 is EOF: Closed at a frame boundary, an error inside one.
    // Otherwise WouldBlock.
    Result<RecvState> rx_commit(size_t n, msghdr& msg);
    // The next whole buffered frame, without touching the socket.
    Result<RecvState> next_buffered(Frame& out);

    static constexpr size_t kRxBufSize = 512;  // more than one whole frame (16 + 192)

private:
    // Fds that arrived with a read, waiting for their frame to be complete.
    struct PendingFds {
        bool used = false;
        size_t at = 0;  // buffer offset of the frame they belong to
        unsigned num = 0;
        unsigned dropped = 0;
        bool ctrunc = false;
        std::array<UniqueFd, kMaxFdsOnWire> fds;
        void clear();
    };

    Error rx_fail(Error e);
    // sendmsg until `left` bytes went out (fds, if any, with the first).
    Status send_msg(const char* what, msghdr& msg, size_t left);
    // Moves a complete buffered frame into `out`; false if none is complete.
    Result<bool> take_frame(Frame& out);
    void compact();
    void attach_fds(msghdr& msg, size_t old_end);

    UniqueFd sock_;
    int send_timeout_ms_ = -1;
    alignas(8) std::array<uint8_t, kRxBufSize> rxbuf_{};
    size_t rx_begin_ = 0;  // start of the first frame not yet taken
    size_t rx_end_ = 0;    // end of the bytes received
    // Before a read every complete frame has been taken, so at most the
    // incomplete frame at rx_begin_ and one frame starting in the new read
    // can have fds pending.
    std::array<PendingFds, 2> pending_;
};

// The receiver's validity rules (spec §1.4, plus our stricter "no fds where
// none belong"), read from the message table (wire.h): direction, payload
// size, fd count. A failing frame was still read whole, so the stream stays
// in sync.
Status validate(const Frame& f, Role receiver);

// Appends one encoded frame (header + payload) to `out`: what a transport
// that batches its sends puts on the socket.
void encode(std::vector<uint8_t>& out, Cmd cmd, std::span<const uint8_t> payload);
template <typename T>
std::span<const uint8_t> bytes_of(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    return std::span(reinterpret_cast<const uint8_t*>(&v), sizeof(T));
}

// Checks that `fd` is an eventfd (SET_IRQFD carries two).
bool is_eventfd(int fd);

}  // namespace mpq::proto
