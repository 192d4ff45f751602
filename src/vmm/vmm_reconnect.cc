// Vmm::reconnect_proxy (QMP x-proxy-reconnect): a new link for a proxy
// device whose device now lives in another remote process.
#include <sys/stat.h>

#include <fmt/format.h>

#include "vmm/vmm.h"

#if MPQ_ENABLE_MPQEMU
#include "vmm/proxy.h"
#endif

namespace mpq::vmm {

Status Vmm::reconnect_proxy(const std::string& id, UniqueFd sock) {
#if MPQ_ENABLE_MPQEMU
    ProxyDevice* proxy = nullptr;
    for (const auto& d : devices_)
        if (d.id == id) proxy = d.proxy;
    if (!proxy) return fail("'{}' is not a proxy device", id);
    struct stat st {};
    if (!sock || ::fstat(sock.get(), &st) != 0 || !S_ISSOCK(st.st_mode))
        return fail("x-proxy-reconnect: the file descriptor is not a socket");
    const ProxyLink& old = proxy->link();
    const int fd = sock.get();
    auto l = ProxyLink::create(std::move(sock), fmt::format("socket {} (reconnected)", fd), old.reply_timeout_ms(),
                               old.uses_ring() ? LinkIo::Uring : LinkIo::Syscalls, old.offer());
    if (!l.ok()) return l.take_error();
    std::shared_ptr<ProxyLink> link = *l;
    MPQ_TRY(proxy->reconnect(link, machine_->ram()));
    links_[fd] = link;
    std::weak_ptr<ProxyLink> weak = link;
    machine_->add_fence([weak] {
        if (auto p = weak.lock()) p->fence();
    });
    return {};
#else
    (void)sock;
    return fail("'{}': this build has no proxy devices", id);
#endif
}

}  // namespace mpq::vmm
