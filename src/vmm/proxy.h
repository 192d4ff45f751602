// pci-proxy-dev / x-pci-proxy-dev: a PCI function of our machine whose config
// cycles and BAR accesses are forwarded to a remote device process over the
// QEMU 7.2 mpqemu wire protocol (see the design notes in proxy_device.cc).
//
// A ProxyLink is one socket: the protocol core (LinkSession) on a transport
// (io_uring or plain syscalls, vmm/proxy_link_transport.h). Several ProxyDevices may share a link when the
// remote grants the MULTIDEV extension: frames then address the
// device chosen by the last SELECT_DEVICE. Stock QEMU remotes answer the
// extension probe with all-ones and get the plain 7.2 exchange.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pci/pci_function.h"
#include "proto/channel.h"
#include "proto/reg_mirror.h"
#include "util/result.h"
#include "util/unique_fd.h"
#include "vmm/events.h"
#include "vmm/guest_ram.h"
#include "vmm/proxy_link_session.h"
#include "vmm/proxy_link_transport.h"
#include "vmm/reply_poll.h"

namespace mpq {
class EventLoop;
}

namespace mpq::vmm {

class ProxyDevice;

inline constexpr uint32_t kDefaultReplyTimeoutMs = 5000;
inline constexpr uint32_t kDefaultResampleWaitUs = 5000;

class ProxyLink {
public:
    // Takes ownership of a connected AF_UNIX stream socket. LinkIo::Uring
    // falls back to syscalls where io_uring is not available.
    // `offer`: the MPQEXT features we ask the remote for (a subset of
    // kSupportedFeatures; x-posted-writes=off takes POSTED_WRITES out).
    static Result<std::shared_ptr<ProxyLink>> create(UniqueFd sock, std::string name,
                                                     uint32_t reply_timeout_ms,
                                                     LinkIo io = LinkIo::Uring,
                                                     uint64_t offer = proto::kSupportedFeatures,
                                                     uint32_t poll_us = kDefaultPollUs);
    ~ProxyLink();

    const std::string& name() const { return name_; }
    int fd() const { return io_->fd(); }
    bool broken() const { return broken_; }
    const std::string& broken_reason() const { return reason_; }
    uint64_t features() const { return session_.features(); }
    bool negotiated() const { return session_.negotiated(); }
    size_t device_count() const { return devices_.size(); }
    uint32_t reply_timeout_ms() const { return timeout_ms_; }
    uint64_t offer() const { return session_.offer(); }

    // First use: SYNC_SYSMEM, then the MPQEXT probe. Idempotent.
    Status setup(const GuestRam& ram);
    // Sends the guest RAM table again if it differs from the last one sent.
    Status sync_sysmem(const GuestRam& ram);

    // One request/reply exchange addressed to `dev` (SELECT_DEVICE first when
    // needed). On any failure the link is marked broken and every device on
    // it is told; the caller gets the error.
    Result<uint64_t> call(ProxyDevice& dev, proto::Cmd cmd, std::span<const uint8_t> payload);
    // A BAR write without reply (POSTED_WRITES negotiated): it returns once
    // the frame is on the socket. The remote carries it out before anything
    // sent after it, so only observers outside this socket need fence().
    Status post_write(ProxyDevice& dev, std::span<const uint8_t> bar_access);
    // BAR_READ_POSTED (a read answered from the mirror's prediction);
    // counted with the posted writes. On a watched link it leaves after the
    // current event-loop handler (the guest's answer goes out first), and
    // always before any later frame on the socket.
    Status post_read(ProxyDevice& dev, const proto::PostedRead& read);
    bool posts_writes() const { return session_.posts_writes(); }
    // BAR_WRITE_POSTED frames sent so far (what a register mirror must have
    // caught up with before it answers).
    uint64_t posted_sent() const { return session_.posted_sent(); }
    // A request with one fd (MIRROR_SETUP): sent without the ring.
    Result<uint64_t> call_with_fd(ProxyDevice& dev, proto::Cmd cmd, std::span<const uint8_t> payload, int fd);
    // Returns once the remote has carried out every write posted so far (one
    // round trip if any is outstanding, none otherwise): guest RAM read by
    // anyone else then shows what those writes made the device do.
    void fence();
    // A request without reply (SET_IRQFD) addressed to `dev`.
    Status post(ProxyDevice& dev, proto::Cmd cmd, std::span<const uint8_t> payload,
                std::span<const int> fds);

    // Watches the idle socket on the loop: a remote that closes it, or sends
    // anything nobody asked for, is noticed at once (not at the next access)
    // and the link is marked broken. Idempotent.
    void watch(EventLoop& loop);

    void attach(ProxyDevice* dev) { devices_.push_back(dev); }
    void detach(ProxyDevice* dev);
    void mark_broken(const std::string& reason);

    // The irq eventfd of a device on this link, polled by the ring: -1 when
    // there is no ring (then the caller polls the fd itself).
    int watch_irq(int fd) { return io_->watch_irq(fd); }
    void unwatch_irq(int slot) { io_->unwatch_irq(slot); }
    // The eventfd behind `slot` was written before the last reply arrived.
    bool irq_signalled(int slot) { return io_->irq_signalled(slot); }
    bool uses_ring() const { return io_->uses_ring(); }

private:
    friend class ProxyDevice;
    ProxyLink() = default;
    Status select(ProxyDevice& dev);
    Result<uint64_t> exchange(proto::Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds = {});
    // A frame nobody answers; breaks the link when it cannot be sent.
    Status send(proto::Cmd cmd, std::span<const uint8_t> payload, std::span<const int> fds = {});

    void on_idle_event(uint32_t events);
    // Sends the posted read held back by post_read(), if any.
    Status flush_held();

    std::unique_ptr<LinkTransport> io_;
    LinkSession session_;
    proto::Frame rx_;
    uint32_t timeout_ms_ = kDefaultReplyTimeoutMs;
    EventLoop* loop_ = nullptr;
    std::string name_;
    bool setup_done_ = false;
    bool broken_ = false;
    std::string reason_;
    std::vector<ProxyDevice*> devices_;
    // A posted read not on the socket yet, for the device selected when it
    // was posted; `alive_` tells the deferred flush whether we still exist.
    std::optional<proto::PostedRead> held_read_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

struct ProxyOptions {
    std::string id;
    uint32_t resample_wait_us = kDefaultResampleWaitUs;
};

// Local mirror of the remote's BAR/COMMAND state: enough to decode guest
// cycles by absolute address exactly as the remote will.
struct ProxyBar {
    enum class Kind : uint8_t { None, Io, Mem32, Mem64 };
    Kind kind = Kind::None;
    uint64_t size = 0;
    uint64_t mapped = kUnmapped;  // current base, or kUnmapped
    static constexpr uint64_t kUnmapped = ~uint64_t{0};
};

class ProxyDevice final : public pci::PciFunction {
public:
    ProxyDevice(EventLoop& loop, std::shared_ptr<ProxyLink> link, ProxyOptions opts,
                const VmmEvents* events);
    ~ProxyDevice() override;

    // The realize sequence (spec §3.1): link setup, SELECT_DEVICE when
    // MULTIDEV, SET_IRQFD, identity reads, BAR probe.
    Status realize(const GuestRam& ram);
    void attach_irq(pci::IrqLine* line) { irq_ = line; }

    const std::string& id() const { return opts_.id; }
    bool broken() const { return broken_; }
    uint16_t vendor() const { return vendor_; }
    uint16_t device() const { return device_; }
    uint16_t class_code() const { return class_; }
    uint16_t subsys_id() const { return subsys_; }
    const ProxyLink& link() const { return *link_; }
    const std::array<ProxyBar, pci::kNumBars>& bars() const { return bars_; }
    bool irq_level() const { return level_; }

    uint32_t config_read(uint32_t off, unsigned len) override;
    void config_write(uint32_t off, uint32_t val, unsigned len) override;
    uint64_t bar_read(int bar, uint64_t offset, unsigned size) override;
    void bar_write(int bar, uint64_t offset, uint64_t val, unsigned size) override;
    std::optional<pci::BarHit> decode(pci::AddressSpace space, uint64_t addr,
                                      unsigned size) const override;
    // System reset: DEVICE_RESET, then the PCI reset of BARs/COMMAND applied
    // locally and forwarded, so both copies stay equal.
    void device_reset() override;

    // Called by the link when it breaks (once).
    void link_broken(const std::string& reason);
    // Continues on another link (x-proxy-reconnect): the remote behind it
    // already has this device's state (started with -incoming-state), so
    // nothing is reset or probed; the link is set up, the device selected,
    // fresh irq eventfds sent, its identity checked, the mirror set up again.
    // Works on a broken proxy too (the point: its remote died).
    Status reconnect(std::shared_ptr<ProxyLink> link, const GuestRam& ram);

private:
    friend class ProxyLink;
    Result<uint64_t> cfg_read_raw(uint32_t off, unsigned len);
    Status cfg_write_raw(uint32_t off, uint32_t val, unsigned len);
    uint64_t bar_access(bool write, int bar, uint64_t offset, uint64_t val, unsigned size);
    uint64_t predicted_read(const ProxyBar& b, int bar, uint64_t offset, const proto::MirrorOverlay& p);
    void apply_local_write(uint32_t off, uint32_t val, unsigned len);
    void recompute_mappings();
    Status probe_bars();
    void await_remote_startup();
    // REG_MIRROR: hands the remote a page for this device's register window.
    // Failure only means every read keeps going over the socket.
    void setup_mirror();
    // Every BAR_WRITE_POSTED so far is carried out, by this device's page.
    bool mirror_caught_up(uint64_t posted_sent) const;
    // Interrupt level tracking (see design notes in proxy_device.cc).
    void irq_check_after_access();
    void on_irqfd();
    void set_level(bool level);

    EventLoop& loop_;
    std::shared_ptr<ProxyLink> link_;
    ProxyOptions opts_;
    const VmmEvents* events_;
    pci::IrqLine* irq_ = nullptr;
    bool broken_ = false;
    bool realized_ = false;

    uint16_t vendor_ = 0, device_ = 0, class_ = 0, subsys_ = 0;
    std::array<ProxyBar, pci::kNumBars> bars_{};
    // Shadow of COMMAND and the BAR registers, with their write masks.
    std::array<uint8_t, pci::kConfigSpaceSize> shadow_{};
    std::array<uint8_t, pci::kConfigSpaceSize> wmask_{};
    std::array<uint8_t, pci::kConfigSpaceSize> reset_value_{};

    UniqueFd irqfd_, resamplefd_;
    bool irqfd_watched_ = false;
    int irq_slot_ = -1;  // the link's ring polls irqfd_ (see ProxyRing)
    bool level_ = false;
    const proto::MirrorPage* mirror_ = nullptr;  // mapped read-only; see proto/reg_mirror.h
    // Laid over the mirror after a predicted read, until the remote has
    // carried it out (proto::mirror_read says when it applies).
    std::optional<proto::MirrorOverlay> overlay_;
};

}  // namespace mpq::vmm
