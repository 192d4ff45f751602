// block_resize, block-set-write-threshold (BLOCK_WRITE_THRESHOLD) and
// wr_highest_offset through the QMP/HMP commands, on a real BlockBackend and
// image file: what the commands say must be what happened to the file.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "block/block.h"
#include "block_testutil.h"
#include "monitor/commands.h"
#include "monitor/hmp.h"
#include "monitor_fake_view.h"
#include "util/event_loop.h"

namespace mpq::monitor {
namespace {

using testing::FakeSink;
using testutil::TempImage;

uint64_t file_size(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    return static_cast<uint64_t>(st.st_size);
}

// The remote's adapter in miniature: one drive, resize and threshold hooks.
class BackendView : public MachineView {
public:
    explicit BackendView(block::BlockBackend& be) : be_(be) {}
    Role role() const override { return Role::Remote; }
    RunState run_state() const override { return RunState::Running; }
    std::vector<PciDeviceInfo> pci_devices() override { return {}; }
    std::vector<BlockDeviceInfo> block_devices() override {
        return {describe_block_backend(be_, "#block100", "sd0")};
    }
    Status block_resize(std::string_view device, uint64_t size) override {
        EXPECT_EQ(device, "d0");
        MPQ_TRY(be_.resize(size));
        ++capacity_changes;
        return {};
    }
    Status set_write_threshold(std::string_view device, uint64_t threshold,
                               ThresholdHit hit) override {
        EXPECT_EQ(device, "d0");
        be_.set_write_threshold(threshold, std::move(hit));
        return {};
    }
    Status system_reset() override { return {}; }
    void quit() override {}
    int capacity_changes = 0;

private:
    block::BlockBackend& be_;
};

// A driver that cannot resize (as qcow2 here): BlockDriver's default.
class NoResize final : public block::BlockDriver {
public:
    std::string format_name() const override { return "qcow2"; }
    uint64_t length() const override { return 1 << 20; }
    Status pread(uint64_t, std::span<uint8_t>) override { return {}; }
    Status pwrite(uint64_t, std::span<const uint8_t>) override { return {}; }
    Status flush() override { return {}; }
    Status discard(uint64_t, uint64_t) override { return {}; }
    Status write_zeroes(uint64_t, uint64_t) override { return {}; }
    bool concurrent_safe() const override { return false; }
};

struct Rig {
    explicit Rig(block::ReadOnly ro = block::ReadOnly::No, bool no_resize = false) {
        block::DriveOptions o;
        o.id = "d0";
        o.file = img.path();
        o.format = "raw";
        o.read_only = ro;
        std::unique_ptr<block::BlockDriver> drv;
        if (no_resize) {
            drv = std::make_unique<NoResize>();
        } else {
            auto f = block::open_drive(o);
            EXPECT_TRUE(f.ok()) << f.error().message;
            drv = std::move(*f);
        }
        be = std::make_unique<block::BlockBackend>(loop, std::move(drv), o);
        view = std::make_unique<BackendView>(*be);
        env = std::make_unique<CommandEnv>(CommandEnv{*view, sink, {}, {}, {}});
        env->run_hmp = [this](const std::string& l) { return hmp.run(l); };
        register_commands(d, *env);
    }
    ~Rig() { be->drain(); }

    QmpReply exec(std::string_view cmd, const std::string& args) {
        return d.execute(cmd, Json::parse(args));
    }
    static std::string err(const QmpReply& r) {
        return r.is_ok() ? "(ok)" : r.error().cls + ": " + r.error().desc;
    }
    void write(uint64_t off, uint64_t len) {
        std::vector<uint8_t> buf(len, 0x5a);
        int pending = 1;
        be->write(off, buf, [&](Status s) { EXPECT_TRUE(s.ok()); --pending; });
        wait(pending);
    }
    void discard(uint64_t off, uint64_t len) {
        int pending = 1;
        be->discard(off, len, [&](Status) { --pending; });
        wait(pending);
    }
    void write_zeroes(uint64_t off, uint64_t len) {
        int pending = 1;
        be->write_zeroes(off, len, [&](Status s) { EXPECT_TRUE(s.ok()); --pending; });
        wait(pending);
    }
    void wait(const int& pending) {
        for (int i = 0; i < 2000 && pending > 0; ++i) loop.run_once(10);
        ASSERT_EQ(pending, 0);
    }
    Json block0() {
        auto r = d.execute("query-block", Json::object());
        EXPECT_TRUE(r.is_ok());
        return r.value()[0];
    }
    Json stats0() {
        auto r = d.execute("query-blockstats", Json::object());
        EXPECT_TRUE(r.is_ok());
        return r.value()[0]["stats"];
    }

    TempImage img{1 << 20};
    EventLoop loop;
    std::unique_ptr<block::BlockBackend> be;
    std::unique_ptr<BackendView> view;
    FakeSink sink;
    QmpDispatcher d;
    Hmp hmp{d};
    std::unique_ptr<CommandEnv> env;
};

TEST(MonitorBlockAdmin, WriteThresholdFiresOnceWithQemuFields) {
    Rig r;
    auto rep = r.exec("block-set-write-threshold",
                      R"({"node-name": "#block100", "write-threshold": 8192})");
    ASSERT_TRUE(rep.is_ok()) << Rig::err(rep);
    EXPECT_EQ(r.block0()["inserted"]["write_threshold"], 8192);

    r.write(0, 4096);      // ends at 4096
    r.write(4096, 4096);   // ends exactly at the threshold: not past it
    EXPECT_TRUE(r.sink.events.empty());
    r.write(6144, 4096);   // ends at 10240: 2048 past
    ASSERT_EQ(r.sink.events.size(), 1u);
    EXPECT_EQ(r.sink.events[0].first, "BLOCK_WRITE_THRESHOLD");
    EXPECT_EQ(r.sink.events[0].second,
              Json::parse(R"({"node-name": "#block100", "amount-exceeded": 2048,
                              "write-threshold": 8192})"));
    // Cleared once it fired: query-block shows 0 and later writes are quiet.
    EXPECT_EQ(r.block0()["inserted"]["write_threshold"], 0);
    r.write(65536, 4096);
    EXPECT_EQ(r.sink.events.size(), 1u);

    // Discards and write-zeroes count as writes (as in QEMU).
    ASSERT_TRUE(r.exec("block-set-write-threshold",
                       R"({"node-name": "#block100", "write-threshold": 100000})").is_ok());
    r.discard(0, 4096);
    EXPECT_EQ(r.sink.events.size(), 1u);
    r.discard(98304, 8192);  // ends at 106496
    ASSERT_EQ(r.sink.events.size(), 2u);
    EXPECT_EQ(r.sink.events[1].second["amount-exceeded"], 6496);
    ASSERT_TRUE(r.exec("block-set-write-threshold",
                       R"({"node-name": "#block100", "write-threshold": 4096})").is_ok());
    r.write_zeroes(4096, 512);
    ASSERT_EQ(r.sink.events.size(), 3u);
    EXPECT_EQ(r.sink.events[2].second["amount-exceeded"], 512);

    // 0 switches it off.
    ASSERT_TRUE(r.exec("block-set-write-threshold",
                       R"({"node-name": "#block100", "write-threshold": 1})").is_ok());
    ASSERT_TRUE(r.exec("block-set-write-threshold",
                       R"({"node-name": "#block100", "write-threshold": 0})").is_ok());
    r.write(0, 4096);
    EXPECT_EQ(r.sink.events.size(), 3u);
}

TEST(MonitorBlockAdmin, WriteThresholdErrors) {
    Rig r;
    // QEMU looks up node names only (the drive id is not one).
    EXPECT_EQ(Rig::err(r.exec("block-set-write-threshold",
                              R"({"node-name": "d0", "write-threshold": 1})")),
              "GenericError: Device 'd0' not found");
    EXPECT_EQ(Rig::err(r.exec("block-set-write-threshold", R"({"node-name": "#block100"})")),
              "GenericError: Parameter 'write-threshold' is missing");
    EXPECT_EQ(Rig::err(r.exec("block-set-write-threshold",
                              R"({"node-name": "#block100", "write-threshold": -5})")),
              "GenericError: Invalid parameter type for 'write-threshold', expected: integer");
    EXPECT_EQ(r.block0()["inserted"]["write_threshold"], 0);
}

TEST(MonitorBlockAdmin, NoEventAfterTheCommandEnvIsGone) {
    Rig r;
    ASSERT_TRUE(r.exec("block-set-write-threshold",
                       R"({"node-name": "#block100", "write-threshold": 512})").is_ok());
    r.env->alive.reset();  // the monitors went away first
    r.write(0, 4096);
    EXPECT_TRUE(r.sink.events.empty());
    EXPECT_EQ(r.be->write_threshold(), 0u);
}

TEST(MonitorBlockAdmin, WrHighestOffsetIsTheLargestWriteEnd) {
    Rig r;
    EXPECT_EQ(r.stats0()["wr_highest_offset"], 0);
    r.write(65536, 4096);
    EXPECT_EQ(r.stats0()["wr_highest_offset"], 69632);
    r.write(0, 512);  // lower: unchanged
    EXPECT_EQ(r.stats0()["wr_highest_offset"], 69632);
    r.write_zeroes(131072, 1024);
    EXPECT_EQ(r.stats0()["wr_highest_offset"], 132096);
    r.discard(512000, 4096);  // not a write (QEMU counts write requests only)
    EXPECT_EQ(r.stats0()["wr_highest_offset"], 132096);
}

TEST(MonitorBlockAdmin, BlockResizeGrowsAndShrinksTheRawFile) {
    Rig r;
    auto rep = r.exec("block_resize", R"({"device": "d0", "size": 4194304})");
    ASSERT_TRUE(rep.is_ok()) << Rig::err(rep);
    EXPECT_EQ(file_size(r.img.path()), 4u << 20);
    EXPECT_EQ(r.be->length(), 4u << 20);
    EXPECT_EQ(r.block0()["inserted"]["image"]["virtual-size"], 4 << 20);
    EXPECT_EQ(r.view->capacity_changes, 1);
    // The new space is usable and holds what is written there.
    r.write((4 << 20) - 4096, 4096);
    EXPECT_EQ(r.img.read((4 << 20) - 4096, 4096), std::vector<uint8_t>(4096, 0x5a));

    rep = r.exec("block_resize", R"({"node-name": "#block100", "size": 524288})");
    ASSERT_TRUE(rep.is_ok()) << Rig::err(rep);
    EXPECT_EQ(file_size(r.img.path()), 512u << 10);
    EXPECT_EQ(r.be->length(), 512u << 10);
    EXPECT_EQ(r.view->capacity_changes, 2);

    // HMP: MiB unless suffixed.
    EXPECT_EQ(r.hmp.run("block_resize d0 2"), "");
    EXPECT_EQ(file_size(r.img.path()), 2u << 20);
    EXPECT_EQ(r.hmp.run("block_resize d0 1536k"), "");
    EXPECT_EQ(file_size(r.img.path()), 1536u << 10);
    EXPECT_EQ(r.hmp.run("block_resize d0 1G"), "");
    EXPECT_EQ(file_size(r.img.path()), 1u << 30);
    EXPECT_EQ(r.hmp.run("block_resize d0 12x"), "invalid size\n");
    EXPECT_EQ(r.hmp.run("block_resize d0 99999999999999999999"), "invalid size\n");
    EXPECT_EQ(r.hmp.run("block_resize d0"), "block_resize: device and size are required\n");
    EXPECT_EQ(r.hmp.run("block_resize nope 1"),
              "Error: Cannot find device='nope' nor node-name=''\n");
    EXPECT_EQ(file_size(r.img.path()), 1u << 30);
}

TEST(MonitorBlockAdmin, BlockResizeErrors) {
    Rig r;
    EXPECT_EQ(Rig::err(r.exec("block_resize", R"({"device": "x", "node-name": "y", "size": 1})")),
              "GenericError: Cannot find device='x' nor node-name='y'");
    EXPECT_EQ(Rig::err(r.exec("block_resize", R"({"size": 1})")),
              "GenericError: Cannot find device='' nor node-name=''");
    EXPECT_EQ(Rig::err(r.exec("block_resize", R"({"device": "d0", "size": -1})")),
              "GenericError: Parameter 'size' expects a >0 size");
    EXPECT_EQ(Rig::err(r.exec("block_resize", R"({"device": "d0", "size": "1M"})")),
              "GenericError: Invalid parameter type for 'size', expected: integer");
    EXPECT_EQ(Rig::err(r.exec("block_resize", R"({"device": "d0", "size": 18446744073709551615})")),
              "GenericError: Invalid parameter type for 'size', expected: integer");
    EXPECT_EQ(Rig::err(r.exec("block_resize", R"({"device": "d0"})")),
              "GenericError: Parameter 'size' is missing");
    EXPECT_EQ(file_size(r.img.path()), 1u << 20);
    EXPECT_EQ(r.view->capacity_changes, 0);

    Rig ro(block::ReadOnly::Yes);
    EXPECT_EQ(Rig::err(ro.exec("block_resize", R"({"device": "d0", "size": 2097152})")),
              "GenericError: Block node is read-only");
    EXPECT_EQ(file_size(ro.img.path()), 1u << 20);

    Rig q(block::ReadOnly::No, true);
    EXPECT_EQ(Rig::err(q.exec("block_resize", R"({"device": "d0", "size": 2097152})")),
              "GenericError: Image format driver does not support resize");
    EXPECT_EQ(q.view->capacity_changes, 0);
}

TEST(MonitorBlockAdmin, DefaultViewRefuses) {
    // A process without resizable drives (the VMM's view) answers cleanly.
    testing::FakeView v;
    FakeSink sink;
    QmpDispatcher d;
    CommandEnv env{v, sink, {}, {}, {}};
    register_commands(d, env);
    auto r = d.execute("block_resize", Json::parse(R"({"device": "d0", "size": 1})"));
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().desc, "Image format driver does not support resize");
    r = d.execute("block-set-write-threshold",
                  Json::parse(R"({"node-name": "#block123", "write-threshold": 1})"));
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().desc, "Device 'd0' not found");
}

}  // namespace
}  // namespace mpq::monitor
