// What a device worker leaves for others to read, and a worker may have been
// taken over by a guest: the slot it publishes (read by its successor,
// remote/worker.h decode_slot and judge_head) and the fd hand-over messages
// (read by the supervisor, apply_handoff).
//
// Input: [mode:u8], then
//  mode even: a publish slot. Checks: decoding never crashes; a slot that
//   decodes encodes back to the same bytes; judging the head of a socket
//   (the slot's own bytes) against each journal gives a verdict consistent
//   with the prefix rule.
//  mode odd: records of [nfds:u8 (0..3)][HandoffMsg bytes], each delivered
//   with that many fresh fds. Checks: the table stays within its bounds,
//   every fd it keeps is open, and once the table is gone every fd is closed.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "remote/worker.h"

namespace w = mpq::remote::worker;

namespace {

// memcmp, with no pointer looked at for an empty range (an empty vector's may be null).
bool same(std::span<const uint8_t> a, std::span<const uint8_t> b, size_t n) {
    return n == 0 || std::memcmp(a.data(), b.data(), n) == 0;
}

void slot_case(std::span<const uint8_t> in) {
    auto v = w::decode_slot(in);
    if (!v.ok()) return;
    auto again = w::encode_slot(v->conns, v->state);
    if (again.size() > in.size() || !same(again, in, again.size())) std::abort();
    for (const auto& c : v->conns) {
        // The slot's own tail as a socket head, at a few lengths.
        for (size_t n : {size_t{0}, c.request.size() / 2, c.request.size(), in.size()}) {
            auto head = in.subspan(0, std::min(n, in.size()));
            auto verdict = w::judge_head(head, c.request);
            const bool prefix_of_request = head.size() < c.request.size() && same(head, c.request, head.size());
            const bool starts_with_request =
                head.size() >= c.request.size() && same(head, c.request, c.request.size());
            if (verdict == w::HeadVerdict::Consume && (c.request.empty() || !starts_with_request)) std::abort();
            if (verdict == w::HeadVerdict::NotYet && (c.request.empty() || !prefix_of_request)) std::abort();
        }
    }
}

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

void handoff_case(std::span<const uint8_t> in) {
    int probe = ::eventfd(0, EFD_CLOEXEC);  // the lowest free fd number now
    ::close(probe);
    {
        w::FdTable t;
        while (in.size() >= 1 + sizeof(w::HandoffMsg)) {
            unsigned nfds = in[0] % 4;
            w::HandoffMsg m;
            std::memcpy(&m, in.data() + 1, sizeof m);
            in = in.subspan(1 + sizeof m);
            std::vector<mpq::UniqueFd> fds;
            for (unsigned i = 0; i < nfds; i++) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
            w::apply_handoff(m, fds, t);
        }
        if (t.mon_listeners.size() > w::FdTable::kMaxMonitorSockets ||
            t.mon_clients.size() > w::FdTable::kMaxMonitorSockets || t.irqfds.size() > w::FdTable::kMaxDeviceFds ||
            t.mirrors.size() > w::FdTable::kMaxDeviceFds || t.sysmem.size() != t.sysmem_fds.size() ||
            t.sysmem.size() > mpq::proto::kMaxFdsOnWire)
            std::abort();
        for (const auto& f : t.sysmem_fds) if (!is_open(f.get())) std::abort();
        for (const auto& [k, p] : t.irqfds) if (!is_open(p.first.get()) || !is_open(p.second.get())) std::abort();
        for (const auto& [k, f] : t.mirrors) if (!is_open(f.get())) std::abort();
        for (const auto& [k, f] : t.mon_listeners) if (!is_open(f.get())) std::abort();
        for (const auto& [k, c] : t.mon_clients) if (!is_open(c.fd.get())) std::abort();
    }
    // Nothing leaked: the lowest free number is the same again.
    int after = ::eventfd(0, EFD_CLOEXEC);
    ::close(after);
    if (after != probe) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    std::span<const uint8_t> in(data + 1, size - 1);
    if (data[0] & 1) handoff_case(in);
    else slot_case(in);
    return 0;
}
