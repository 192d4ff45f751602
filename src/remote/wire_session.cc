#include "remote/wire_session.h"

#include <cstring>
#include <string_view>
#include <utility>

#include "pci/pci_device.h"
#include "remote/reg_mirror.h"
#include "trace/trace.h"
#include "util/log.h"

namespace mpq::remote {

using proto::Answer;
using proto::Cmd;
using proto::Frame;
using proto::kAllOnes;

namespace {

constexpr uint64_t kLogBurst = 50;  // bad-frame lines logged before thinning out
constexpr uint64_t kLogEvery = 1000;

uint64_t mask_to(uint64_t v, unsigned size) {
    return size >= 8 ? v : (v & ((uint64_t{1} << (8 * size)) - 1));
}

bool valid_access_size(uint32_t s) { return s == 1 || s == 2 || s == 4 || s == 8; }

// A device id from the wire, safe to print.
std::string printable(const char* p, size_t n) {
    std::string s;
    for (size_t i = 0; i < n && p[i]; i++) {
        unsigned char ch = static_cast<unsigned char>(p[i]);
        if (ch >= 0x20 && ch < 0x7f) s.push_back(static_cast<char>(ch));
        else s += fmt::format("\\x{:02x}", ch);
    }
    return s;
}

const char* feature_name(uint64_t bit) {
    switch (bit) {
    case proto::kFeatMultiDev: return "MULTIDEV";
    case proto::kFeatPostedWrites: return "POSTED_WRITES";
    case proto::kFeatRegMirror: return "REG_MIRROR";
    default: return "an extension";
    }
}

}  // namespace

WireSession::WireSession(std::string name, std::vector<ServedDevice> devices, GuestMemory& memory,
                         ServerStats& stats)
    : name_(std::move(name)), devices_(std::move(devices)), memory_(memory), stats_(stats) {
    regions_.reserve(proto::kMaxFdsOnWire);
}

WireSession::~WireSession() = default;

template <typename... Args>
void WireSession::complain(fmt::format_string<Args...> f, Args&&... args) {
    bad_frames_++;
    bool logged = bad_frames_ <= kLogBurst || bad_frames_ % kLogEvery == 0;
    if (!logged && !MPQ_TRACE_ON(mpq_remote_bad_frame)) return;
    std::string msg = fmt::format(f, std::forward<Args>(args)...);
    MPQ_TRACE(mpq_remote_bad_frame, name_.c_str(), msg.c_str());
    if (logged)
        log::error("{}: {}{}", name_, msg, bad_frames_ == kLogBurst ? " (further errors are logged every 1000th)" : "");
}

void WireSession::trace(const Frame& f) {
    std::string what;
    switch (f.cmd()) {
    case Cmd::PciCfgRead:
    case Cmd::PciCfgWrite: {
        auto p = f.as<proto::PciConf>();
        what = fmt::format(" addr={:#x} val={:#x} len={}", p.addr, p.val, p.len);
        break;
    }
    case Cmd::BarRead:
    case Cmd::BarWrite:
    case Cmd::BarWritePosted:
    case Cmd::BarReadPosted: {
        auto b = f.as<proto::BarAccess>();
        what = fmt::format(" addr={:#x} val={:#x} size={} memory={}", b.addr, b.val, b.size, b.memory);
        break;
    }
    case Cmd::SyncSysmem: {
        auto s = f.as<proto::SyncSysmem>();
        for (unsigned i = 0; i < f.num_fds && i < proto::kMaxFdsOnWire; i++)
            what += fmt::format(" [gpa={:#x} size={:#x} off={:#x}]", s.gpa[i], s.size[i], s.offset[i]);
        break;
    }
    default: break;
    }
    log::debug("{}: <- {} size={} fds={}{}", name_, proto::cmd_name(f.cmd()), f.size(), f.num_fds, what);
}

void WireSession::handle(Frame& f, std::vector<uint8_t>& out) {
    stats_.frames++;
    if (log::enabled(log::Level::Debug)) trace(f);
    MPQ_TRACE(mpq_remote_frame, name_.c_str(), proto::cmd_name(f.cmd()), f.size(), f.num_fds);
    // The proxy counts every posted frame it sent; so do we, whatever its
    // fate, or its mirror reads would wait for one that never comes.
    if (f.cmd() == Cmd::BarWritePosted || f.cmd() == Cmd::BarReadPosted) posted_done_++;
    auto v = proto::validate(f, proto::Role::Remote);
    if (!v.ok()) {
        stats_.bad_frames++;
        complain("invalid frame: {}", v.error().message);
        if (proto::reply_due(f.cmd())) reply(out, kAllOnes);
        return;
    }
    // validate() admits only rows of the table that go to the remote.
    const proto::Message& m = proto::message_of(f.cmd());
    if (m.feature != proto::kStock && !(features_ & m.feature)) {
        complain("{} without a negotiated {}{}", m.name, feature_name(m.feature),
                 m.answer == Answer::None ? "; ignored" : "");
        if (proto::reply_due(f.cmd())) reply(out, kAllOnes);
        return;
    }
    switch (f.cmd()) {
    case Cmd::PciCfgRead: do_cfg_read(f, out); break;
    case Cmd::PciCfgWrite: do_cfg_write(f, out); break;
    case Cmd::BarRead: do_bar_read(f, out); break;
    case Cmd::BarWrite:
    case Cmd::BarWritePosted: do_bar_write(f, m.answer, out); break;
    case Cmd::BarReadPosted: do_posted_read(f); break;
    case Cmd::SyncSysmem: do_sync_sysmem(f); break;
    case Cmd::SetIrqfd: do_set_irqfd(f); break;
    case Cmd::DeviceReset: do_device_reset(out); break;
    case Cmd::SelectDevice: do_select_device(f, out); break;
    case Cmd::MirrorSetup: do_mirror_setup(f, out); break;
    case Cmd::Ret: break;  // a reply: validate() refused it
    }
}

void WireSession::reply(std::vector<uint8_t>& out, uint64_t v) {
    if (log::enabled(log::Level::Debug)) log::debug("{}: -> RET {:#x}", name_, v);
    proto::encode(out, Cmd::Ret, proto::bytes_of(v));
}

void WireSession::reply_empty(std::vector<uint8_t>& out) {
    if (log::enabled(log::Level::Debug)) log::debug("{}: -> RET (empty)", name_);
    proto::encode(out, Cmd::Ret, {});
}

// Config space: like single-process QEMU, any width that fits in the 256
// bytes works; everything else reads as all-ones (stock's remote would exit).
void WireSession::do_cfg_read(const Frame& f, std::vector<uint8_t>& out) {
    auto p = f.as<proto::Payload<Cmd::PciCfgRead>>();
    if (p.len < 1 || p.len > 4 || uint64_t{p.addr} + static_cast<uint64_t>(p.len) > pci::kConfigSpaceSize) {
        complain("PCI_CFGREAD at {:#x} len {}: outside the {}-byte config space", p.addr, p.len,
                 pci::kConfigSpaceSize);
        reply(out, kAllOnes);
        return;
    }
    reply(out, dev().dev->config_read(p.addr, static_cast<unsigned>(p.len)));
}

void WireSession::do_cfg_write(const Frame& f, std::vector<uint8_t>& out) {
    auto p = f.as<proto::Payload<Cmd::PciCfgWrite>>();
    if (p.len < 1 || p.len > 4 || uint64_t{p.addr} + static_cast<uint64_t>(p.len) > pci::kConfigSpaceSize) {
        complain("PCI_CFGWRITE at {:#x} len {}: outside the {}-byte config space", p.addr, p.len,
                 pci::kConfigSpaceSize);
        reply(out, kAllOnes);
        return;
    }
    dev().dev->config_write(p.addr, p.val, static_cast<unsigned>(p.len));
    reply(out, 0);
}

void WireSession::do_bar_read(const Frame& f, std::vector<uint8_t>& out) {
    auto b = f.as<proto::Payload<Cmd::BarRead>>();
    if (b.addr == proto::kExtProbeAddr && b.size == 0) {
        // MPQEXT negotiation (a stock remote answers all-ones here).
        features_ = b.val & proto::kSupportedFeatures & proto::kExtFeatureMask;
        MPQ_TRACE(mpq_remote_ext_negotiated, name_.c_str(), b.val, features_);
        log::info("{}: MPQEXT v1 negotiated, features {:#x}", name_, features_);
        reply(out, proto::kExtReplyMagic | features_);
        return;
    }
    if (!valid_access_size(b.size) || b.memory > 1) {
        complain("BAR_READ at {:#x}: bad access size {} / space {}", b.addr, b.size, b.memory);
        reply(out, kAllOnes);
        return;
    }
    auto space = b.memory ? pci::AddressSpace::Memory : pci::AddressSpace::Io;
    auto hit = dev().dev->decode(space, b.addr, b.size);
    if (!hit) {
        // Unclaimed I/O ports float high without an error, as on real buses.
        if (b.memory) complain("BAR_READ at {:#x} size {}: no BAR decodes this memory address", b.addr, b.size);
        reply(out, kAllOnes);
        return;
    }
    reply(out, mask_to(dev().dev->bar_read(hit->bar, hit->offset, b.size), b.size));
}

// A read the proxy answered from the mirror's prediction. If the device is
// as it was published, the read is done now and does just what was
// predicted; if it ran on since, the device applies what the guest saw
// (late_predicted_read). Either way the line is signalled again when it is
// up: the proxy set its level from the prediction and must not keep a
// lowered line low when the device has raised it since.
void WireSession::do_posted_read(const Frame& f) {
    auto p = f.as<proto::Payload<Cmd::BarReadPosted>>();
    const proto::BarAccess& b = p.access;
    if (b.size != 1 || b.memory > 1) {
        complain("BAR_READ_POSTED at {:#x}: bad access size {} / space {}", b.addr, b.size, b.memory);
        return;
    }
    auto space = b.memory ? pci::AddressSpace::Memory : pci::AddressSpace::Io;
    auto hit = dev().dev->decode(space, b.addr, 1);
    RegMirror* m = selected_ < mirrors_.size() ? mirrors_[selected_].get() : nullptr;
    if (!hit || !m || !m->covers(hit->bar, hit->offset)) {
        complain("BAR_READ_POSTED at {:#x}: {}", b.addr,
                 !hit ? "no BAR decodes this address" : !m ? "no register mirror" : "outside the mirrored window");
        return;
    }
    const uint8_t seen = static_cast<uint8_t>(b.val);
    if (m->unchanged_since(p.mirror_seq)) {
        uint8_t v = static_cast<uint8_t>(dev().dev->bar_read(hit->bar, hit->offset, 1));
        if (v != seen) complain("BAR_READ_POSTED at {:#x}: predicted {:#x}, read {:#x}", b.addr, seen, v);
    } else {
        MPQ_TRACE(mpq_remote_late_predicted_read, name_.c_str(), b.addr, seen);
        dev().dev->late_predicted_read(hit->bar, static_cast<unsigned>(hit->offset), seen);
    }
    if (dev().irq && dev().irq->asserted()) dev().irq->signal();
}

void WireSession::do_bar_write(const Frame& f, Answer answer, std::vector<uint8_t>& out) {
    auto ack = [&](uint64_t v) {
        if (answer == Answer::Ret) reply(out, v);
    };
    auto b = f.as<proto::Payload<Cmd::BarWrite>>();
    if (!valid_access_size(b.size) || b.memory > 1) {
        complain("BAR_WRITE at {:#x}: bad access size {} / space {}", b.addr, b.size, b.memory);
        ack(kAllOnes);
        return;
    }
    auto space = b.memory ? pci::AddressSpace::Memory : pci::AddressSpace::Io;
    auto hit = dev().dev->decode(space, b.addr, b.size);
    if (!hit) {
        if (b.memory) {
            complain("BAR_WRITE at {:#x} size {}: no BAR decodes this memory address", b.addr, b.size);
            ack(kAllOnes);
        } else {
            ack(0);  // writes to unclaimed ports are dropped
        }
        return;
    }
    dev().dev->bar_write(hit->bar, hit->offset, mask_to(b.val, b.size), b.size);
    ack(0);
}

void WireSession::do_sync_sysmem(Frame& f) {
    auto s = f.as<proto::Payload<Cmd::SyncSysmem>>();
    regions_.clear();
    for (unsigned i = 0; i < f.num_fds; i++)
        regions_.push_back(RamRegion{s.gpa[i], s.size[i], s.offset[i], f.fds[i].get()});
    stats_.sysmem_updates++;
    if (handoff_) handoff_(HeldFd::Sysmem, selected_, f);
    auto st = memory_.set_regions(regions_);
    if (!st.ok()) complain("SYNC_SYSMEM: {}; no guest RAM is mapped now", st.error().message);
    // The mappings keep the memory; the frame closes the fds.
}

void WireSession::do_set_irqfd(Frame& f) {
    for (unsigned i = 0; i < 2; i++) {
        if (!proto::is_eventfd(f.fds[i].get())) {
            complain("SET_IRQFD: fd {} is not an eventfd; keeping the previous pair", i);
            return;
        }
    }
    if (handoff_) handoff_(HeldFd::Irqfd, selected_, f);
    dev().irq->set_fds(f.take_fd(0), f.take_fd(1));
}

void WireSession::do_device_reset(std::vector<uint8_t>& out) {
    stats_.resets++;
    log::info("{}: DEVICE_RESET of {}", name_, dev().id);
    dev().dev->device_reset();
    reply_empty(out);
}

void WireSession::do_select_device(const Frame& f, std::vector<uint8_t>& out) {
    auto sel = f.as<proto::Payload<Cmd::SelectDevice>>();
    size_t n = strnlen(sel.id, sizeof sel.id);
    std::string_view id(sel.id, n);
    for (size_t i = 0; i < devices_.size(); i++) {
        if (devices_[i].id == id) {
            selected_ = i;
            reply(out, 0);
            return;
        }
    }
    complain("SELECT_DEVICE: no device '{}' on this socket", printable(sel.id, n));
    reply(out, kAllOnes);
}

void WireSession::do_mirror_setup(Frame& f, std::vector<uint8_t>& out) {
    auto setup = f.as<proto::Payload<Cmd::MirrorSetup>>();
    if (setup.page_size != proto::kMirrorPageSize) {
        complain("MIRROR_SETUP: page size {}, expected {}", setup.page_size, proto::kMirrorPageSize);
        reply(out, kAllOnes);
        return;
    }
    if (handoff_) handoff_(HeldFd::Mirror, selected_, f);
    auto m = RegMirror::attach(f.take_fd(0), *dev().dev, dev().irq);
    if (!m.ok()) {
        // Not the peer's fault when the device has no window: no complaint.
        log::info("{}: no register mirror for {}: {}", name_, dev().id, m.error().message);
        reply(out, kAllOnes);
        return;
    }
    if (mirrors_.size() != devices_.size()) mirrors_.resize(devices_.size());
    mirrors_[selected_] = std::move(*m);  // a second page replaces the first
    reply(out, 0);
}

void WireSession::mirrors_begin() {
    for (auto& m : mirrors_)
        if (m) m->begin();
}

void WireSession::mirrors_publish() {
    for (auto& m : mirrors_)
        if (m) m->publish(posted_done_);
}

}  // namespace mpq::remote

namespace mpq::remote {

Status WireSession::restore_state(const SessionState& s) {
    if (s.selected >= devices_.size())
        return fail("{}: saved connection selects device {} of {}", name_, s.selected, devices_.size());
    features_ = s.features & proto::kSupportedFeatures & proto::kExtFeatureMask;
    selected_ = s.selected;
    posted_done_ = s.posted_done;
    return {};
}

void WireSession::restore_irqfds(size_t dev, UniqueFd irq, UniqueFd resample) {
    if (dev < devices_.size() && devices_[dev].irq) devices_[dev].irq->set_fds(std::move(irq), std::move(resample));
}

Status WireSession::restore_mirror(size_t dev, UniqueFd page) {
    if (dev >= devices_.size()) return fail("{}: no device {}", name_, dev);
    auto m = RegMirror::attach(std::move(page), *devices_[dev].dev, devices_[dev].irq);
    if (!m.ok()) return m.take_error();
    if (mirrors_.size() != devices_.size()) mirrors_.resize(devices_.size());
    mirrors_[dev] = std::move(*m);
    return {};
}

}  // namespace mpq::remote
