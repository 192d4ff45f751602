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
#pragma once

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
    std::span<const uint8_t> request_bytes() const { return {buf_.data(), used_}; }
    // Offset of the frame next() returned last, in request_bytes().
    size_t last_frame_offset() const { return last_off_; }
    std::span<const uint8_t> queued_replies() const { return replies_; }
    // Takes request_bytes() off the socket (their fds, received again, are closed).
    Status consume();
    // Sends the queued replies (blocking, bounded by the send timeout).
    Status flush();
    // Sends bytes outside a round (a successor re-sending a lost reply).
    Status send_now(std::span<const uint8_t> bytes);
    // Peeks the head of the socket without handing frames out (a successor
    // settling the last round); returns what is there now, up to `max`.
    Result<std::vector<uint8_t>> peek_head(size_t max);
    // Consumes exactly `n` bytes (they were peeked before).
    Status discard(size_t n);

private:
    Status peek();

    EventLoop& loop_;
    UniqueFd sock_;
    int send_timeout_ms_;
    bool watched_ = false;
    Handlers h_;
    std::vector<uint8_t> buf_;  // the peeked bytes
    size_t have_ = 0;           // peeked bytes in buf_
    size_t used_ = 0;           // bytes of the frames handed out
    size_t last_off_ = 0;
    bool peeked_ = false;       // buf_ holds this round's peek
    bool eof_ = false;
    std::vector<UniqueFd> fds_;  // copies of the fds of the peek
    std::vector<uint8_t> replies_;
};

}  // namespace mpq::remote
