#include "monitor/commands.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <time.h>

#include <fmt/format.h>

#include "trace/trace.h"
#include "util/fdset.h"

namespace mpq::monitor {
namespace {

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Json cache_json(block::CacheMode c) {
    bool writeback = c != block::CacheMode::Writethrough && c != block::CacheMode::Directsync;
    bool direct = c == block::CacheMode::None || c == block::CacheMode::Directsync;
    bool no_flush = c == block::CacheMode::Unsafe;
    return Json{{"no-flush", no_flush}, {"direct", direct}, {"writeback", writeback}};
}

Json remote_devices_json(const std::vector<RemoteDeviceInfo>& devs) {
    Json out = Json::array();
    for (const auto& d : devs) {
        Json j = Json::object();
        j["id"] = d.id;
        j["driver"] = d.driver;
        j["channel"] = d.channel;
        if (d.fd >= 0) j["fd"] = d.fd;
        if (!d.peer.empty()) j["peer"] = d.peer;
        j["features"] = d.features;
        out.push_back(std::move(j));
    }
    return out;
}

// QEMU's bdrv_lookup_bs(): `device` (a BlockBackend name) first, then a node name.
const BlockDeviceInfo* find_block(const std::vector<BlockDeviceInfo>& all, const Json& args,
                                  std::string& err) {
    std::string device = args.contains("device") ? args["device"].get<std::string>() : "";
    std::string node = args.contains("node-name") ? args["node-name"].get<std::string>() : "";
    if (!device.empty())
        for (const auto& b : all)
            if (b.device == device) return &b;
    if (!node.empty())
        for (const auto& b : all)
            if (b.node_name == node) return &b;
    err = fmt::format("Cannot find device='{}' nor node-name='{}'", device, node);
    return nullptr;
}

QmpReply block_resize(CommandEnv& env, const Json& args) {
    const Json& size = args["size"];
    if (size.is_number_unsigned() && size.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        return QmpReply::err(kGenericError, "Invalid parameter type for 'size', expected: integer");
    auto all = env.view.block_devices();
    std::string err;
    const BlockDeviceInfo* b = find_block(all, args, err);
    if (!b) return QmpReply::err(kGenericError, err);
    if (size.get<int64_t>() < 0)
        return QmpReply::err(kGenericError, "Parameter 'size' expects a >0 size");
    // A blockdev-add node has no BlockBackend name: its node name is the drive's id.
    auto st = env.view.block_resize(b->device.empty() ? b->node_name : b->device,
                                    static_cast<uint64_t>(size.get<int64_t>()));
    if (!st) return QmpReply::err(kGenericError, st.error().message);
    return QmpReply::ok();
}

QmpReply set_write_threshold(CommandEnv& env, const Json& args) {
    std::string node = args["node-name"].get<std::string>();
    uint64_t threshold = args["write-threshold"].get<uint64_t>();
    auto all = env.view.block_devices();
    auto it = std::find_if(all.begin(), all.end(), [&](const auto& b) { return b.node_name == node; });
    // QEMU looks node names up only, and says "Device" when it finds none.
    if (it == all.end()) return QmpReply::err(kGenericError, fmt::format("Device '{}' not found", node));
    std::weak_ptr<bool> alive = env.alive;
    EventSink* events = &env.events;
    auto hit = [alive, events, node](uint64_t end, uint64_t thr) {
        if (!alive.lock()) return;
        events->emit(kEventBlockWriteThreshold, Json{{"node-name", node},
                                                     {"amount-exceeded", end - thr},
                                                     {"write-threshold", thr}});
    };
    auto st = env.view.set_write_threshold(it->device.empty() ? it->node_name : it->device, threshold,
                                           std::move(hit));
    if (!st) return QmpReply::err(kGenericError, st.error().message);
    return QmpReply::ok();
}

// The events `name` selects for trace-event-get-state/-set-state, in the
// order QEMU lists them (its list is built by prepending); an exact name that
// does not exist is an error, a pattern matching nothing is not.
std::optional<QmpReply> trace_events_for(const Json& args, std::vector<trace::Event*>& out) {
    std::string name = args["name"].get<std::string>();
    // This machine has no vCPU, so there is no vCPU index to name.
    if (args.contains("vcpu"))
        return QmpReply::err(kGenericError, fmt::format("invalid vCPU index {}", args["vcpu"].dump()));
    for (trace::Event* e : trace::all_events())
        if (trace::glob_match(name, e->name)) out.insert(out.begin(), e);
    if (out.empty() && !trace::is_pattern(name))
        return QmpReply::err(kGenericError, fmt::format("unknown event \"{}\"", name));
    return std::nullopt;
}

}  // namespace

Json trace_event_states_json(const std::vector<trace::Event*>& events) {
    Json out = Json::array();
    for (const trace::Event* e : events)
        out.push_back(Json{{"name", e->name}, {"vcpu", false},
                           {"state", e->on.load(std::memory_order_relaxed) ? "enabled" : "disabled"}});
    return out;
}

std::string pci_class_desc(uint32_t class_code) {
    struct Entry {
        uint16_t cls;
        const char* desc;
    };
    // Class/subclass names as lspci and QEMU print them (common ones only).
    static constexpr Entry kTable[] = {
        {0x0100, "SCSI controller"},    {0x0101, "IDE controller"},
        {0x0106, "SATA controller"},    {0x0107, "SAS controller"},
        {0x0108, "NVMe controller"},    {0x0180, "Storage controller"},
        {0x0200, "Ethernet controller"}, {0x0300, "VGA controller"},
        {0x0380, "Display controller"}, {0x0403, "Audio controller"},
        {0x0500, "RAM controller"},     {0x0600, "Host bridge"},
        {0x0601, "ISA bridge"},         {0x0604, "PCI bridge"},
        {0x0680, "Bridge"},             {0x0700, "Serial port"},
        {0x0c03, "USB controller"},     {0x0c05, "SMBus"},
        {0xff00, "Unclassified"},
    };
    uint16_t cls = static_cast<uint16_t>(class_code >> 8);
    for (const auto& e : kTable)
        if (e.cls == cls) return e.desc;
    return {};
}

Json pci_info_json(const std::vector<PciDeviceInfo>& devs) {
    // Grouped by bus, as QEMU's PciInfo list.
    Json buses = Json::array();
    std::vector<unsigned> bus_order;
    for (const auto& d : devs)
        if (std::find(bus_order.begin(), bus_order.end(), d.bus) == bus_order.end())
            bus_order.push_back(d.bus);
    for (unsigned bus : bus_order) {
        Json list = Json::array();
        for (const auto& d : devs) {
            if (d.bus != bus) continue;
            Json j = Json::object();
            j["bus"] = d.bus;
            j["slot"] = d.slot;
            j["function"] = d.function;
            Json ci = Json::object();
            ci["class"] = d.class_code >> 8;
            if (auto desc = pci_class_desc(d.class_code); !desc.empty()) ci["desc"] = desc;
            j["class_info"] = ci;
            j["id"] = Json{{"device", d.device},
                           {"vendor", d.vendor},
                           {"subsystem", d.subsys_id},
                           {"subsystem-vendor", d.subsys_vendor}};
            if (d.irq_pin && d.irq) j["irq"] = *d.irq;
            j["irq_pin"] = d.irq_pin;
            j["qdev_id"] = d.qdev_id;
            Json regions = Json::array();
            for (const auto& r : d.regions) {
                Json rj = Json::object();
                rj["bar"] = r.bar;
                rj["type"] = r.io ? "io" : "memory";
                if (r.address == UINT64_MAX) rj["address"] = -1;
                else rj["address"] = r.address;
                rj["size"] = r.size;
                if (!r.io) {
                    rj["prefetch"] = r.prefetch;
                    rj["mem_type_64"] = r.mem64;
                }
                regions.push_back(std::move(rj));
            }
            j["regions"] = std::move(regions);
            list.push_back(std::move(j));
        }
        buses.push_back(Json{{"bus", bus}, {"devices", std::move(list)}});
    }
    return buses;
}

Json block_info_json(const BlockDeviceInfo& b) {
    Json image = Json::object();
    image["virtual-size"] = b.virtual_size;
    image["filename"] = b.filename;
    image["format"] = b.format;
    if (b.actual_size) image["actual-size"] = *b.actual_size;
    image["dirty-flag"] = false;

    Json ins = Json::object();
    ins["file"] = b.filename;
    ins["node-name"] = b.node_name;
    ins["ro"] = b.read_only;
    ins["drv"] = b.format;
    ins["encrypted"] = false;
    ins["detect_zeroes"] = "off";
    for (const char* k : {"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"}) ins[k] = 0;
    ins["image"] = std::move(image);
    ins["cache"] = cache_json(b.cache);
    ins["write_threshold"] = b.write_threshold;
    ins["backing_file_depth"] = 0;

    Json j = Json::object();
    j["device"] = b.device;
    j["qdev"] = b.qdev;
    j["type"] = "unknown";
    j["removable"] = false;
    j["locked"] = false;
    j["io-status"] = "ok";
    j["inserted"] = std::move(ins);
    return j;
}

Json block_stats_json(const BlockDeviceInfo& b, uint64_t now_ns) {
    const block::BlockStats& s = b.stats;
    Json st = Json::object();
    st["rd_bytes"] = s.rd_bytes;
    st["wr_bytes"] = s.wr_bytes;
    st["unmap_bytes"] = s.unmap_bytes;
    st["rd_operations"] = s.rd_ops;
    st["wr_operations"] = s.wr_ops;
    st["flush_operations"] = s.flush_ops;
    st["unmap_operations"] = s.unmap_ops;
    st["rd_total_time_ns"] = s.rd_total_time_ns;
    st["wr_total_time_ns"] = s.wr_total_time_ns;
    st["flush_total_time_ns"] = s.flush_total_time_ns;
    st["unmap_total_time_ns"] = s.unmap_total_time_ns;
    st["wr_highest_offset"] = s.wr_highest_offset;
    st["rd_merged"] = 0;
    st["wr_merged"] = 0;
    st["unmap_merged"] = 0;
    if (s.last_io_ns != 0) st["idle_time_ns"] = now_ns > s.last_io_ns ? now_ns - s.last_io_ns : 0;
    st["failed_rd_operations"] = s.failed_rd_ops;
    st["failed_wr_operations"] = s.failed_wr_ops;
    st["failed_flush_operations"] = s.failed_flush_ops;
    st["failed_unmap_operations"] = s.failed_unmap_ops;
    st["invalid_rd_operations"] = 0;
    st["invalid_wr_operations"] = 0;
    st["invalid_flush_operations"] = 0;
    st["invalid_unmap_operations"] = 0;
    st["account_invalid"] = true;
    st["account_failed"] = true;
    st["timed_stats"] = Json::array();

    Json j = Json::object();
    j["device"] = b.device;
    j["node-name"] = b.node_name;
    j["qdev"] = b.qdev;
    j["stats"] = std::move(st);
    return j;
}

void register_commands(QmpDispatcher& d, CommandEnv& env) {
    // Handled by QmpSession itself; listed so query-commands shows it.
    d.add("qmp_capabilities", {{"enable", ArgType::Any, true}},
          [](const Json&) { return QmpReply::ok(); });

    d.add("query-version", {}, [](const Json&) {
        Json v = Json::object();
        v["qemu"] = Json{{"micro", kQemuMicro}, {"minor", kQemuMinor}, {"major", kQemuMajor}};
        v["package"] = package_string();
        return QmpReply::ok(std::move(v));
    });

    d.add("query-commands", {}, [&d](const Json&) {
        Json out = Json::array();
        for (const auto& n : d.names()) out.push_back(Json{{"name", n}});
        return QmpReply::ok(std::move(out));
    });

    d.add("query-name", {}, [&env](const Json&) {
        Json out = Json::object();
        if (auto n = env.view.name(); !n.empty()) out["name"] = n;
        return QmpReply::ok(std::move(out));
    });

    d.add("query-status", {}, [&env](const Json&) {
        RunState s = env.view.run_state();
        Json out = Json::object();
        out["status"] = run_state_name(s);
        out["singlestep"] = false;
        out["running"] = s == RunState::Running;
        return QmpReply::ok(std::move(out));
    });

    d.add("query-pci", {}, [&env](const Json&) {
        return QmpReply::ok(pci_info_json(env.view.pci_devices()));
    });

    d.add("query-block", {}, [&env](const Json&) {
        Json out = Json::array();
        for (const auto& b : env.view.block_devices()) out.push_back(block_info_json(b));
        return QmpReply::ok(std::move(out));
    });

    d.add("query-blockstats", {{"query-nodes", ArgType::Bool, true}}, [&env](const Json&) {
        Json out = Json::array();
        uint64_t now = monotonic_ns();
        for (const auto& b : env.view.block_devices()) out.push_back(block_stats_json(b, now));
        return QmpReply::ok(std::move(out));
    });

    d.add("query-chardev", {}, [&env](const Json&) {
        Json out = Json::array();
        std::vector<ChardevInfo> all;
        if (env.monitor_chardevs) all = env.monitor_chardevs();
        for (auto& c : env.view.chardevs()) all.push_back(std::move(c));
        for (const auto& c : all)
            out.push_back(Json{{"frontend-open", c.frontend_open},
                               {"filename", c.filename},
                               {"label", c.label}});
        return QmpReply::ok(std::move(out));
    });

    // The backend of HMP info qtree (QEMU has no QMP form of it): the
    // devices this process built, each with its bus and placing properties.
    d.add("x-query-qtree", {}, [&env](const Json&) {
        Json out = Json::array();
        for (const auto& q : env.view.qtree()) {
            Json props = Json::array();
            for (const auto& [k, v] : q.props) props.push_back(Json{{"name", k}, {"value", v}});
            Json j{{"driver", q.driver}, {"id", q.id}, {"bus", q.bus}, {"props", std::move(props)}};
            if (!q.child_bus.empty()) j["child-bus"] = q.child_bus;
            out.push_back(std::move(j));
        }
        return QmpReply::ok(std::move(out));
    });

    d.add("query-remote-devices", {}, [&env](const Json&) {
        return QmpReply::ok(remote_devices_json(env.view.remote_devices()));
    });

    d.add("human-monitor-command",
          {{"command-line", ArgType::String, false}, {"cpu-index", ArgType::Int, true}},
          [&env](const Json& args) {
              if (!env.run_hmp) return QmpReply::err(kGenericError, "HMP is not available");
              return QmpReply::ok(env.run_hmp(args["command-line"].get<std::string>()));
          });

    d.add("block_resize",
          {{"device", ArgType::String, true}, {"node-name", ArgType::String, true},
           {"size", ArgType::Int, false}},
          [&env](const Json& args) { return block_resize(env, args); });

    d.add("block-set-write-threshold",
          {{"node-name", ArgType::String, false}, {"write-threshold", ArgType::UInt, false}},
          [&env](const Json& args) { return set_write_threshold(env, args); });

    d.add("trace-event-get-state", {{"name", ArgType::String, false}, {"vcpu", ArgType::Int, true}},
          [](const Json& args) {
              std::vector<trace::Event*> events;
              if (auto err = trace_events_for(args, events)) return *err;
              return QmpReply::ok(trace_event_states_json(events));
          });

    d.add("trace-event-set-state",
          {{"name", ArgType::String, false}, {"enable", ArgType::Bool, false},
           {"ignore-unavailable", ArgType::Bool, true}, {"vcpu", ArgType::Int, true}},
          [](const Json& args) {
              std::vector<trace::Event*> events;
              if (auto err = trace_events_for(args, events)) return *err;
              bool on = args["enable"].get<bool>();
              // Every event of ours is available: ignore-unavailable changes nothing.
              for (trace::Event* e : events) e->on.store(on, std::memory_order_relaxed);
              return QmpReply::ok();
          });

    // mpqemu's own: the device process's state, for a new process started
    // with -incoming-state FILE (README: "Saved device state").
    d.add("x-device-state-save", {{"filename", ArgType::String, false}}, [&env](const Json& args) {
        auto st = env.view.save_device_state(args["filename"].get<std::string>());
        if (!st) return QmpReply::err(kGenericError, st.error().message);
        return QmpReply::ok();
    });

    // mpqemu's own: the device worker of `qemu-scsi-dev -x-worker on`.
    d.add("x-query-worker", {}, [&env](const Json&) {
        auto w = env.view.query_worker();
        if (!w.ok()) return QmpReply::err(kGenericError, w.error().message);
        Json r{{"pid", w->pid}, {"restarts", w->restarts}, {"state-version", w->state_version},
               {"published-rounds", w->published_rounds}, {"publish-avg-ns", w->publish_avg_ns},
               {"spare", w->spare_pid}};
        if (w->has_last_exit) {
            if (w->last_exit_signal) r["last-exit"] = Json{{"signal", w->last_exit_signal}};
            else r["last-exit"] = Json{{"status", w->last_exit_status}};
        }
        return QmpReply::ok(r);
    });

    // mpqemu's own: live update of the device worker.
    d.add("x-worker-restart", {{"binary", ArgType::String, true}}, [&env](const Json& args) {
        std::string bin = args.contains("binary") ? args["binary"].get<std::string>() : "";
        auto st = env.view.worker_restart(bin);
        if (!st) return QmpReply::err(kGenericError, st.error().message);
        return QmpReply::ok();
    });

    // mpqemu's own: hands the proxy device `id` a new socket (named by
    // getfd) to a remote that serves its device now, e.g. one started with
    // -incoming-state from the old remote's x-device-state-save.
    d.add("x-proxy-reconnect", {{"id", ArgType::String, false}, {"fdname", ArgType::String, false}},
          [&env](const Json& args) {
              auto fd = fdset::take_named(args["fdname"].get<std::string>());
              if (!fd.ok()) return QmpReply::err(kGenericError, fd.error().message);
              auto st = env.view.proxy_reconnect(args["id"].get<std::string>(), std::move(*fd));
              if (!st) return QmpReply::err(kGenericError, st.error().message);
              return QmpReply::ok();
          });

    register_hotplug_commands(d, env);

    d.add("system_reset", {}, [&env](const Json&) {
        auto st = env.view.system_reset();
        if (!st) return QmpReply::err(kGenericError, st.error().message);
        env.events.emit(kEventReset, Json{{"guest", false}, {"reason", "host-qmp-system-reset"}});
        return QmpReply::ok();
    });

    d.add("quit", {}, [&env](const Json&) {
        auto act = [&env] {
            env.events.emit(kEventShutdown, Json{{"guest", false}, {"reason", "host-qmp-quit"}});
            env.view.quit();
        };
        if (env.defer) env.defer(act);
        else act();
        return QmpReply::ok();
    });
}

}  // namespace mpq::monitor
