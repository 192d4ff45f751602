// Design notes: interrupts without KVM.
//
// Stock QEMU hands the irq/resample eventfd pair to KVM as a level-triggered
// irqfd; under TCG nothing ever reads it. We read it in user space. The remote
// writes the irq eventfd when its INTx goes 0->1 and says nothing when it goes
// back to 0; on a resample kick it writes the irq eventfd again if, and only
// if, the line is still up. Level is therefore inferred:
//
//  * irq eventfd readable -> line up. Checked on the event loop (epoll) and
//    right after every forwarded BAR access / config write, because the remote
//    writes the eventfd before it sends the RET: an interrupt raised by the
//    access itself (a SCRIPTS INT inside a DSP write) is reported before the
//    access completes, as with an in-process device. With the link's io_uring
//    that check costs no syscall: the eventfd is polled in the same ring as
//    the reply, and its completion is there before the reply's (ProxyRing).
//  * After an access that could lower the line (BAR read or write, config
//    write, device reset) while we believe it is up: drain the irq eventfd,
//    kick the resample eventfd and wait up to `resample_wait_us` for the
//    re-signal. Re-signalled -> still up, nothing changes. Silence -> lowered.
//    A re-signal that arrives after the wait (a remote slower than the wait)
//    raises the line again from the event loop: the worst case is a spurious
//    lower/raise pair, never a lost interrupt. Only accesses made while the
//    line is up pay for this; config reads cannot change the level and skip it.
//    With our remote's register mirror the level is read from the mirror
//    page instead (published before the reply): no kick, no wait.
//  * No kick on a plain irq event: while the line stays up that would make the
//    two processes ping-pong resample/irq forever.
//  * BAR writes are posted (no RET awaited) when the remote grants
//    POSTED_WRITES and the line is down: an interrupt such a write raises is
//    seen on the event loop or with the next access's reply. Guest RAM read
//    outside the socket is fenced first (Machine::fence, ProxyLink::fence).
//
// Startup of a stock remote: QEMU 7.2's x-remote starts reading the socket
// (machine-init-done notifier) before its own startup system reset, and
// carries out every frame already queued until it first finds the socket
// empty; only then does that reset run, clearing COMMAND, the BARs and the
// device registers. Under load the remote keeps finding our next request
// waiting (it is descheduled after each RET), so the reset could land in the
// middle of the BAR probe (a BAR sized as absent or 64 KiB) or after the
// guest programmed the BARs (the remote then exits on "Bad address"). So
// before the BAR probe, with a remote that did not negotiate MPQEXT, we kick
// the resample eventfd and send nothing until the remote has drained it: its
// resample handler runs in its main loop, which starts after that reset.
//
// Config space: reads are always forwarded (the remote owns it). Writes
// update a local shadow of COMMAND and the BARs through write masks derived
// from the realize-time probe, then go to the remote raw, so both sides decode
// the same absolute addresses; a memory access is only forwarded when the
// shadow says a BAR of the remote decodes all of it. Accesses that would end
// past 0xFC+4 are done as the last dword (stock remotes exit on them).
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pci/pci_device.h"
#include "trace/trace.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "vmm/proxy.h"

namespace mpq::vmm {

using proto::bytes_of;
using proto::Cmd;

namespace {

constexpr uint32_t kCfgLastDword = pci::kConfigSpaceSize - 4;
constexpr uint32_t kBarProbeCount = 7;  // 0x10..0x28, as stock probes (index 6 = CardBus CIS)

uint64_t ones(unsigned size) { return size >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * size)) - 1; }

// Drains a counter that only this process reads. Poll first: a stock remote
// clears O_NONBLOCK on the shared file description when it receives the fd.
bool consume(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN)) return false;
    uint64_t v;
    return ::read(fd, &v, sizeof v) == sizeof v;
}

bool wait_readable(int fd, uint32_t us) {
    pollfd p{fd, POLLIN, 0};
    timespec ts{static_cast<time_t>(us / 1000000), static_cast<long>(us % 1000000) * 1000};
    for (;;) {
        int r = ::ppoll(&p, 1, &ts, nullptr);
        if (r < 0 && errno == EINTR) continue;
        return r > 0 && (p.revents & POLLIN);
    }
}

}  // namespace

ProxyDevice::ProxyDevice(EventLoop& loop, std::shared_ptr<ProxyLink> link, ProxyOptions opts,
                         const VmmEvents* events)
    : loop_(loop), link_(std::move(link)), opts_(std::move(opts)), events_(events) {}

ProxyDevice::~ProxyDevice() {
    if (mirror_) ::munmap(const_cast<proto::MirrorPage*>(mirror_), proto::kMirrorPageSize);
    if (irqfd_watched_) loop_.remove_fd(irqfd_.get());
    if (irq_slot_ >= 0) link_->unwatch_irq(irq_slot_);
    link_->detach(this);
}

Result<uint64_t> ProxyDevice::cfg_read_raw(uint32_t off, unsigned len) {
    proto::PciConf c{off, 0, static_cast<int32_t>(len)};
    auto r = link_->call(*this, Cmd::PciCfgRead, bytes_of(c));
    if (r.ok()) MPQ_TRACE(mpq_proxy_config_read, opts_.id.c_str(), off, len, static_cast<uint32_t>(*r));
    return r;
}

Status ProxyDevice::cfg_write_raw(uint32_t off, uint32_t val, unsigned len) {
    proto::PciConf c{off, val, static_cast<int32_t>(len)};
    MPQ_TRACE(mpq_proxy_config_write, opts_.id.c_str(), off, len, val);
    auto r = link_->call(*this, Cmd::PciCfgWrite, bytes_of(c));
    if (!r.ok()) return r.take_error();
    if (*r != 0) log::warn("pci-proxy-dev '{}': remote refused config write at {:#x}", opts_.id, off);
    return {};
}

Status ProxyDevice::realize(const GuestRam& ram) {
    MPQ_TRY(link_->setup(ram));
    if (link_->device_count() > 0 && !(link_->features() & proto::kFeatMultiDev)) {
        return fail("{} already carries a device and the remote does not support several "
                    "devices per socket (MULTIDEV)", link_->name());
    }
    link_->attach(this);
    MPQ_TRY(link_->select(*this));

    int irq = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int res = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    irqfd_.reset(irq);
    resamplefd_.reset(res);
    if (!irqfd_ || !resamplefd_) return fail_errno(errno, "eventfd: {}", std::strerror(errno));
    int fds[2] = {irqfd_.get(), resamplefd_.get()};
    MPQ_TRY(link_->post(*this, Cmd::SetIrqfd, {}, fds));
    await_remote_startup();

    auto v = cfg_read_raw(pci::kVendorId, 2);
    if (!v.ok()) return v.take_error();
    vendor_ = static_cast<uint16_t>(*v);
    auto d = cfg_read_raw(pci::kDeviceId, 2);
    if (!d.ok()) return d.take_error();
    device_ = static_cast<uint16_t>(*d);
    auto c = cfg_read_raw(pci::kClassProg + 1, 2);
    if (!c.ok()) return c.take_error();
    class_ = static_cast<uint16_t>(*c);
    auto s = cfg_read_raw(pci::kSubsysId, 2);
    if (!s.ok()) return s.take_error();
    subsys_ = static_cast<uint16_t>(*s);

    MPQ_TRY(probe_bars());
    if (!loop_.add_fd(irqfd_.get(), FdEvents::Read, [this](uint32_t) { on_irqfd(); })) {
        return fail("cannot watch the irq eventfd of '{}'", opts_.id);
    }
    irqfd_watched_ = true;
    irq_slot_ = link_->watch_irq(irqfd_.get());
    if (link_->features() & proto::kFeatRegMirror) setup_mirror();
    realized_ = true;
    link_->watch(loop_);
    return {};
}

void ProxyDevice::await_remote_startup() {
    if (link_->negotiated()) return;  // our remote: no reset after it starts reading
    uint64_t one = 1;
    if (::write(resamplefd_.get(), &one, sizeof one) != sizeof one) return;
    // Nothing else is sent meanwhile: the remote must find the socket empty
    // to reach its main loop. Bounded: a remote that never drains the kick
    // (not QEMU 7.2) only costs this wait once.
    const uint64_t limit_us = uint64_t{std::max<uint32_t>(link_->reply_timeout_ms(), 1)} * 1000;
    uint64_t waited_us = 0, step_us = 20;
    for (;;) {
        pollfd p{resamplefd_.get(), POLLIN, 0};
        int r = ::poll(&p, 1, 0);
        if (r == 0) return;  // drained: the remote's startup reset is behind us
        if (r < 0 && errno != EINTR) return;
        if (waited_us >= limit_us) {
            log::warn("pci-proxy-dev '{}': the remote did not drain the resample eventfd within {} ms; "
                      "continuing (its startup reset may still undo early configuration)",
                      opts_.id, limit_us / 1000);
            return;
        }
        timespec ts{0, static_cast<long>(step_us) * 1000};
        ::nanosleep(&ts, nullptr);
        waited_us += step_us;
        step_us = std::min<uint64_t>(step_us * 2, 1000);
    }
}

Status ProxyDevice::probe_bars() {
    uint32_t orig[kBarProbeCount], probe[kBarProbeCount];
    for (uint32_t i = 0; i < kBarProbeCount; ++i) {
        uint32_t off = pci::kBar0 + 4 * i;
        auto o = cfg_read_raw(off, 4);
        if (!o.ok()) return o.take_error();
        MPQ_TRY(cfg_write_raw(off, 0xffffffffu, 4));
        auto p = cfg_read_raw(off, 4);
        if (!p.ok()) return p.take_error();
        MPQ_TRY(cfg_write_raw(off, static_cast<uint32_t>(*o), 4));
        orig[i] = static_cast<uint32_t>(*o);
        probe[i] = static_cast<uint32_t>(*p);
    }
    auto put32 = [](std::array<uint8_t, pci::kConfigSpaceSize>& a, uint32_t off, uint32_t v) {
        for (int b = 0; b < 4; ++b) a[off + b] = static_cast<uint8_t>(v >> (8 * b));
    };
    // COMMAND: IO, MEM, MASTER, SERR, INTX_DISABLE (0x0507, as measured on stock).
    wmask_[pci::kCommand] = 0x07;
    wmask_[pci::kCommand + 1] = 0x05;
    for (int i = 0; i < pci::kNumBars; ++i) {
        uint32_t off = pci::kBar0 + 4 * i;
        uint32_t p = probe[i];
        ProxyBar& b = bars_[i];
        put32(shadow_, off, orig[i]);
        if (p == 0) continue;
        uint64_t size = 0;
        uint32_t lowmask;
        if (p & 1) {
            uint32_t mask = p & ~3u;
            if ((mask & 0xffff0000u) == 0) mask |= 0xffff0000u;  // 16-bit I/O decoder
            size = (~mask + 1u) & 0xffffffffu;
            b.kind = ProxyBar::Kind::Io;
            lowmask = 3;
        } else if (((p >> 1) & 3) == 2 && i + 1 < pci::kNumBars) {
            uint64_t mask = (uint64_t{probe[i + 1]} << 32) | (p & ~0xfu);
            size = ~mask + 1;
            b.kind = ProxyBar::Kind::Mem64;
            lowmask = 0xf;
        } else {
            size = (~(p & ~0xfu) + 1u) & 0xffffffffu;
            b.kind = ProxyBar::Kind::Mem32;
            lowmask = 0xf;
        }
        if (size == 0 || (size & (size - 1)) != 0) {
            log::warn("pci-proxy-dev '{}': BAR{} probe {:#x} gives no usable size; ignored",
                      opts_.id, i, p);
            b.kind = ProxyBar::Kind::None;
            continue;
        }
        b.size = size;
        put32(wmask_, off, static_cast<uint32_t>(~(size - 1)) & ~lowmask);
        if (b.kind == ProxyBar::Kind::Mem64) {
            ++i;
            put32(shadow_, off + 4, orig[i]);
            put32(wmask_, off + 4, static_cast<uint32_t>(~(size - 1) >> 32));
        }
    }
    reset_value_ = shadow_;
    reset_value_[pci::kCommand] = reset_value_[pci::kCommand + 1] = 0;
    for (uint32_t off = pci::kBar0; off < pci::kBar0 + 4 * pci::kNumBars; ++off) {
        reset_value_[off] &= static_cast<uint8_t>(~wmask_[off]);
    }
    recompute_mappings();
    return {};
}

void ProxyDevice::setup_mirror() {
    UniqueFd fd(::memfd_create("mpq-reg-mirror", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) {
        log::info("pci-proxy-dev '{}': no register mirror: memfd_create: {}", opts_.id, std::strerror(errno));
        return;
    }
    // Sealed before the remote sees it: neither side can shrink the page
    // under the other's mapping.
    if (::ftruncate(fd.get(), proto::kMirrorPageSize) != 0 ||
        ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        log::info("pci-proxy-dev '{}': no register mirror: {}", opts_.id, std::strerror(errno));
        return;
    }
    void* p = ::mmap(nullptr, proto::kMirrorPageSize, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) {
        log::info("pci-proxy-dev '{}': no register mirror: mmap: {}", opts_.id, std::strerror(errno));
        return;
    }
    proto::MirrorSetup setup{proto::kMirrorPageSize};
    auto r = link_->call_with_fd(*this, Cmd::MirrorSetup, bytes_of(setup), fd.get());
    if (!r.ok() || *r != 0) {
        ::munmap(p, proto::kMirrorPageSize);
        if (r.ok()) log::info("pci-proxy-dev '{}': the remote keeps no register mirror", opts_.id);
        MPQ_TRACE(mpq_proxy_mirror_setup, opts_.id.c_str(), 0);
        return;
    }
    mirror_ = static_cast<const proto::MirrorPage*>(p);
    overlay_.reset();
    MPQ_TRACE(mpq_proxy_mirror_setup, opts_.id.c_str(), 1);
}

bool ProxyDevice::mirror_caught_up(uint64_t posted_sent) const {
    if (!mirror_) return false;
    auto done = proto::mirror_posted_done(*mirror_);
    return done && *done == posted_sent;
}

void ProxyDevice::recompute_mappings() {
    auto get32 = [&](uint32_t off) {
        return uint32_t{shadow_[off]} | uint32_t{shadow_[off + 1]} << 8 |
               uint32_t{shadow_[off + 2]} << 16 | uint32_t{shadow_[off + 3]} << 24;
    };
    uint16_t cmd = shadow_[pci::kCommand] | (shadow_[pci::kCommand + 1] << 8);
    // The rules of QEMU's pci_bar_address(), which the remote applies too.
    for (int i = 0; i < pci::kNumBars; ++i) {
        ProxyBar& b = bars_[i];
        b.mapped = ProxyBar::kUnmapped;
        uint32_t off = pci::kBar0 + 4 * i;
        uint64_t addr = 0, last = 0;
        switch (b.kind) {
        case ProxyBar::Kind::None: continue;
        case ProxyBar::Kind::Io:
            if (!(cmd & pci::kCmdIo)) continue;
            addr = get32(off) & ~(b.size - 1) & ~uint64_t{3};
            last = addr + b.size - 1;
            if (addr == 0 || last <= addr || last >= 0xffffffffu) continue;
            break;
        case ProxyBar::Kind::Mem32:
            if (!(cmd & pci::kCmdMem)) continue;
            addr = get32(off) & ~(b.size - 1) & ~uint64_t{0xf};
            last = addr + b.size - 1;
            if (addr == 0 || last <= addr || last >= 0xffffffffu) continue;
            break;
        case ProxyBar::Kind::Mem64:
            if (!(cmd & pci::kCmdMem)) continue;
            addr = ((uint64_t{get32(off + 4)} << 32) | get32(off)) & ~(b.size - 1) & ~uint64_t{0xf};
            last = addr + b.size - 1;
            if (addr == 0 || last <= addr || last == ~uint64_t{0}) continue;
            break;
        }
        b.mapped = addr;
    }
}

std::optional<pci::BarHit> ProxyDevice::decode(pci::AddressSpace space, uint64_t addr,
                                               unsigned size) const {
    for (int i = 0; i < pci::kNumBars; ++i) {
        const ProxyBar& b = bars_[i];
        if (b.mapped == ProxyBar::kUnmapped) continue;
        bool io = b.kind == ProxyBar::Kind::Io;
        if (io != (space == pci::AddressSpace::Io)) continue;
        if (addr >= b.mapped && addr - b.mapped < b.size && size <= b.size - (addr - b.mapped)) {
            return pci::BarHit{i, addr - b.mapped};
        }
    }
    return std::nullopt;
}

void ProxyDevice::apply_local_write(uint32_t off, uint32_t val, unsigned len) {
    bool touched = false;
    for (unsigned i = 0; i < len && off + i < pci::kConfigSpaceSize; ++i) {
        uint8_t m = wmask_[off + i];
        if (!m) continue;
        uint8_t b = static_cast<uint8_t>(val >> (8 * i));
        shadow_[off + i] = static_cast<uint8_t>((shadow_[off + i] & ~m) | (b & m));
        touched = true;
    }
    if (touched) recompute_mappings();
}

uint32_t ProxyDevice::config_read(uint32_t off, unsigned len) {
    if (broken_ || off >= pci::kConfigSpaceSize) return static_cast<uint32_t>(ones(len));
    if (off + 4 > pci::kConfigSpaceSize) {
        auto r = cfg_read_raw(kCfgLastDword, 4);
        if (!r.ok()) return static_cast<uint32_t>(ones(len));
        return static_cast<uint32_t>((*r >> (8 * (off - kCfgLastDword))) & ones(len));
    }
    auto r = cfg_read_raw(off, len);
    return r.ok() ? static_cast<uint32_t>(*r & ones(len)) : static_cast<uint32_t>(ones(len));
}

void ProxyDevice::config_write(uint32_t off, uint32_t val, unsigned len) {
    if (off >= pci::kConfigSpaceSize) return;
    apply_local_write(off, val, len);
    if (broken_) return;
    if (off + 4 > pci::kConfigSpaceSize) {
        auto cur = cfg_read_raw(kCfgLastDword, 4);
        if (!cur.ok()) return;
        unsigned shift = 8 * (off - kCfgLastDword);
        uint64_t m = ones(len) << shift;
        uint32_t merged = static_cast<uint32_t>((*cur & ~m) | ((uint64_t{val} << shift) & m));
        (void)cfg_write_raw(kCfgLastDword, merged, 4);
    } else {
        (void)cfg_write_raw(off, val, len);
    }
    irq_check_after_access();
}

uint64_t ProxyDevice::bar_access(bool write, int bar, uint64_t offset, uint64_t val, unsigned size) {
    if (broken_ || bar < 0 || bar >= pci::kNumBars) return ones(size);
    const ProxyBar& b = bars_[bar];
    if (b.mapped == ProxyBar::kUnmapped) return ones(size);
    if (!write && mirror_) {
        const proto::MirrorOverlay* ov = overlay_ ? &*overlay_ : nullptr;
        if (auto m = proto::mirror_read(*mirror_, bar, offset, size, link_->posted_sent(), ov)) {
            // The remote signalled the eventfd before it published a raised
            // line: take it now, as the reply of a forwarded read would.
            if (m->irq_level && !level_ && consume(irqfd_.get())) set_level(true);
            MPQ_TRACE(mpq_proxy_mirror_hit, opts_.id.c_str(), bar, offset, size, m->value & ones(size));
            return m->value & ones(size);
        }
        if (auto p = proto::mirror_predict(*mirror_, bar, offset, size, link_->posted_sent()))
            return predicted_read(b, bar, offset, *p);
    }
    proto::BarAccess a{};
    a.addr = b.mapped + offset;
    a.val = write ? (val & ones(size)) : 0;
    a.size = size;
    a.memory = b.kind == ProxyBar::Kind::Io ? 0 : 1;
    // A write is posted (no round trip) while the line is down: with the
    // line up, the write may be what lowers it, which only the synchronous
    // check after the reply can tell.
    if (write && !level_ && link_->posts_writes()) {
        MPQ_TRACE(mpq_proxy_bar_write, opts_.id.c_str(), bar, offset, size, a.val, "posted");
        (void)link_->post_write(*this, bytes_of(a));
        return 0;
    }
    auto r = link_->call(*this, write ? Cmd::BarWrite : Cmd::BarRead, bytes_of(a));
    if (!r.ok()) return ones(size);
    if (write) MPQ_TRACE(mpq_proxy_bar_write, opts_.id.c_str(), bar, offset, size, a.val, "acknowledged");
    else MPQ_TRACE(mpq_proxy_bar_read, opts_.id.c_str(), bar, offset, size, *r & ones(size));
    irq_check_after_access();
    return write ? 0 : (*r & ones(size));
}

// A read the device predicted (an interrupt status that clears when read):
// answered now, its effect on the line taken now, as the device would on the
// bus, and the read itself posted for the remote to carry out in order.
// Until it has, later reads see the predicted changes (overlay_). An irq
// signal still pending from before is dropped first: it announced the level
// the prediction replaces, and the remote signals again after the read if
// its line is up then.
uint64_t ProxyDevice::predicted_read(const ProxyBar& b, int bar, uint64_t offset, const proto::MirrorOverlay& p) {
    proto::PostedRead pr{};
    pr.access.addr = b.mapped + offset;
    pr.access.val = p.prediction.value;
    pr.access.size = 1;
    pr.access.memory = b.kind == ProxyBar::Kind::Io ? 0 : 1;
    pr.mirror_seq = p.seq;
    if (!link_->post_read(*this, pr).ok()) return ones(1);
    overlay_ = p;
    MPQ_TRACE(mpq_proxy_mirror_predicted, opts_.id.c_str(), bar, offset, p.prediction.value,
              p.prediction.level_after ? 1 : 0);
    if (irqfd_) (void)consume(irqfd_.get());
    set_level(p.prediction.level_after);
    return p.prediction.value;
}

uint64_t ProxyDevice::bar_read(int bar, uint64_t offset, unsigned size) {
    if (size == 8) {  // two dwords, low address first (as stock splits them)
        uint64_t lo = bar_access(false, bar, offset, 0, 4);
        uint64_t hi = bar_access(false, bar, offset + 4, 0, 4);
        return lo | (hi << 32);
    }
    return bar_access(false, bar, offset, 0, size);
}

void ProxyDevice::bar_write(int bar, uint64_t offset, uint64_t val, unsigned size) {
    if (size == 8) {
        bar_access(true, bar, offset, val & 0xffffffffu, 4);
        bar_access(true, bar, offset + 4, val >> 32, 4);
        return;
    }
    bar_access(true, bar, offset, val, size);
}

void ProxyDevice::device_reset() {
    // QEMU's PCI reset: COMMAND cleared, BAR addresses cleared (type bits
    // kept), cache line size and interrupt line zeroed.
    shadow_ = reset_value_;
    recompute_mappings();
    if (broken_) return;
    MPQ_TRACE(mpq_proxy_reset, opts_.id.c_str());
    if (!link_->call(*this, Cmd::DeviceReset, {}).ok()) return;
    // Stock remotes keep BARs/COMMAND over DEVICE_RESET; forward the reset of
    // those registers so that the remote decodes what we decode.
    if (!cfg_write_raw(pci::kCommand, 0, 2).ok()) return;
    for (int i = 0; i < pci::kNumBars; ++i) {
        if (bars_[i].kind == ProxyBar::Kind::None) continue;
        uint32_t off = pci::kBar0 + 4 * i;
        uint32_t v = uint32_t{reset_value_[off]} | uint32_t{reset_value_[off + 1]} << 8 |
                     uint32_t{reset_value_[off + 2]} << 16 | uint32_t{reset_value_[off + 3]} << 24;
        if (!cfg_write_raw(off, v, 4).ok()) return;
        if (bars_[i].kind == ProxyBar::Kind::Mem64 && !cfg_write_raw(off + 4, 0, 4).ok()) return;
    }
    if (!cfg_write_raw(pci::kCacheLineSize, 0, 1).ok()) return;
    if (!cfg_write_raw(pci::kIntLine, 0, 1).ok()) return;
    irq_check_after_access();
}

void ProxyDevice::set_level(bool level) {
    if (level == level_) return;
    MPQ_TRACE(mpq_proxy_irq, opts_.id.c_str(), level);
    level_ = level;
    if (irq_) irq_->set_level(level);
}

void ProxyDevice::on_irqfd() {
    if (broken_) return;
    if (consume(irqfd_.get())) set_level(true);
}

void ProxyDevice::irq_check_after_access() {
    if (broken_ || !irqfd_) return;
    // With the link's ring the eventfd is only read when its poll completed
    // (no syscall on the common path); without it, every access polls it.
    bool maybe = irq_slot_ < 0 || link_->irq_signalled(irq_slot_);
    if (maybe && consume(irqfd_.get())) set_level(true);
    if (!level_) return;
    // Our remote publishes the line's level in the mirror page before it
    // replies: read there, it is the level this access left (or a later
    // one), with no resample handshake. That handshake can only tell a
    // lowered line by waiting out its whole timeout (5 ms by default) for a
    // signal that never comes, which every interrupt acknowledged by a
    // register read paid. A line raised again later signals the eventfd.
    if (mirror_) {
        if (auto lv = proto::mirror_irq_level(*mirror_, link_->posted_sent())) {
            MPQ_TRACE(mpq_proxy_irq_check, opts_.id.c_str(), "mirror", *lv);
            if (!*lv) set_level(false);
            return;
        }
    }
    uint64_t one = 1;
    if (::write(resamplefd_.get(), &one, sizeof one) != sizeof one) return;
    if (wait_readable(irqfd_.get(), opts_.resample_wait_us)) {
        consume(irqfd_.get());
        MPQ_TRACE(mpq_proxy_irq_check, opts_.id.c_str(), "resample", 1);
        return;
    }
    MPQ_TRACE(mpq_proxy_irq_check, opts_.id.c_str(), "resample", 0);
    set_level(false);
}

void ProxyDevice::link_broken(const std::string& reason) {
    if (broken_) return;
    broken_ = true;
    MPQ_TRACE(mpq_proxy_link_broken, opts_.id.c_str(), reason.c_str());
    set_level(false);
    if (irqfd_watched_) {
        loop_.remove_fd(irqfd_.get());
        irqfd_watched_ = false;
    }
    if (irq_slot_ >= 0) {
        link_->unwatch_irq(irq_slot_);
        irq_slot_ = -1;
    }
    if (!realized_) return;  // realize reports the error itself
    log::error("pci-proxy-dev '{}': remote device lost ({}); it now reads as all-ones and "
               "ignores writes", opts_.id, reason);
    if (events_) events_->remote_disconnected(opts_.id, reason);
}

}  // namespace mpq::vmm
