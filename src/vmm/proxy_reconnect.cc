// ProxyDevice::reconnect: a proxy follows its device to a new remote
// process (QMP x-proxy-reconnect). The new remote was started from the old
// one's saved state, so the device's registers, BARs and requests in flight
// are already there: unlike realize(), nothing is reset or probed.
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "pci/pci_device.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "vmm/proxy.h"

namespace mpq::vmm {

Status ProxyDevice::reconnect(std::shared_ptr<ProxyLink> link, const GuestRam& ram) {
    if (!realized_) return fail("pci-proxy-dev '{}' is not realized", opts_.id);
    if (link.get() == link_.get()) return fail("pci-proxy-dev '{}' already uses {}", opts_.id, link->name());
    MPQ_TRY(link->setup(ram));
    if (link->device_count() > 0 && !(link->features() & proto::kFeatMultiDev))
        return fail("{} already carries a device and the remote does not support several devices "
                    "per socket (MULTIDEV)", link->name());

    // Leave the old link: its remote is gone, or about to be.
    if (irqfd_watched_) {
        loop_.remove_fd(irqfd_.get());
        irqfd_watched_ = false;
    }
    if (irq_slot_ >= 0) {
        link_->unwatch_irq(irq_slot_);
        irq_slot_ = -1;
    }
    if (mirror_) {
        ::munmap(const_cast<proto::MirrorPage*>(mirror_), proto::kMirrorPageSize);
        mirror_ = nullptr;
    }
    link_->detach(this);
    link_ = std::move(link);
    link_->attach(this);
    broken_ = false;
    set_level(false);

    MPQ_TRY(link_->select(*this));
    // Fresh eventfds: the old remote (if it still runs) keeps its copies of
    // the old ones and must not be able to raise our interrupt.
    int irq = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int res = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    irqfd_.reset(irq);
    resamplefd_.reset(res);
    if (!irqfd_ || !resamplefd_) {
        link_->mark_broken("eventfd failed");
        return fail_errno(errno, "eventfd: {}", std::strerror(errno));
    }
    int fds[2] = {irqfd_.get(), resamplefd_.get()};
    MPQ_TRY(link_->post(*this, proto::Cmd::SetIrqfd, {}, fds));

    // The same device, or the guest would talk to a stranger.
    auto v = cfg_read_raw(pci::kVendorId, 2);
    if (!v.ok()) return v.take_error();
    auto d = cfg_read_raw(pci::kDeviceId, 2);
    if (!d.ok()) return d.take_error();
    if (*v != vendor_ || *d != device_) {
        std::string why = fmt::format("the new remote serves {:04x}:{:04x}, not {:04x}:{:04x}", *v, *d, vendor_,
                                      device_);
        link_->mark_broken(why);
        return fail("pci-proxy-dev '{}': {}", opts_.id, why);
    }
    if (!loop_.add_fd(irqfd_.get(), FdEvents::Read, [this](uint32_t) { on_irqfd(); })) {
        link_->mark_broken("cannot watch the irq eventfd");
        return fail("cannot watch the irq eventfd of '{}'", opts_.id);
    }
    irqfd_watched_ = true;
    irq_slot_ = link_->watch_irq(irqfd_.get());
    if (link_->features() & proto::kFeatRegMirror) setup_mirror();
    link_->watch(loop_);
    // An interrupt the device had asserted is signalled on the new irqfd by
    // the remote as soon as it has it; look once now as after any access.
    irq_check_after_access();
    log::info("pci-proxy-dev '{}': continues on {}", opts_.id, link_->name());
    return {};
}

}  // namespace mpq::vmm
