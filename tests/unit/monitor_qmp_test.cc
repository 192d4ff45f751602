#include "monitor/qmp.h"

#include <gtest/gtest.h>

#include <functional>

#include "monitor/commands.h"
#include "monitor/hmp.h"
#include "monitor_fake_view.h"

namespace mpq::monitor {
namespace {

using testing::FakeSink;
using testing::FakeView;

// A QMP session wired to the fake view; collects every JSON line written.
struct Rig {
    FakeView view;
    FakeSink sink;
    QmpDispatcher d;
    Hmp hmp{d};
    std::vector<std::function<void()>> deferred;
    CommandEnv env{view, sink, {}, {}, {}};
    std::string out;
    QmpSession s{d, Pretty::Off, [this](std::string_view b) { out.append(b); }};

    Rig() {
        env.monitor_chardevs = [] {
            return std::vector<ChardevInfo>{{"compat_monitor0", "unix:/tmp/q,server=on", true}};
        };
        env.defer = [this](std::function<void()> f) { deferred.push_back(std::move(f)); };
        env.run_hmp = [this](const std::string& l) { return to_crlf(hmp.run(l)); };
        register_commands(d, env);
    }
    // Returns the JSON values written since the last call.
    std::vector<Json> take() {
        std::vector<Json> v;
        size_t pos = 0;
        while (true) {
            size_t nl = out.find("\r\n", pos);
            if (nl == std::string::npos) break;
            v.push_back(Json::parse(out.substr(pos, nl - pos)));
            pos = nl + 2;
        }
        EXPECT_EQ(pos, out.size()) << "partial line left: " << out.substr(pos);
        out.clear();
        return v;
    }
    Json one(std::string_view in) {
        EXPECT_TRUE(s.feed(in));
        auto v = take();
        EXPECT_EQ(v.size(), 1u) << in;
        return v.empty() ? Json() : v[0];
    }
    void negotiate() {
        s.start();
        take();
        ASSERT_EQ(one(R"({"execute":"qmp_capabilities"})"), Json::parse(R"({"return": {}})"));
    }
};

TEST(MonitorQmp, GreetingShape) {
    Rig r;
    r.s.start();
    auto v = r.take();
    ASSERT_EQ(v.size(), 1u);
    const Json& g = v[0]["QMP"];
    EXPECT_EQ(g["version"]["qemu"]["major"], 7);
    EXPECT_EQ(g["version"]["qemu"]["minor"], 2);
    EXPECT_TRUE(g["version"]["qemu"]["micro"].is_number_integer());
    EXPECT_EQ(g["version"]["package"].get<std::string>().rfind("mpqemu-", 0), 0u);
    EXPECT_EQ(g["capabilities"], Json::array());
}

TEST(MonitorQmp, TextFormatMatchesQemuSpacing) {
    Json v = Json::object();
    v["return"] = Json{{"a", 1}, {"b", Json::array({1, 2})}};
    v["id"] = "x";
    EXPECT_EQ(to_qmp_text(v), R"({"return": {"a": 1, "b": [1, 2]}, "id": "x"})");
    EXPECT_EQ(to_qmp_text(Json::object()), "{}");
    // Invalid UTF-8 must not throw.
    EXPECT_NO_THROW(to_qmp_text(Json(std::string("\xff\xfe"))));
}

TEST(MonitorQmp, NegotiationRequired) {
    Rig r;
    r.s.start();
    r.take();
    Json e = r.one(R"({"execute":"query-status","id":7})");
    EXPECT_EQ(e["error"]["class"], "CommandNotFound");
    EXPECT_EQ(e["error"]["desc"], "Expecting capabilities negotiation with 'qmp_capabilities'");
    EXPECT_EQ(e["id"], 7);
    Json ok = r.one(R"({"execute":"qmp_capabilities","id":{"a":[1]}})");
    EXPECT_EQ(ok["return"], Json::object());
    EXPECT_EQ(ok["id"], Json::parse(R"({"a":[1]})"));
    Json again = r.one(R"({"execute":"qmp_capabilities"})");
    EXPECT_EQ(again["error"]["class"], "CommandNotFound");
    EXPECT_TRUE(r.s.negotiated());
}

TEST(MonitorQmp, CapabilitiesRejectsOob) {
    Rig r;
    r.s.start();
    r.take();
    Json e = r.one(R"({"execute":"qmp_capabilities","arguments":{"enable":["oob"]}})");
    EXPECT_EQ(e["error"]["class"], "GenericError");
    EXPECT_FALSE(r.s.negotiated());
    e = r.one(R"({"execute":"qmp_capabilities","arguments":{"enable":"oob"}})");
    EXPECT_EQ(e["error"]["class"], "GenericError");
    e = r.one(R"({"execute":"qmp_capabilities","arguments":{"bogus":1}})");
    EXPECT_EQ(e["error"]["class"], "GenericError");
    EXPECT_FALSE(r.s.negotiated());
}

TEST(MonitorQmp, IdEchoAnyJson) {
    Rig r;
    r.negotiate();
    for (const char* id : {"1", "\"abc\"", "null", "1.5", "[1,{\"x\":2}]", "-3"}) {
        Json v = r.one(std::string(R"({"execute":"query-name","id":)") + id + "}");
        EXPECT_EQ(v["id"], Json::parse(id)) << id;
        EXPECT_TRUE(v.contains("return"));
    }
}

TEST(MonitorQmp, ProtocolErrorsAsQemu) {
    Rig r;
    r.negotiate();
    struct Case {
        const char* in;
        const char* cls;
        const char* desc;
    } cases[] = {
        {R"({"execute":"nope","id":"x"})", "CommandNotFound", "The command nope has not been found"},
        {R"({"foo":1})", "GenericError", "QMP input member 'foo' is unexpected"},
        {R"([1,2])", "GenericError", "QMP input must be a JSON object"},
        {R"("str")", "GenericError", "QMP input must be a JSON object"},
        {R"({"execute":1})", "GenericError", "QMP input member 'execute' must be a string"},
        {R"({"id":1})", "GenericError", "QMP input lacks member 'execute'"},
        {R"({"execute":"query-status","arguments":[]})", "GenericError",
         "QMP input member 'arguments' must be an object"},
        {R"({"execute":"query-status","arguments":{"x":1}})", "GenericError",
         "Parameter 'x' is unexpected"},
        {R"({"execute":"human-monitor-command"})", "GenericError",
         "Parameter 'command-line' is missing"},
        {R"({"execute":"human-monitor-command","arguments":{"command-line":42}})", "GenericError",
         "Invalid parameter type for 'command-line', expected: string"},
        {R"({"execute":"human-monitor-command","arguments":{"command-line":"info version","cpu-index":"0"}})",
         "GenericError", "Invalid parameter type for 'cpu-index', expected: integer"},
        {R"({"execute":"query-status","exec-oob":true})", "GenericError",
         "QMP input member 'exec-oob' is unexpected"},
    };
    for (const auto& c : cases) {
        Json v = r.one(c.in);
        EXPECT_EQ(v["error"]["class"], c.cls) << c.in;
        EXPECT_EQ(v["error"]["desc"], c.desc) << c.in;
    }
}

TEST(MonitorQmp, MalformedJsonKeepsSession) {
    Rig r;
    r.negotiate();
    for (const char* bad : {"garbage\n", "{\"execute\": foo}\n", "}\n", "{\"a\":1,}\n",
                            "{\"execute\":\"query-name\" \"x\"}\n", "\x01\x02\n"}) {
        ASSERT_TRUE(r.s.feed(bad));
        auto v = r.take();
        ASSERT_EQ(v.size(), 1u) << bad;
        EXPECT_EQ(v[0]["error"]["class"], "GenericError");
        EXPECT_EQ(v[0]["error"]["desc"].get<std::string>().rfind("JSON parse error", 0), 0u);
    }
    EXPECT_TRUE(r.one(R"({"execute":"query-name"})").contains("return"));
}

TEST(MonitorQmp, StreamingAcrossLinesAndChunks) {
    Rig r;
    r.negotiate();
    ASSERT_TRUE(r.s.feed("{\"execute\":\n\"query-status\""));
    EXPECT_TRUE(r.take().empty());
    ASSERT_TRUE(r.s.feed("}"));
    auto v = r.take();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["return"]["status"], "running");
    // Two commands in one chunk, braces inside strings don't confuse the splitter.
    ASSERT_TRUE(r.s.feed(R"({"execute":"query-name","id":"}{"}{"execute":"query-name","id":"\"]"})"));
    v = r.take();
    ASSERT_EQ(v.size(), 2u);
    EXPECT_EQ(v[0]["id"], "}{");
    EXPECT_EQ(v[1]["id"], "\"]");
    // Byte-by-byte.
    std::string cmd = R"({"execute":"query-version","id":9})";
    for (char c : cmd) ASSERT_TRUE(r.s.feed(std::string_view(&c, 1)));
    v = r.take();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["id"], 9);
}

TEST(MonitorQmp, HugeMessageDropsClient) {
    Rig r;
    r.negotiate();
    std::string big = R"({"execute":"query-name","id":")" + std::string(JsonSplitter::kMaxMessage, 'a');
    EXPECT_FALSE(r.s.feed(big));
    auto v = r.take();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["error"]["class"], "GenericError");
    // An endless bare token is bounded too.
    Rig r2;
    r2.negotiate();
    std::string chunk(64 << 10, '1');
    bool keep = true;
    for (int i = 0; i < 32 && keep; ++i) keep = r2.s.feed(chunk);
    EXPECT_FALSE(keep);
}

TEST(MonitorQmp, DeepNestingDropsClient) {
    Rig r;
    r.negotiate();
    std::string deep(1000, '[');
    EXPECT_FALSE(r.s.feed(deep));
    auto v = r.take();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["error"]["class"], "GenericError");
}

TEST(MonitorQmp, QueryShapes) {
    Rig r;
    r.negotiate();
    Json v = r.one(R"({"execute":"query-version"})")["return"];
    EXPECT_EQ(v["qemu"]["major"], 7);
    v = r.one(R"({"execute":"query-name"})")["return"];
    EXPECT_EQ(v, Json::object());
    r.view.vm_name = "vm1";
    EXPECT_EQ(r.one(R"({"execute":"query-name"})")["return"]["name"], "vm1");

    r.view.state = RunState::Prelaunch;
    v = r.one(R"({"execute":"query-status"})")["return"];
    EXPECT_EQ(v["status"], "prelaunch");
    EXPECT_EQ(v["running"], false);
    EXPECT_EQ(v["singlestep"], false);

    v = r.one(R"({"execute":"query-pci"})")["return"];
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["bus"], 0);
    const Json& dev = v[0]["devices"][0];
    EXPECT_EQ(dev["slot"], 3);
    EXPECT_EQ(dev["class_info"]["class"], 0x0100);
    EXPECT_EQ(dev["class_info"]["desc"], "SCSI controller");
    EXPECT_EQ(dev["id"]["vendor"], 0x1000);
    EXPECT_EQ(dev["id"]["device"], 0x12);
    EXPECT_EQ(dev["id"]["subsystem"], 0x1000);
    EXPECT_EQ(dev["id"]["subsystem-vendor"], 0);
    EXPECT_EQ(dev["irq"], 11);
    EXPECT_EQ(dev["irq_pin"], 1);
    EXPECT_EQ(dev["qdev_id"], "lsi0");
    ASSERT_EQ(dev["regions"].size(), 3u);
    EXPECT_EQ(dev["regions"][0]["type"], "io");
    EXPECT_EQ(dev["regions"][0]["address"], 0xc000);
    EXPECT_FALSE(dev["regions"][0].contains("prefetch"));
    EXPECT_EQ(dev["regions"][1]["type"], "memory");
    EXPECT_EQ(dev["regions"][1]["mem_type_64"], false);
    EXPECT_EQ(dev["regions"][2]["address"], -1);
    EXPECT_EQ(dev["regions"][2]["size"], 8192);

    v = r.one(R"({"execute":"query-block"})")["return"];
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["device"], "d0");
    EXPECT_EQ(v[0]["qdev"], "scsi0-0-0");
    EXPECT_EQ(v[0]["removable"], false);
    EXPECT_EQ(v[0]["inserted"]["file"], "disk.img");
    EXPECT_EQ(v[0]["inserted"]["drv"], "raw");
    EXPECT_EQ(v[0]["inserted"]["node-name"], "#block123");
    EXPECT_EQ(v[0]["inserted"]["ro"], false);
    EXPECT_EQ(v[0]["inserted"]["image"]["virtual-size"], 64 << 20);
    EXPECT_EQ(v[0]["inserted"]["cache"]["writeback"], true);
    EXPECT_EQ(v[0]["inserted"]["cache"]["direct"], false);

    v = r.one(R"({"execute":"query-blockstats"})")["return"];
    ASSERT_EQ(v.size(), 1u);
    const Json& st = v[0]["stats"];
    EXPECT_EQ(st["rd_bytes"], 4096);
    EXPECT_EQ(st["wr_bytes"], 8192);
    EXPECT_EQ(st["rd_operations"], 1);
    EXPECT_EQ(st["wr_operations"], 2);
    EXPECT_EQ(st["flush_operations"], 3);
    EXPECT_EQ(st["failed_wr_operations"], 1);
    for (const char* k : {"unmap_bytes", "unmap_operations", "rd_total_time_ns", "wr_total_time_ns",
                          "flush_total_time_ns", "failed_rd_operations", "invalid_rd_operations",
                          "wr_highest_offset", "rd_merged", "account_failed", "timed_stats"})
        EXPECT_TRUE(st.contains(k)) << k;
    EXPECT_FALSE(st.contains("idle_time_ns"));  // no I/O yet
    r.view.blocks[0].stats.last_io_ns = 1;
    v = r.one(R"({"execute":"query-blockstats","arguments":{"query-nodes":false}})")["return"];
    EXPECT_TRUE(v[0]["stats"]["idle_time_ns"].is_number_unsigned());

    v = r.one(R"({"execute":"query-chardev"})")["return"];
    ASSERT_EQ(v.size(), 2u);
    EXPECT_EQ(v[0]["label"], "compat_monitor0");
    EXPECT_EQ(v[0]["filename"], "unix:/tmp/q,server=on");
    EXPECT_EQ(v[0]["frontend-open"], true);
    EXPECT_EQ(v[1]["label"], "serial0");

    v = r.one(R"({"execute":"query-remote-devices"})")["return"];
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["id"], "lsi0");
    EXPECT_EQ(v[0]["channel"], "connected");
    EXPECT_EQ(v[0]["features"][0], "multidev");

    v = r.one(R"({"execute":"query-commands"})")["return"];
    std::vector<std::string> names;
    for (const auto& c : v) names.push_back(c["name"]);
    for (const char* n : {"query-version", "query-commands", "query-name", "query-status",
                          "query-pci", "query-block", "query-blockstats", "query-chardev",
                          "human-monitor-command", "system_reset", "quit", "qmp_capabilities",
                          "query-remote-devices"})
        EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

TEST(MonitorQmp, ResetAndQuitEmitEvents) {
    Rig r;
    r.negotiate();
    EXPECT_EQ(r.one(R"({"execute":"system_reset"})")["return"], Json::object());
    EXPECT_EQ(r.view.resets, 1);
    ASSERT_EQ(r.sink.events.size(), 1u);
    EXPECT_EQ(r.sink.events[0].first, "RESET");
    EXPECT_EQ(r.sink.events[0].second["reason"], "host-qmp-system-reset");
    EXPECT_EQ(r.sink.events[0].second["guest"], false);

    r.view.reset_fails = true;
    Json e = r.one(R"({"execute":"system_reset"})");
    EXPECT_EQ(e["error"]["desc"], "reset refused");
    EXPECT_EQ(r.sink.events.size(), 1u);

    EXPECT_EQ(r.one(R"({"execute":"quit","id":1})")["return"], Json::object());
    EXPECT_EQ(r.view.quits, 0);  // only after the reply went out
    ASSERT_EQ(r.deferred.size(), 1u);
    r.deferred[0]();
    EXPECT_EQ(r.view.quits, 1);
    EXPECT_EQ(r.sink.events.back().first, "SHUTDOWN");
    EXPECT_EQ(r.sink.events.back().second["reason"], "host-qmp-quit");
}

TEST(MonitorQmp, EventsOnlyAfterNegotiation) {
    Rig r;
    r.s.start();
    r.take();
    r.s.send_event(Json{{"event", "RESET"}});
    EXPECT_TRUE(r.take().empty());
    ASSERT_TRUE(r.s.feed(R"({"execute":"qmp_capabilities"})"));
    r.take();
    r.s.send_event(Json{{"event", "RESET"}});
    auto v = r.take();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]["event"], "RESET");
}

TEST(MonitorQmp, HumanMonitorCommand) {
    Rig r;
    r.negotiate();
    Json v = r.one(R"({"execute":"human-monitor-command","arguments":{"command-line":"info block"}})");
    std::string text = v["return"];
    EXPECT_NE(text.find("d0 (#block123): disk.img (raw)\r\n"), std::string::npos) << text;
    v = r.one(R"({"execute":"human-monitor-command","arguments":{"command-line":"bogus"}})");
    EXPECT_EQ(v["return"], "unknown command: 'bogus'\r\n");
    // Invalid UTF-8 in the echo of an unknown command must still produce JSON.
    ASSERT_TRUE(r.s.feed("{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"\xff\"}}"));
    auto out = r.take();
    ASSERT_EQ(out.size(), 1u);
}

TEST(MonitorQmp, PrettyOutput) {
    FakeView view;
    FakeSink sink;
    QmpDispatcher d;
    CommandEnv env{view, sink, {}, {}, {}};
    register_commands(d, env);
    std::string out;
    QmpSession s(d, Pretty::On, [&](std::string_view b) { out.append(b); });
    s.start();
    EXPECT_NE(out.find("{\n    \"QMP\": {\n"), std::string::npos) << out;
    EXPECT_TRUE(Json::accept(out));
}

}  // namespace
}  // namespace mpq::monitor
