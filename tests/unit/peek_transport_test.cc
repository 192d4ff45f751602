// The -x-worker transport (remote/peek_transport.h) with a peer that writes
// a frame in pieces: nothing is handed out until the frame is whole, then
// the frame arrives once, on the epoll path and on the loop's ring.
#include "remote/peek_transport.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "proto/channel.h"
#include "util/event_loop.h"

namespace mpq::remote {
namespace {

TEST(PeekTransport, AFrameWrittenInPiecesIsHandedOutWhole) {
    for (bool ring : {false, true}) {
        SCOPED_TRACE(ring ? "ring" : "epoll");
        EventLoop loop;
        if (ring && !loop.enable_ring()) GTEST_SKIP() << "no usable io_uring here";
        int sv[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        UniqueFd peer(sv[0]);
        PeekTransport t(loop, UniqueFd(sv[1]), 1000);
        std::vector<std::vector<uint8_t>> got;
        std::string ended;
        proto::Frame f;
        ASSERT_TRUE(t.start({[&] {
                                 for (;;) {
                                     auto r = t.next(f);
                                     if (!r.ok()) {
                                         ended = r.error().message;
                                         return;
                                     }
                                     if (*r != proto::RecvState::Frame) return;
                                     got.emplace_back(f.payload.begin(), f.payload.begin() + f.size());
                                 }
                             },
                             [&](ConnTransport::End, const std::string& why) { ended = why; }}));
        std::vector<uint8_t> bytes;
        const uint8_t payload[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        proto::encode(bytes, proto::Cmd::BarRead, payload);
        ASSERT_EQ(::write(peer.get(), bytes.data(), 10), 10);
        for (int i = 0; i < 20; i++) loop.run_once(1);
        EXPECT_TRUE(got.empty());
        EXPECT_EQ(ended, "");
        ASSERT_EQ(::write(peer.get(), bytes.data() + 10, bytes.size() - 10), static_cast<ssize_t>(bytes.size() - 10));
        for (int i = 0; i < 200 && got.empty() && ended.empty(); i++) loop.run_once(10);
        ASSERT_EQ(ended, "");
        ASSERT_EQ(got.size(), 1u);
        EXPECT_EQ(got[0], std::vector<uint8_t>(std::begin(payload), std::end(payload)));
    }
}

}  // namespace
}  // namespace mpq::remote
