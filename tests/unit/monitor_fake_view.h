// A MachineView with fixed contents for the monitor unit tests.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "monitor/machine_view.h"
#include "monitor/qmp.h"

namespace mpq::monitor::testing {

class FakeView : public MachineView {
public:
    FakeView() {
        PciDeviceInfo lsi;
        lsi.slot = 3;
        lsi.vendor = 0x1000;
        lsi.device = 0x0012;
        lsi.subsys_vendor = 0x0000;
        lsi.subsys_id = 0x1000;
        lsi.class_code = 0x010000;
        lsi.irq_pin = 1;
        lsi.irq = 11;
        lsi.qdev_id = "lsi0";
        lsi.regions.push_back(PciRegion{0, true, false, false, 0xc000, 256});
        lsi.regions.push_back(PciRegion{1, false, false, false, 0xfebf0000, 1024});
        lsi.regions.push_back(PciRegion{2, false, false, false, UINT64_MAX, 8192});
        pci.push_back(lsi);

        BlockDeviceInfo d0;
        d0.device = "d0";
        d0.node_name = "#block123";
        d0.qdev = "scsi0-0-0";
        d0.filename = "disk.img";
        d0.format = "raw";
        d0.virtual_size = 64 << 20;
        d0.stats.rd_bytes = 4096;
        d0.stats.wr_bytes = 8192;
        d0.stats.rd_ops = 1;
        d0.stats.wr_ops = 2;
        d0.stats.flush_ops = 3;
        d0.stats.failed_wr_ops = 1;
        blocks.push_back(d0);

        remotes.push_back(RemoteDeviceInfo{"lsi0", "lsi53c895a", "connected", 5, "pid 42", {"multidev"}});
    }

    Role role() const override { return Role::Remote; }
    std::string name() const override { return vm_name; }
    RunState run_state() const override { return state; }
    std::vector<PciDeviceInfo> pci_devices() override { return pci; }
    std::vector<BlockDeviceInfo> block_devices() override { return blocks; }
    std::vector<ChardevInfo> chardevs() override { return {{"serial0", "null", true}}; }
    std::vector<RemoteDeviceInfo> remote_devices() override { return remotes; }
    Status system_reset() override {
        ++resets;
        if (reset_fails) return fail("reset refused");
        return {};
    }
    void quit() override { ++quits; }

    std::string vm_name;
    RunState state = RunState::Running;
    std::vector<PciDeviceInfo> pci;
    std::vector<BlockDeviceInfo> blocks;
    std::vector<RemoteDeviceInfo> remotes;
    int resets = 0, quits = 0;
    bool reset_fails = false;
};

class FakeSink : public EventSink {
public:
    void emit(std::string_view event, Json data) override {
        events.emplace_back(std::string(event), std::move(data));
    }
    std::vector<std::pair<std::string, Json>> events;
};

}  // namespace mpq::monitor::testing
