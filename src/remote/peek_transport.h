// The worker's transport (`-x-worker on`, remote/worker.h): the socket is
// read with MSG_PEEK, so a request stays in the kernel until the state that
// includes its effect is published. A round goes:
//   readable -> one peek (bytes + copies of their fds) -> frames handed out
//   by next() -> replies queued by send() -> at the round's end the owner
//   publishes the state with request_bytes() and queued_replies(), then
//   consume() takes the request bytes off the socket and flush() sends the
//   replies.
// Frames are never re-peeked within a round: next() says WouldBlock once the
// peeked bytes are used up, and the socket is peeked again only after
// consume().
// With the loop's ring (EventLoop::enable_ring), flush() hands the replies
// and the next peek to the ring together and submits them at once: one
// io_uring_enter sends, and the peek's completion wakes the loop, instead of
// a readiness wake-up, an epoll_wait, a recvmsg and a send per round.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "remote/conn_transport.h"

namespace mpq::remote {

class PeekTransport final : public ConnTransport {
public:
    PeekTransport(EventLoop& loop, UniqueFd sock, int send_timeout_ms);
    ~PeekTransport() override;

    bool start(Handlers h) override;
    Result<proto::RecvState> next(proto::Frame& f) override;
    bool frame_ready() const override;
    Status send(std::vector<uint8_t>& out) override;
    bool wait() override { return true; }
    int fd() const override { return sock_.get(); }

    // The bytes of the frames next() handed out this round.
    std::span<const uint8_t> request_bytes() const { return {buf(), used_}; }
    // Offset of the frame next() returned last, in request_bytes().
    size_t last_frame_offset() const { return last_off_; }
    std::span<const uint8_t> queued_replies() const { return replies_; }
    // Takes request_bytes() off the socket (their fds, received again, are closed).
    Status consume();
    // Sends the queued replies and, in ring mode, arms the next peek. `Now`:
    // sent before it returns (blocking, bounded by the send timeout), for a
    // worker about to leave; `Queued` may leave the send to the ring, which
    // gets it before flush() returns but reports a failure later (ended()).
    enum class Flush : uint8_t { Now, Queued };
    Status flush(Flush how);
    // Sends bytes outside a round (a successor re-sending a lost reply).
    Status send_now(std::span<const uint8_t> bytes);
    // Peeks the head of the socket without handing frames out (a successor
    // settling the last round); returns what is there now, up to `max`.
    Result<std::vector<uint8_t>> peek_head(size_t max);
    // Consumes exactly `n` bytes (they were peeked before).
    Status discard(size_t n);

private:
    // What the kernel may still write or read after the transport is gone
    // (a peek or send in the ring): kept alive by the ring's completion.
    struct Ring;
    Status peek();
    void took_peek(ssize_t n, msghdr& msg);
    bool arm_ring();
    bool watch();
    bool partial_frame() const;
    void look_again_later();
    static void ring_peeked(const std::shared_ptr<Ring>& r, int res);
    const uint8_t* buf() const;

    EventLoop& loop_;
    UniqueFd sock_;
    int send_timeout_ms_;
    bool watched_ = false;
    Handlers h_;
    std::shared_ptr<Ring> r_;   // the peek buffer; the ring's operations in flight
    bool ring_mode_ = false;
    size_t have_ = 0;           // peeked bytes in the buffer
    size_t used_ = 0;           // bytes of the frames handed out
    size_t last_off_ = 0;
    bool peeked_ = false;       // the buffer holds this round's peek
    bool eof_ = false;
    bool waiting_rest_ = false;  // a part of a frame was peeked; look again later
    std::vector<UniqueFd> fds_;  // copies of the fds of the peek
    std::vector<uint8_t> replies_;
};

}  // namespace mpq::remote
