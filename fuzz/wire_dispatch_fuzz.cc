// Hostile frames into the remote's DeviceServer, as a VMM would send them:
// the real dispatcher with an lsi53c895a + scsi-hd (in-memory raw image,
// requests run inline on the loop thread: no I/O thread per input) behind
// it. Frames may carry fds (eventfds for SET_IRQFD, memfds for SYNC_SYSMEM
// that really map), so register accesses, DMA through the mapped "guest RAM"
// and interrupts all run.
//
// Input, repeated: [len:u8][flags:u8][len bytes]; flags bits 0..2 = fds to
// attach (0..7), bit 3 = memfds (64 KiB each, contents from the input)
// instead of eventfds, bit 4 = run the event loop until quiet afterwards.
// Checks: no crash/UB/leak (ASan), no hang (the harness reads every reply so
// the server can never block on a full socket), no fd leak.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "block/block.h"
#include "block/mem.h"
#include "hw/lsi53c895a.h"
#include "mem/guest_memory.h"
#include "remote/device_server.h"
#include "remote/irq_line.h"
#include "scsi/scsi_hd.h"
#include "util/event_loop.h"

namespace {

constexpr size_t kMemfdSize = 64 * 1024;

constexpr int kMaxFd = 128;

// The fds open before the first input (libFuzzer's, a profiler's, the
// shell's): an input cannot have leaked them, and looking them up through
// /proc after every input was a good part of its cost.
const std::vector<bool>& fds_before() {
    static const std::vector<bool> open = [] {
        std::vector<bool> v(kMaxFd);
        for (int fd = 0; fd < kMaxFd; ++fd) v[fd] = ::fcntl(fd, F_GETFD) >= 0;
        return v;
    }();
    return open;
}

int count_our_fds(bool print) {
    const std::vector<bool>& before = fds_before();
    int n = 0;
    for (int fd = 0; fd < kMaxFd; ++fd) {
        if (before[fd] || ::fcntl(fd, F_GETFD) < 0) continue;
        char path[64], link[256];
        std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len <= 0) continue;
        std::string_view l(link, static_cast<size_t>(len));
        if (l.find("[eventfd]") != l.npos || l.find("memfd:fuzz") != l.npos ||
            l.find("socket:") != l.npos || l.find("[eventpoll]") != l.npos) {
            ++n;
            if (print) std::fprintf(stderr, "leaked fd %d -> %.*s\n", fd, int(len), link);
        }
    }
    return n;
}

void send_chunk(int sock, const uint8_t* data, size_t len, unsigned nfds, bool memfds) {
    std::vector<int> fds;
    for (unsigned i = 0; i < nfds; ++i) {
        int fd = -1;
        if (memfds) {
            fd = memfd_create("fuzz", MFD_CLOEXEC);
            if (fd >= 0 && ftruncate(fd, kMemfdSize) != 0) {
                ::close(fd);
                fd = -1;
            }
            if (fd >= 0 && len) (void)::pwrite(fd, data, len, 0);  // some "guest RAM" content
        } else {
            fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        }
        if (fd >= 0) fds.push_back(fd);
    }
    uint8_t dummy = 0;
    iovec iov{const_cast<uint8_t*>(len ? data : &dummy), len ? len : 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 8)];
    if (!fds.empty()) {
        msg.msg_control = ctl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    if (len || !fds.empty()) (void)::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    for (int fd : fds) ::close(fd);
}

void drain_replies(int sock) {
    uint8_t buf[4096];
    while (::recv(sock, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    (void)fds_before();  // taken before this input opens anything
    // The disk's bytes live across inputs only to spare the allocator (a
    // fresh 128 KiB block is an mmap and 32 page faults under ASan): they
    // are zeroed here, so an input sees nothing of the one before.
    static const auto image = std::make_shared<mpq::block::MemImage>();
    image->bytes.assign(128 * 1024, 0);
    image->max_size = image->bytes.size();
    image->flushes = 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    {
        mpq::EventLoop loop;
        mpq::GuestMemory mem;
        mpq::block::DriveOptions o;
        o.id = "d0";
        auto backend = std::make_unique<mpq::block::BlockBackend>(
            loop, mpq::block::make_mem_driver(image), o, mpq::block::kInlineIo);
        mpq::scsi::ScsiHdProps props;
        props.id = "sd0";
        auto disk = mpq::scsi::make_scsi_hd(loop, *backend, props);
        if (!disk.ok()) __builtin_trap();
        auto lsi = mpq::hw::make_lsi53c895a(loop, "lsi0");
        mpq::remote::EventfdIrqLine irq(loop);
        lsi->attach_dma(&mem);
        lsi->attach_irq(&irq);
        lsi->bus().attach(0, disk->get());
        bool idle = false;
        mpq::remote::DeviceServer server(loop, mem, [&](bool) { idle = true; });
        std::vector<mpq::remote::ServedDevice> devs{{"lsi0", lsi.get(), &irq}};
        if (!server.add_connection(mpq::UniqueFd(sv[1]), devs).ok()) __builtin_trap();

        auto settle = [&](unsigned rounds) {
            for (unsigned i = 0; i < rounds; ++i) {
                drain_replies(sv[0]);
                backend->drain();
                loop.run_once(0);
            }
            drain_replies(sv[0]);
        };
        size_t pos = 0;
        while (!idle && pos + 2 <= size) {
            size_t len = data[pos];
            unsigned flags = data[pos + 1];
            pos += 2;
            if (len > size - pos) len = size - pos;
            send_chunk(sv[0], data + pos, len, flags & 7, flags & 8);
            pos += len;
            settle((flags & 16) ? 32 : 2);
        }
        ::shutdown(sv[0], SHUT_WR);
        settle(8);
        // Scope end tears down in the remote's order: server, then devices.
    }
    ::close(sv[0]);
    if (count_our_fds(false) != 0) {
        count_our_fds(true);
        __builtin_trap();
    }
    return 0;
}
