// What the register mirror (MPQEXT REG_MIRROR) costs: the remote's
// publication of the LSI register window at the end of each event-loop round
// (begin + fill + stores), and the proxy's read of one register from the
// page instead of a round trip.
#include <sys/mman.h>
#include <unistd.h>
#include <fcntl.h>

#include <benchmark/benchmark.h>

#include "hw/lsi53c895a.h"
#include "proto/reg_mirror.h"
#include "remote/reg_mirror.h"
#include "util/event_loop.h"

using namespace mpq;

namespace {

struct Page {
    UniqueFd fd{::memfd_create("bench-mirror", MFD_CLOEXEC | MFD_ALLOW_SEALING)};
    const proto::MirrorPage* view = nullptr;
    Page() {
        if (::ftruncate(fd.get(), proto::kMirrorPageSize) != 0 ||
            ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
            return;
        void* p = ::mmap(nullptr, proto::kMirrorPageSize, PROT_READ, MAP_SHARED, fd.get(), 0);
        if (p != MAP_FAILED) view = static_cast<const proto::MirrorPage*>(p);
    }
    ~Page() {
        if (view) ::munmap(const_cast<proto::MirrorPage*>(view), proto::kMirrorPageSize);
    }
};

// An LSI controller publishing into a page the "proxy" maps read-only.
struct Rig {
    EventLoop loop;
    std::unique_ptr<hw::Lsi53c895a> lsi = hw::make_lsi53c895a(loop, "lsi0");
    Page page;
    Result<std::unique_ptr<remote::RegMirror>> m =
        remote::RegMirror::attach(UniqueFd(::dup(page.fd.get())), *lsi, nullptr);
    bool ok() const { return page.view && m.ok(); }
};

void BM_RemotePublishLsiWindow(benchmark::State& state) {
    Rig rig;
    if (!rig.ok()) {
        state.SkipWithError("mirror setup");
        return;
    }
    uint64_t n = 0;
    for (auto _ : state) {
        (*rig.m)->begin();
        (*rig.m)->publish(++n);
    }
}
BENCHMARK(BM_RemotePublishLsiWindow);

void BM_ProxyMirrorReadl(benchmark::State& state) {
    Rig rig;
    if (!rig.ok()) {
        state.SkipWithError("mirror setup");
        return;
    }
    (*rig.m)->publish(0);
    for (auto _ : state) {
        auto v = proto::mirror_read(*rig.page.view, 1, 0x34, 4, 0);
        benchmark::DoNotOptimize(v);
    }
}
BENCHMARK(BM_ProxyMirrorReadl);

}  // namespace
