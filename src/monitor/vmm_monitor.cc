// Adapter from our VMM (vmm::Vmm) to MachineView.
#include "monitor/vmm_monitor.h"

#include <fmt/format.h>

#include "devices/device_set.h"
#include "monitor/monitor.h"
#include "vmm/proxy.h"
#include "vmm/vmm.h"

namespace mpq::monitor {
namespace {

class VmmView final : public MachineView {
public:
    explicit VmmView(vmm::Vmm& vmm) : vmm_(vmm) {}

    Role role() const override { return Role::Vmm; }
    std::string name() const override {
        const auto* o = vmm_.command_line().last("name");
        if (!o) return {};
        return o->kv.has("guest") ? o->kv.get("guest") : o->text;
    }
    // As QEMU reports it: -S leaves the machine in "prelaunch" (we have no
    // `cont`), otherwise it runs (qtest drives it; there is no vCPU).
    RunState run_state() const override {
        return vmm_.command_line().has("S") ? RunState::Prelaunch : RunState::Running;
    }

    std::vector<PciDeviceInfo> pci_devices() override {
        std::vector<PciDeviceInfo> out;
        for (const auto& slot : vmm_.machine().bus().devices()) {
            const vmm::DeviceInfo* dev = nullptr;
            for (const auto& d : vmm_.devices())
                if (d.devfn == slot.devfn) dev = &d;
            unsigned s = static_cast<unsigned>(vmm::devfn_slot(slot.devfn));
            unsigned f = static_cast<unsigned>(vmm::devfn_fn(slot.devfn));
            if (dev && dev->local) {
                PciDeviceInfo info = describe_pci_device(*dev->local, s, slot.id);
                info.function = f;
                out.push_back(std::move(info));
                continue;
            }
            pci::PciFunction* fn = slot.fn;
            PciDeviceInfo info = describe_pci_config(
                [fn](uint32_t off, unsigned len) { return fn->config_read(off, len); }, s, f,
                dev ? slot.id : std::string());
            if (dev && dev->proxy) {
                const auto& bars = dev->proxy->bars();
                for (int i = 0; i < pci::kNumBars; ++i) {
                    const vmm::ProxyBar& b = bars[static_cast<size_t>(i)];
                    if (b.kind == vmm::ProxyBar::Kind::None) continue;
                    PciRegion r;
                    r.bar = i;
                    r.io = b.kind == vmm::ProxyBar::Kind::Io;
                    r.mem64 = b.kind == vmm::ProxyBar::Kind::Mem64;
                    r.size = b.size;
                    r.address = b.mapped == vmm::ProxyBar::kUnmapped ? UINT64_MAX : b.mapped;
                    info.regions.push_back(r);
                }
            }
            out.push_back(std::move(info));
        }
        return out;
    }

    // Only what this process opened: the in-process controllers' drives. A
    // proxied controller's disks live in its device process and are listed
    // (and hot-plugged) by that process's monitor; listing them here would
    // go stale the moment someone used it.
    std::vector<BlockDeviceInfo> block_devices() override { return describe_drives(vmm_.device_set()); }

    // Hot-plug on the in-process controllers: the device set does it, as in
    // the remote. Here only what a VMM adds: proxies are not ours to change.
    Status drive_add(const block::DriveOptions& opts, DriveOrigin origin) override {
        return vmm_.device_set().add_drive(opts, origin == DriveOrigin::Blockdev ? devices::DriveOwner::Monitor
                                                                                 : devices::DriveOwner::Legacy);
    }
    Status drive_del(std::string_view node_name) override {
        return vmm_.device_set().hot_remove_drive(node_name);
    }
    Status device_add(const std::vector<std::pair<std::string, std::string>>& props) override {
        opts::KeyValues kv;
        for (const auto& [k, v] : props) {
            if (k == "driver" && (v == "pci-proxy-dev" || v == "x-pci-proxy-dev"))
                return fail("Bus 'pci.0' does not support hotplugging (a {} comes from the command line)", v);
            if (k == "id") {
                // Proxies are not in the device set; their ids are taken all the same.
                for (const auto& d : vmm_.devices())
                    if (d.proxy && d.id == v) return fail("Duplicate ID '{}' for device", v);
            }
            if (k == "bus") {
                if (const vmm::DeviceInfo* p = proxy_of_bus(v))
                    return fail("Bus '{}' belongs to '{}', a device served by its device process: add disks "
                                "to it through that process's monitor", v, p->id);
            }
            kv.items.push_back(opts::KeyValue{k, v});
        }
        auto e = vmm_.device_set().hot_add(kv);
        if (!e.ok()) return e.take_error();
        return {};
    }
    Result<std::string> device_del(std::string_view id) override {
        for (const auto& d : vmm_.devices())
            if (d.proxy && !id.empty() && d.id == id)
                return fail("Bus 'pci.0' does not support hotplugging ('{}' is a PCI function)", id);
        return vmm_.device_set().hot_remove(id);
    }

    std::vector<QtreeDevice> qtree() override {
        auto addr = [](int devfn) {
            return fmt::format("{:02x}.{}", vmm::devfn_slot(devfn), vmm::devfn_fn(devfn));
        };
        std::vector<QtreeDevice> out = describe_devices(vmm_.device_set(), [&](const pci::PciDevice& dev) {
            for (const auto& d : vmm_.devices())
                if (d.local == &dev) return addr(d.devfn);
            return std::string();
        });
        for (const auto& d : vmm_.devices()) {
            if (!d.proxy) continue;
            out.push_back(QtreeDevice{d.driver, d.id, "pci.0", {{"addr", addr(d.devfn)}}, {}});
        }
        return out;
    }

    std::vector<RemoteDeviceInfo> remote_devices() override {
        std::vector<RemoteDeviceInfo> out;
        for (const auto& d : vmm_.devices()) {
            if (!d.proxy) continue;
            RemoteDeviceInfo r;
            r.id = d.id;
            r.driver = d.driver;
            r.channel = d.proxy->broken() ? "disconnected" : "connected";
            out.push_back(std::move(r));
        }
        return out;
    }

    Status system_reset() override {
        in_monitor_reset_ = true;
        vmm_.system_reset();
        in_monitor_reset_ = false;
        return {};
    }
    void quit() override { vmm_.quit(0); }
    Status proxy_reconnect(const std::string& id, UniqueFd sock) override {
        return vmm_.reconnect_proxy(id, std::move(sock));
    }
    bool in_monitor_reset() const { return in_monitor_reset_; }

private:
    // The proxy whose controller "ID.0" names, if any.
    const vmm::DeviceInfo* proxy_of_bus(std::string_view bus) const {
        size_t dot = bus.rfind('.');
        if (dot == std::string_view::npos) return nullptr;
        for (const auto& d : vmm_.devices())
            if (d.proxy && !d.id.empty() && d.id == bus.substr(0, dot)) return &d;
        return nullptr;
    }

    vmm::Vmm& vmm_;
    bool in_monitor_reset_ = false;
};

// Owned by the machine (Machine::keep), so it goes away with it and before
// the event loop.
struct VmmMonitors {
    explicit VmmMonitors(vmm::Vmm& v) : view(v), mon(v.loop(), view) {}
    VmmView view;
    Monitors mon;
};

}  // namespace

Status start_vmm_monitors(vmm::Vmm& vmm) {
    MonitorOptions mo;
    bool any = false;
    for (const auto& o : vmm.command_line().options) {
        auto r = mo.consume(fmt::format("-{}", o.name()), o.text);
        if (!r.ok()) return r.take_error();
        any = any || *r;
    }
    if (!any) return {};
    auto holder = std::make_shared<VmmMonitors>(vmm);
    MPQ_TRY(holder->mon.start(mo));
    std::weak_ptr<VmmMonitors> weak = holder;
    vmm.events().on_remote_disconnect.push_back([weak](std::string_view id, std::string_view why) {
        if (auto h = weak.lock()) h->mon.remote_disconnected(id, why);
    });
    vmm.events().on_reset.push_back([weak] {
        auto h = weak.lock();
        // A monitor's system_reset reports RESET itself; anything else was the guest.
        if (h && !h->view.in_monitor_reset()) h->mon.reset_event("guest-reset", true);
    });
    vmm.machine().keep(holder);
    return {};
}

}  // namespace mpq::monitor
