#include "monitor/hmp.h"

#include <gtest/gtest.h>

#include "monitor/commands.h"
#include "monitor_fake_view.h"

namespace mpq::monitor {
namespace {

using testing::FakeSink;
using testing::FakeView;

struct Rig {
    FakeView view;
    FakeSink sink;
    QmpDispatcher d;
    CommandEnv env{view, sink, {}, {}, {}};
    Hmp hmp{d};
    Rig() {
        env.monitor_chardevs = [] {
            return std::vector<ChardevInfo>{{"compat_monitor0", "unix:/tmp/h,server=on", true}};
        };
        register_commands(d, env);
    }
};

TEST(MonitorHmp, InfoBlock) {
    Rig r;
    EXPECT_EQ(r.hmp.run("info block"),
              "d0 (#block123): disk.img (raw)\n"
              "    Attached to:      scsi0-0-0\n"
              "    Cache mode:       writeback\n");
    r.view.blocks[0].read_only = true;
    r.view.blocks[0].cache = block::CacheMode::None;
    auto second = r.view.blocks[0];
    second.device = "d1";
    second.cache = block::CacheMode::Unsafe;
    second.read_only = false;
    r.view.blocks.push_back(second);
    EXPECT_EQ(r.hmp.run("info block"),
              "d0 (#block123): disk.img (raw, read-only)\n"
              "    Attached to:      scsi0-0-0\n"
              "    Cache mode:       writeback, direct\n"
              "\n"
              "d1 (#block123): disk.img (raw)\n"
              "    Attached to:      scsi0-0-0\n"
              "    Cache mode:       writeback, ignore flushes\n");
    EXPECT_EQ(r.hmp.run("info block d1").rfind("d1 (", 0), 0u);
    EXPECT_EQ(r.hmp.run("info block nope"), "Device 'nope' not found\n");
}

TEST(MonitorHmp, InfoPci) {
    Rig r;
    EXPECT_EQ(r.hmp.run("info pci"),
              "  Bus  0, device   3, function 0:\n"
              "    SCSI controller: PCI device 1000:0012\n"
              "      PCI subsystem 0000:1000\n"
              "      IRQ 11, pin A\n"
              "      BAR0: I/O at 0xc000 [0xc0ff].\n"
              "      BAR1: 32 bit memory at 0xfebf0000 [0xfebf03ff].\n"
              "      BAR2: 32 bit memory at 0xffffffffffffffff [0x00001ffe].\n"
              "      id \"lsi0\"\n");
}

TEST(MonitorHmp, InfoBlockstats) {
    Rig r;
    EXPECT_EQ(r.hmp.run("info blockstats"),
              "d0: rd_bytes=4096 wr_bytes=8192 rd_operations=1 wr_operations=2 flush_operations=3 "
              "wr_total_time_ns=0 rd_total_time_ns=0 flush_total_time_ns=0 rd_merged=0 wr_merged=0 "
              "idle_time_ns=0\n");
}

TEST(MonitorHmp, InfoMisc) {
    Rig r;
    EXPECT_EQ(r.hmp.run("info status"), "VM status: running\n");
    r.view.state = RunState::Prelaunch;
    EXPECT_EQ(r.hmp.run("info status"), "VM status: paused (prelaunch)\n");
    r.view.state = RunState::Paused;
    EXPECT_EQ(r.hmp.run("info status"), "VM status: paused\n");
    EXPECT_EQ(r.hmp.run("info version").rfind("7.2.0 (mpqemu-", 0), 0u);
    EXPECT_EQ(r.hmp.run("info chardev"),
              "compat_monitor0: filename=unix:/tmp/h,server=on\nserial0: filename=null\n");
    EXPECT_EQ(r.hmp.run("info remote-devices"),
              "lsi0: lsi53c895a, channel connected (fd 5), peer pid 42, features multidev\n");
    EXPECT_EQ(r.hmp.run("info name"), "");
    r.view.vm_name = "guest";
    EXPECT_EQ(r.hmp.run("  info   name  "), "guest\n");
}

TEST(MonitorHmp, HelpAndUnknown) {
    Rig r;
    std::string h = r.hmp.run("help");
    EXPECT_NE(h.find("info [subcommand] -- "), std::string::npos);
    EXPECT_NE(h.find("system_reset  -- reset the system\n"), std::string::npos);
    EXPECT_EQ(r.hmp.run("help system_reset"), "system_reset  -- reset the system\n");
    EXPECT_NE(r.hmp.run("info").find("info blockstats  -- "), std::string::npos);
    EXPECT_EQ(r.hmp.run("help info"), r.hmp.run("info"));
    EXPECT_EQ(r.hmp.run("bogus"), "unknown command: 'bogus'\n");
    EXPECT_EQ(r.hmp.run("info bogus"), "unknown command: 'info bogus'\n");
    EXPECT_EQ(r.hmp.run(""), "");
}

TEST(MonitorHmp, ActionsGoThroughQmp) {
    Rig r;
    EXPECT_EQ(r.hmp.run("system_reset"), "");
    EXPECT_EQ(r.view.resets, 1);
    ASSERT_EQ(r.sink.events.size(), 1u);
    EXPECT_EQ(r.sink.events[0].first, "RESET");
    r.view.reset_fails = true;
    EXPECT_EQ(r.hmp.run("system_reset"), "Error: reset refused\n");
    EXPECT_EQ(r.hmp.run("q"), "");
    EXPECT_EQ(r.view.quits, 1);  // no defer hook here: immediate
}

TEST(MonitorHmp, SessionPromptEchoAndEditing) {
    Rig r;
    std::string out;
    HmpSession s(r.hmp, Echo::On, [&](std::string_view b) { out.append(b); });
    s.start();
    EXPECT_EQ(out, "QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ");
    out.clear();
    ASSERT_TRUE(s.feed("info statuX\x7fs\r\n"));
    EXPECT_EQ(out, "info statuX\b \bs\r\nVM status: running\r\n(qemu) ");
    out.clear();
    ASSERT_TRUE(s.feed("\x1b[Ainfo name\n"));  // arrow keys are ignored
    EXPECT_EQ(out, "info name\r\n(qemu) ");
    out.clear();
    ASSERT_TRUE(s.feed("\n"));
    EXPECT_EQ(out, "\r\n(qemu) ");
}

TEST(MonitorHmp, SessionWithoutEchoSplitsChunks) {
    Rig r;
    std::string out;
    HmpSession s(r.hmp, Echo::Off, [&](std::string_view b) { out.append(b); });
    ASSERT_TRUE(s.feed("info st"));
    EXPECT_EQ(out, "");
    ASSERT_TRUE(s.feed("atus\ninfo bogus\n"));
    EXPECT_EQ(out, "VM status: running\r\n(qemu) unknown command: 'info bogus'\r\n(qemu) ");
}

TEST(MonitorHmp, LongLineDropsClient) {
    Rig r;
    std::string out;
    HmpSession s(r.hmp, Echo::Off, [&](std::string_view b) { out.append(b); });
    EXPECT_TRUE(s.feed(std::string(HmpSession::kMaxLine, 'a')));
    EXPECT_FALSE(s.feed("a"));
    EXPECT_NE(out.find("Error: line longer"), std::string::npos);
}

}  // namespace
}  // namespace mpq::monitor
