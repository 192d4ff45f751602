// query-blockstats / info blockstats on a real BlockBackend: the counts must
// equal the I/O that was done (and a failing request must be counted and
// reported as BLOCK_IO_ERROR).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "block/block.h"
#include "monitor/monitor.h"
#include "util/event_loop.h"

namespace mpq::monitor {
namespace {

class TempFile {
public:
    explicit TempFile(size_t size) {
        char tmpl[] = "/tmp/mpq-mon-bs-XXXXXX";
        int fd = ::mkstemp(tmpl);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
        ::close(fd);
        path = tmpl;
    }
    ~TempFile() { ::unlink(path.c_str()); }
    std::string path;
};

class BackendView : public MachineView {
public:
    explicit BackendView(block::BlockBackend& be) : be_(be) {}
    Role role() const override { return Role::Remote; }
    RunState run_state() const override { return RunState::Running; }
    std::vector<PciDeviceInfo> pci_devices() override { return {}; }
    std::vector<BlockDeviceInfo> block_devices() override {
        return {describe_block_backend(be_, "#block100", "sd0")};
    }
    Status system_reset() override { return {}; }
    void quit() override {}

private:
    block::BlockBackend& be_;
};

struct Rig {
    TempFile file{1 << 20};
    EventLoop loop;
    std::unique_ptr<block::BlockBackend> be;
    std::unique_ptr<BackendView> view;
    std::unique_ptr<Monitors> mon;

    Rig() {
        block::DriveOptions o;
        o.id = "d0";
        o.file = file.path;
        o.format = "raw";
        auto drv = block::open_drive(o);
        EXPECT_TRUE(drv.ok()) << drv.error().message;
        be = std::make_unique<block::BlockBackend>(loop, std::move(*drv), o);
        view = std::make_unique<BackendView>(*be);
        mon = std::make_unique<Monitors>(loop, *view);
    }
    ~Rig() {
        mon.reset();
        be->drain();
    }
    // Runs the loop until `pending` reaches zero (bounded).
    void wait(const int& pending) {
        for (int i = 0; i < 2000 && pending > 0; ++i) loop.run_once(10);
        ASSERT_EQ(pending, 0);
    }
    Json stats() {
        auto r = mon->dispatcher().execute("query-blockstats", Json::object());
        EXPECT_TRUE(r.is_ok());
        return r.value()[0]["stats"];
    }
};

TEST(MonitorBlockstats, CountsEqualTheIoDone) {
    Rig r;
    EXPECT_EQ(r.stats()["rd_bytes"], 0);
    std::vector<uint8_t> wbuf(4096, 0x5a), rbuf(8192);
    int pending = 0;
    int failures = 0;
    auto done = [&](Status s) {
        --pending;
        failures += s.ok() ? 0 : 1;
    };
    for (int i = 0; i < 5; ++i) {
        ++pending;
        r.be->write(static_cast<uint64_t>(i) * 4096, wbuf, done);
    }
    r.wait(pending);
    for (int i = 0; i < 3; ++i) {
        ++pending;
        r.be->read(static_cast<uint64_t>(i) * 8192, rbuf, done);
        r.wait(pending);
    }
    ++pending;
    r.be->flush(done);
    r.wait(pending);
    ++pending;
    r.be->discard(65536, 4096, done);
    r.wait(pending);
    ASSERT_EQ(failures, 0);

    Json s = r.stats();
    EXPECT_EQ(s["wr_bytes"], 5 * 4096);
    EXPECT_EQ(s["rd_bytes"], 3 * 8192);
    EXPECT_EQ(s["wr_operations"], 5);
    EXPECT_EQ(s["rd_operations"], 3);
    EXPECT_EQ(s["flush_operations"], 1);
    EXPECT_EQ(s["unmap_operations"], 1);
    EXPECT_EQ(s["unmap_bytes"], 4096);
    EXPECT_EQ(s["failed_rd_operations"], 0);
    EXPECT_GT(s["wr_total_time_ns"].get<uint64_t>(), 0u);
    EXPECT_TRUE(s.contains("idle_time_ns"));

    std::string hmp = r.mon->run_hmp("info blockstats");
    EXPECT_EQ(hmp.rfind("d0: rd_bytes=24576 wr_bytes=20480 rd_operations=3 wr_operations=5 "
                        "flush_operations=1 ", 0), 0u) << hmp;
    auto blk = r.mon->dispatcher().execute("query-block", Json::object());
    ASSERT_TRUE(blk.is_ok());
    EXPECT_EQ(blk.value()[0]["inserted"]["image"]["virtual-size"], 1 << 20);
    EXPECT_EQ(blk.value()[0]["inserted"]["drv"], "raw");
}

// A disk whose reads fail with EIO (writes succeed).
class FailingReads : public block::BlockDriver {
public:
    std::string format_name() const override { return "raw"; }
    uint64_t length() const override { return 1 << 20; }
    Status pread(uint64_t, std::span<uint8_t>) override { return fail_errno(EIO, "injected"); }
    Status pwrite(uint64_t, std::span<const uint8_t>) override { return {}; }
    Status flush() override { return {}; }
    Status discard(uint64_t, uint64_t) override { return {}; }
    Status write_zeroes(uint64_t, uint64_t) override { return {}; }
    bool concurrent_safe() const override { return true; }
};

TEST(MonitorBlockstats, FailedRequestsCountedAndReported) {
    EventLoop loop;
    block::DriveOptions o;
    o.id = "d9";
    o.file = "/nonexistent";
    block::BlockBackend be(loop, std::make_unique<FailingReads>(), o);
    BackendView view(be);
    Monitors mon(loop, view);
    char dir[] = "/tmp/mpq-mon-ev-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/q.sock";
    auto spec = parse_chardev_shorthand("unix:" + path + ",server,nowait", "c0");
    ASSERT_TRUE(spec.ok());
    ASSERT_TRUE(mon.add(MonitorSpec{MonitorMode::Qmp, Pretty::Off, *spec}).ok());

    UniqueFd cl(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path.c_str());
    ASSERT_EQ(::connect(cl.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    std::string in;
    auto pump_until = [&](std::string_view needle) {
        for (int i = 0; i < 1000 && in.find(needle) == std::string::npos; ++i) {
            loop.run_once(10);
            char buf[4096];
            ssize_t n;
            while ((n = ::recv(cl.get(), buf, sizeof(buf), 0)) > 0) in.append(buf, static_cast<size_t>(n));
        }
        return in.find(needle) != std::string::npos;
    };
    ASSERT_TRUE(pump_until("\r\n"));
    std::string neg = R"({"execute":"qmp_capabilities"})";
    ASSERT_EQ(::send(cl.get(), neg.data(), neg.size(), 0), static_cast<ssize_t>(neg.size()));
    ASSERT_TRUE(pump_until(R"({"return": {}})"));

    std::vector<uint8_t> buf(4096);
    int pending = 2;
    int failed = 0;
    for (int i = 0; i < 2; ++i)
        be.read(0, buf, [&](Status s) {
            --pending;
            failed += s.ok() ? 0 : 1;
        });
    for (int i = 0; i < 1000 && pending > 0; ++i) loop.run_once(10);
    ASSERT_EQ(pending, 0);
    EXPECT_EQ(failed, 2);
    auto st = mon.dispatcher().execute("query-blockstats", Json::object());
    ASSERT_TRUE(st.is_ok());
    EXPECT_EQ(st.value()[0]["stats"]["failed_rd_operations"], 2);
    EXPECT_EQ(st.value()[0]["stats"]["rd_bytes"], 0);

    ASSERT_TRUE(pump_until("BLOCK_IO_ERROR"));
    size_t pos = in.find("BLOCK_IO_ERROR");
    size_t start = in.rfind("\r\n", pos) + 2, end = in.find("\r\n", pos);
    Json ev = Json::parse(in.substr(start, end - start));
    EXPECT_EQ(ev["data"]["device"], "d9");
    EXPECT_EQ(ev["data"]["operation"], "read");
    EXPECT_EQ(ev["data"]["action"], "report");
    // One event per failed request.
    for (int i = 0; i < 50; ++i) loop.run_once(10);
    char more[4096];
    ssize_t n;
    while ((n = ::recv(cl.get(), more, sizeof(more), 0)) > 0) in.append(more, static_cast<size_t>(n));
    size_t count = 0;
    for (size_t p = in.find("BLOCK_IO_ERROR"); p != std::string::npos; p = in.find("BLOCK_IO_ERROR", p + 1))
        ++count;
    EXPECT_EQ(count, 2u);
    mon.flush();
    std::system((std::string("rm -rf ") + dir).c_str());
}

}  // namespace
}  // namespace mpq::monitor
