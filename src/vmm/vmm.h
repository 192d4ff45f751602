// mpqemu-system-x86_64: builds the `pc` machine from a QEMU-style command
// line (RAM backend, chipset, devices: in-process ones from the device
// registry, or pci-proxy-dev / x-pci-proxy-dev forwarding to remote
// processes), attaches qtest, and hands monitor options to the monitors
// (see main.cc).
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "devices/device_set.h"
#include "util/options.h"
#include "util/result.h"
#include "util/unique_fd.h"
#include "vmm/events.h"
#include "vmm/machine.h"

namespace mpq {
class EventLoop;
}

namespace mpq::vmm {

class ProxyDevice;
class ProxyLink;
class QtestServer;
class QtestChardev;
class QtestMachine;

// A monitor the command line asked for; src/monitor serves them.
struct MonitorSpec {
    enum class Kind : uint8_t { Qmp, Hmp };
    Kind kind = Kind::Hmp;
    std::string chardev;  // "unix:PATH,server=on,wait=off", "stdio", or -chardev options
    bool pretty = false;
};

// What the VMM knows about one plugged PCI device (query-pci, tests).
struct DeviceInfo {
    std::string id;
    std::string driver;  // a registered type ("lsi53c895a", "edu"), "pci-proxy-dev", "x-pci-proxy-dev"
    int devfn = -1;
    ProxyDevice* proxy = nullptr;      // forwarded devices
    pci::PciDevice* local = nullptr;   // in-process devices (owned by the device set)
};

// The options this program accepts (shared with --help).
std::span<const std::string_view> vmm_accepted_options();

class Vmm final : private devices::DevicePlugs {
public:
    static Result<std::unique_ptr<Vmm>> create(EventLoop& loop, const opts::CommandLine& cl);
    ~Vmm() override;

    Machine& machine() { return *machine_; }
    VmmEvents& events() { return events_; }
    EventLoop& loop() { return loop_; }
    const std::vector<DeviceInfo>& devices() const { return devices_; }
    const std::vector<MonitorSpec>& monitors() const { return monitors_; }
    // In-process devices and the drives (-drive) they may use.
    devices::DeviceSet& device_set() { return *devset_; }
    const opts::CommandLine& command_line() const { return cl_; }
    bool start_stopped() const { return start_stopped_; }

    // Initial system reset (DEVICE_RESET to remotes, as stock at machine
    // init), then connect qtest.
    Status start();
    // Monitor / signal: leave the event loop.
    void quit(int code = 0);
    void system_reset();
    // x-proxy-reconnect: the proxy device `id` continues on `sock`
    // (vmm_reconnect.cc).
    Status reconnect_proxy(const std::string& id, UniqueFd sock);

private:
    Vmm(EventLoop& loop, opts::CommandLine cl);
    Status build();
    Status build_ram();
    Status add_device(const opts::Option& o);
    Status add_proxy(const opts::Option& o, const std::string& driver);
    Result<int> pick_devfn(const opts::Option& o);
    // devices::DevicePlugs: in-process PCI functions go on the machine's bus.
    Status plug(devices::DeviceEntry& e) override;
    void unplug(devices::DeviceEntry& e) override;

    EventLoop& loop_;
    opts::CommandLine cl_;
    VmmEvents events_;
    std::unique_ptr<Machine> machine_;
    std::vector<DeviceInfo> devices_;
    std::vector<MonitorSpec> monitors_;
    bool start_stopped_ = false;
    bool qtest_accel_ = false;

    std::map<int, std::shared_ptr<ProxyLink>> links_;
    std::vector<std::unique_ptr<ProxyDevice>> proxies_;
    std::unique_ptr<devices::DeviceSet> devset_;

    std::unique_ptr<QtestServer> qtest_;
    std::unique_ptr<QtestMachine> qtest_target_;
    std::unique_ptr<QtestChardev> qtest_chr_;
    FILE* qtest_log_ = nullptr;
};

}  // namespace mpq::vmm
