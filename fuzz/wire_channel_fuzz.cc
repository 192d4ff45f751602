// Hostile bytes and fds on the remote's socket: the channel's incremental
// receive plus the per-command validators, as the remote runs them. The input
// is a list of chunks, each sent as one sendmsg so frames arrive split at
// arbitrary points, optionally with fds attached (eventfds and memfds, as
// SET_IRQFD and SYNC_SYSMEM carry).
//
// Input format, repeated: [len:u8][flags:u8][len bytes]; flags bits 0..3 =
// number of fds to attach (0..15), bit 4 = memfds instead of eventfds. Bit 7
// of the first chunk's flags reads the socket as the remote's io_uring loop
// does (its own recvmsg into rx_space(), rx_commit(), next_buffered())
// instead of Channel::recv.
// Checks: no crash/UB/leak (ASan), and no fd leaks: every received fd is
// closed by the channel or frame, whatever the bytes were.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "proto/channel.h"

namespace {

// Eventfds and memfds are only ever made by this harness, and all of them
// are closed before a run ends: any still open was leaked by the code under test.
int count_our_fds(bool print) {
    int n = 0;
    for (int fd = 0; fd < 64; ++fd) {
        if (::fcntl(fd, F_GETFD) < 0) continue;
        char path[64], link[256];
        std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len <= 0) continue;
        std::string_view l(link, static_cast<size_t>(len));
        if (l.find("[eventfd]") != l.npos || l.find("memfd:fuzz") != l.npos ||
            l.find("socket:") != l.npos) {
            ++n;
            if (print) std::fprintf(stderr, "leaked fd %d -> %.*s\n", fd, int(len), link);
        }
    }
    return n;
}

void send_chunk(int sock, const uint8_t* data, size_t len, unsigned nfds, bool memfds) {
    std::vector<int> fds;
    for (unsigned i = 0; i < nfds; ++i) {
        int fd = memfds ? memfd_create("fuzz", MFD_CLOEXEC) : eventfd(0, EFD_CLOEXEC);
        if (fd >= 0) fds.push_back(fd);
    }
    uint8_t dummy = 0;
    iovec iov{const_cast<uint8_t*>(len ? data : &dummy), len ? len : 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 16)];
    if (!fds.empty()) {
        msg.msg_control = ctl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    // fds need at least one data byte to travel; an empty chunk sends none.
    if (len || !fds.empty()) (void)::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    for (int fd : fds) ::close(fd);
}

// Drains what arrived; false once the channel reports an error (the remote
// would drop the connection) or EOF.
bool drain(mpq::proto::Channel& ch, mpq::proto::Frame& f) {
    for (int guard = 0; guard < 4096; ++guard) {
        auto r = ch.recv(f);
        if (!r.ok()) return false;
        if (*r != mpq::proto::RecvState::Frame) return *r == mpq::proto::RecvState::WouldBlock;
        (void)mpq::proto::validate(f, mpq::proto::Role::Remote);
        (void)mpq::proto::validate(f, mpq::proto::Role::Proxy);
        (void)mpq::proto::cmd_name(f.cmd());
        f.close_fds();
    }
    return true;
}

// The ring server's way: one recvmsg of ours per round, then every whole
// buffered frame.
bool drain_external(mpq::proto::Channel& ch, mpq::proto::Frame& f) {
    for (int guard = 0; guard < 4096; ++guard) {
        for (;;) {
            auto r = ch.next_buffered(f);
            if (!r.ok()) return false;
            if (*r != mpq::proto::RecvState::Frame) break;
            (void)mpq::proto::validate(f, mpq::proto::Role::Remote);
            f.close_fds();
        }
        std::span<uint8_t> space = ch.rx_space();
        iovec iov{space.data(), space.size()};
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * mpq::proto::kRecvFdSpace)];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        ssize_t n = ::recvmsg(ch.fd(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0) return true;  // EAGAIN: wait for the next chunk
        auto c = ch.rx_commit(static_cast<size_t>(n), msg);
        if (!c.ok() || *c == mpq::proto::RecvState::Closed) return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    ::fcntl(sv[1], F_SETFL, O_NONBLOCK);
    {
        mpq::proto::Channel ch{mpq::UniqueFd(sv[1])};
        static mpq::proto::Frame frame;  // 200+ bytes of payload: keep it off the stack
        size_t pos = 0;
        bool alive = true;
        const bool external = size >= 2 && (data[1] & 0x80);
        auto pump = [&] { return external ? drain_external(ch, frame) : drain(ch, frame); };
        while (alive && pos + 2 <= size) {
            size_t len = data[pos];
            unsigned flags = data[pos + 1];
            pos += 2;
            if (len > size - pos) len = size - pos;
            send_chunk(sv[0], data + pos, len, flags & 15, flags & 16);
            pos += len;
            alive = pump();
        }
        if (alive) {
            ::shutdown(sv[0], SHUT_WR);
            (void)pump();
        }
        frame.reset();
    }
    ::close(sv[0]);
    if (count_our_fds(false) != 0) {
        count_our_fds(true);
        __builtin_trap();
    }
    return 0;
}
