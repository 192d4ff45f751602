// Disks added and removed while the machine runs, with QEMU 7.2's QMP
// argument shapes: blockdev-add / blockdev-del, device_add / device_del
// (DEVICE_DELETED), and the fds a sandboxed process opens files through
// (add-fd / remove-fd / query-fdsets, getfd / closefd). The work is the
// MachineView's; this file only translates arguments and results.
#include <set>

#include <fmt/format.h>

#include "monitor/commands.h"
#include "util/fdset.h"
#include "util/options.h"

namespace mpq::monitor {
namespace {

QmpReply generic(std::string msg) { return QmpReply::err(kGenericError, std::move(msg)); }

std::string type_error(std::string_view key, std::string_view want) {
    return fmt::format("Invalid parameter type for '{}', expected: {}", key, want);
}

// A QMP scalar as -device/-drive text: strings as they are, integers in
// decimal, booleans on/off.
Result<std::string> scalar_text(std::string_view key, const Json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return std::string(v.get<bool>() ? "on" : "off");
    if (v.is_number_integer()) return v.is_number_unsigned() ? std::to_string(v.get<uint64_t>())
                                                             : std::to_string(v.get<int64_t>());
    return fail("{}", type_error(key, "string, integer or boolean"));
}

// The protocol node under a format (or the top node itself when driver=file):
// {"driver": "file", "filename": ..., "aio": ...}.
Status protocol_keys(const Json& f, std::string_view where,
                     std::vector<std::pair<std::string, std::string>>& kv) {
    static const std::set<std::string, std::less<>> kKnown = {
        "driver", "filename", "aio", "locking", "drop-cache", "aio-max-batch", "node-name",
        "read-only", "auto-read-only", "cache", "discard", "detect-zeroes", "force-share"};
    std::string drv = f.contains("driver") && f["driver"].is_string() ? f["driver"].get<std::string>() : "";
    if (drv.empty()) return fail("Parameter '{}driver' is missing", where);
    if (drv != "file" && drv != "host_device")
        return fail("'{}driver' = '{}' is not supported under a format (file or host_device)", where, drv);
    for (auto it = f.begin(); it != f.end(); ++it)
        if (!kKnown.count(it.key())) return fail("Parameter '{}{}' is unexpected", where, it.key());
    if (!f.contains("filename")) return fail("Parameter '{}filename' is missing", where);
    if (!f["filename"].is_string()) return fail("{}", type_error(fmt::format("{}filename", where), "string"));
    kv.emplace_back("file", f["filename"].get<std::string>());
    if (f.contains("aio")) {
        if (!f["aio"].is_string()) return fail("{}", type_error(fmt::format("{}aio", where), "string"));
        kv.emplace_back("aio", f["aio"].get<std::string>());
    }
    return {};
}

// blockdev-add's BlockdevOptions (raw / qcow2 over file, or file alone) as
// the block layer's drive options.
Result<block::DriveOptions> blockdev_options(const Json& a) {
    static const std::set<std::string, std::less<>> kKnown = {
        "driver", "node-name", "read-only", "auto-read-only", "force-share", "cache", "discard",
        "detect-zeroes", "file", "filename", "aio", "locking", "drop-cache", "aio-max-batch",
        "l2-cache-size", "lazy-refcounts", "cache-clean-interval", "pass-discard-request",
        "pass-discard-snapshot", "pass-discard-other"};
    for (auto it = a.begin(); it != a.end(); ++it)
        if (!kKnown.count(it.key())) return fail("Parameter '{}' is unexpected", it.key());
    if (!a["driver"].is_string()) return fail("{}", type_error("driver", "string"));
    if (!a.contains("node-name")) return fail("'node-name' must be specified for the root node");
    if (!a["node-name"].is_string()) return fail("{}", type_error("node-name", "string"));
    std::string driver = a["driver"].get<std::string>();
    std::vector<std::pair<std::string, std::string>> kv;
    kv.emplace_back("id", a["node-name"].get<std::string>());
    if (driver == "file" || driver == "host_device") {
        kv.emplace_back("format", "raw");
        MPQ_TRY(protocol_keys(a, "", kv));
    } else if (driver == "raw" || driver == "qcow2") {
        kv.emplace_back("format", driver);
        if (!a.contains("file")) return fail("Parameter 'file' is missing");
        const Json& f = a["file"];
        if (f.is_string())
            return fail("'file': a reference to node '{}' is not supported here; give the file inline: "
                        "\"file\": {{\"driver\": \"file\", \"filename\": ...}}", f.get<std::string>());
        if (!f.is_object()) return fail("{}", type_error("file", "object"));
        MPQ_TRY(protocol_keys(f, "file.", kv));
        if (driver == "raw") {
            for (const char* k : {"l2-cache-size", "lazy-refcounts", "cache-clean-interval"})
                if (a.contains(k)) return fail("Parameter '{}' is unexpected", k);
        } else if (a.contains("l2-cache-size")) {
            auto t = scalar_text("l2-cache-size", a["l2-cache-size"]);
            if (!t) return t.take_error();
            kv.emplace_back("l2-cache-size", *t);
        }
    } else {
        return fail("Parameter 'driver' does not accept value '{}'", driver);
    }
    if (a.contains("read-only")) {
        if (!a["read-only"].is_boolean()) return fail("{}", type_error("read-only", "boolean"));
        kv.emplace_back("readonly", a["read-only"].get<bool>() ? "on" : "off");
    }
    if (a.contains("cache")) {
        const Json& c = a["cache"];
        if (!c.is_object()) return fail("{}", type_error("cache", "object"));
        for (auto it = c.begin(); it != c.end(); ++it) {
            if (it.key() != "direct" && it.key() != "no-flush")
                return fail("Parameter 'cache.{}' is unexpected", it.key());
            if (!it->is_boolean()) return fail("{}", type_error("cache." + it.key(), "boolean"));
            kv.emplace_back("cache." + it.key(), it->get<bool>() ? "on" : "off");
        }
    }
    return block::parse_drive_options(kv);
}

// HMP drive_add's option string: -drive's keys with if=none.
Result<block::DriveOptions> drive_add_options(std::string_view text) {
    auto parsed = opts::parse_keyvalues(text, "file");
    if (!parsed) return parsed.take_error();
    std::vector<std::pair<std::string, std::string>> kv;
    bool have_if = false;
    for (const auto& item : parsed->items) {
        if (item.key == "if") {
            if (item.value != "none") return fail("only if=none is supported (then attach it with device_add)");
            have_if = true;
            continue;
        }
        if (item.key == "media" && item.value == "disk") continue;
        kv.emplace_back(item.key, item.value);
    }
    if (!have_if) return fail("drive_add needs if=none (then attach it with device_add)");
    auto d = block::parse_drive_options(kv);
    if (!d) return d.take_error();
    if (d->id.empty()) return fail("drive_add needs an id (id=ID)");
    return d;
}

Json fdsets_json() {
    Json out = Json::array();
    for (const auto& s : fdset::query()) {
        Json fds = Json::array();
        for (const auto& m : s.fds) {
            Json f{{"fd", m.fd}};
            if (!m.opaque.empty()) f["opaque"] = m.opaque;
            fds.push_back(std::move(f));
        }
        out.push_back(Json{{"fdset-id", s.id}, {"fds", std::move(fds)}});
    }
    return out;
}

UniqueFd take_fd(CommandEnv& env) { return env.take_fd ? env.take_fd() : UniqueFd(); }

}  // namespace

void register_hotplug_commands(QmpDispatcher& d, CommandEnv& env) {
    d.add("blockdev-add", {{"driver", ArgType::Any, false}, {"*", ArgType::Any, true}},
          [&env](const Json& args) {
              auto o = blockdev_options(args);
              if (!o) return generic(o.error().message);
              auto st = env.view.drive_add(*o, MachineView::DriveOrigin::Blockdev);
              if (!st) return generic(st.error().message);
              return QmpReply::ok();
          });

    d.add("blockdev-del", {{"node-name", ArgType::String, false}}, [&env](const Json& args) {
        auto st = env.view.drive_del(args["node-name"].get<std::string>());
        if (!st) return generic(st.error().message);
        return QmpReply::ok();
    });

    // The backend of HMP drive_add (QMP has no drive_add; -drive's syntax).
    d.add("x-drive-add", {{"options", ArgType::String, false}}, [&env](const Json& args) {
        auto o = drive_add_options(args["options"].get<std::string>());
        if (!o) return generic(o.error().message);
        auto st = env.view.drive_add(*o, MachineView::DriveOrigin::DriveAdd);
        if (!st) return generic(st.error().message);
        return QmpReply::ok();
    });

    d.add("device_add", {{"driver", ArgType::String, false}, {"*", ArgType::Any, true}},
          [&env](const Json& args) {
              std::vector<std::pair<std::string, std::string>> props;
              for (auto it = args.begin(); it != args.end(); ++it) {
                  auto t = scalar_text(it.key(), *it);
                  if (!t) return generic(t.error().message);
                  props.emplace_back(it.key(), *t);
              }
              auto st = env.view.device_add(props);
              if (!st) return generic(st.error().message);
              return QmpReply::ok();
          });

    d.add("device_del", {{"id", ArgType::String, false}}, [&env](const Json& args) {
        std::string id = args["id"].get<std::string>();
        auto path = env.view.device_del(id);
        if (!path) {
            bool missing = path.error().message.starts_with("Device '");
            return QmpReply::err(missing ? kDeviceNotFound : kGenericError, path.error().message);
        }
        // The device is gone already (no guest handshake on a SCSI bus): the
        // event goes out before the reply, as QEMU's for a synchronous unplug.
        env.events.emit(kEventDeviceDeleted, Json{{"device", id}, {"path", *path}});
        return QmpReply::ok();
    });

    d.add("add-fd", {{"fdset-id", ArgType::Int, true}, {"opaque", ArgType::String, true}},
          [&env](const Json& args) {
              UniqueFd fd = take_fd(env);
              int num = fd.get();
              std::optional<int64_t> id;
              if (args.contains("fdset-id")) id = args["fdset-id"].get<int64_t>();
              std::string opaque = args.contains("opaque") ? args["opaque"].get<std::string>() : "";
              auto set = fdset::add(std::move(fd), id, std::move(opaque));
              if (!set) return generic(set.error().message);
              return QmpReply::ok(Json{{"fdset-id", *set}, {"fd", num}});
          });

    d.add("remove-fd", {{"fdset-id", ArgType::Int, false}, {"fd", ArgType::Int, true}},
          [](const Json& args) {
              std::optional<int64_t> fd;
              if (args.contains("fd")) fd = args["fd"].get<int64_t>();
              auto st = fdset::remove(args["fdset-id"].get<int64_t>(), fd);
              if (!st) return generic(st.error().message);
              return QmpReply::ok();
          });

    d.add("query-fdsets", {}, [](const Json&) { return QmpReply::ok(fdsets_json()); });

    d.add("getfd", {{"fdname", ArgType::String, false}}, [&env](const Json& args) {
        auto st = fdset::set_named(args["fdname"].get<std::string>(), take_fd(env));
        if (!st) return generic(st.error().message);
        return QmpReply::ok();
    });

    d.add("closefd", {{"fdname", ArgType::String, false}}, [](const Json& args) {
        auto st = fdset::close_named(args["fdname"].get<std::string>());
        if (!st) return generic(st.error().message);
        return QmpReply::ok();
    });
}

}  // namespace mpq::monitor
