#include "monitor/qmp.h"

#include <fmt/format.h>

namespace mpq::monitor {
namespace {

const char* type_name(ArgType t) {
    switch (t) {
    case ArgType::String: return "string";
    case ArgType::Int: return "integer";
    case ArgType::UInt: return "integer";
    case ArgType::Bool: return "boolean";
    case ArgType::Number: return "number";
    case ArgType::Object: return "object";
    case ArgType::Any: return "any";
    }
    return "any";
}

bool type_matches(ArgType t, const Json& v) {
    switch (t) {
    case ArgType::String: return v.is_string();
    case ArgType::Int: return v.is_number_integer();
    case ArgType::UInt: return v.is_number_unsigned();
    case ArgType::Bool: return v.is_boolean();
    case ArgType::Number: return v.is_number();
    case ArgType::Object: return v.is_object();
    case ArgType::Any: return true;
    }
    return false;
}

void write_text(std::string& out, const Json& v, Pretty pretty, int level) {
    auto newline = [&](int lvl) {
        out.push_back('\n');
        out.append(static_cast<size_t>(lvl) * 4, ' ');
    };
    if (v.is_object()) {
        if (v.empty()) {
            out += "{}";
            return;
        }
        out.push_back('{');
        bool first = true;
        for (auto it = v.begin(); it != v.end(); ++it) {
            if (!first) out += pretty == Pretty::On ? "," : ", ";
            first = false;
            if (pretty == Pretty::On) newline(level + 1);
            out += Json(it.key()).dump(-1, ' ', false, Json::error_handler_t::replace);
            out += ": ";
            write_text(out, it.value(), pretty, level + 1);
        }
        if (pretty == Pretty::On) newline(level);
        out.push_back('}');
        return;
    }
    if (v.is_array()) {
        if (v.empty()) {
            out += "[]";
            return;
        }
        out.push_back('[');
        bool first = true;
        for (const auto& e : v) {
            if (!first) out += pretty == Pretty::On ? "," : ", ";
            first = false;
            if (pretty == Pretty::On) newline(level + 1);
            write_text(out, e, pretty, level + 1);
        }
        if (pretty == Pretty::On) newline(level);
        out.push_back(']');
        return;
    }
    out += v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

std::string package_string() { return std::string("mpqemu-") + MPQ_VERSION; }

std::string to_qmp_text(const Json& v, Pretty pretty) {
    std::string out;
    write_text(out, v, pretty, 0);
    return out;
}

void QmpDispatcher::add(std::string name, std::vector<ArgSpec> args, Handler fn) {
    cmds_[std::move(name)] = Command{std::move(args), std::move(fn)};
}

bool QmpDispatcher::has(std::string_view name) const { return cmds_.find(name) != cmds_.end(); }

std::vector<std::string> QmpDispatcher::names() const {
    std::vector<std::string> out;
    out.reserve(cmds_.size());
    for (const auto& [n, c] : cmds_) out.push_back(n);
    return out;
}

QmpReply QmpDispatcher::execute(std::string_view name, const Json& args) const {
    auto it = cmds_.find(name);
    if (it == cmds_.end())
        return QmpReply::err(kCommandNotFound, fmt::format("The command {} has not been found", name));
    const Command& c = it->second;
    if (!args.is_object())
        return QmpReply::err(kGenericError, "QMP input member 'arguments' must be an object");
    for (auto a = args.begin(); a != args.end(); ++a) {
        bool known = false;
        // "*": the command takes further keys of its own (device_add's properties).
        for (const auto& spec : c.args) known = known || spec.name == a.key() || spec.name == "*";
        if (!known)
            return QmpReply::err(kGenericError, fmt::format("Parameter '{}' is unexpected", a.key()));
    }
    for (const auto& spec : c.args) {
        if (spec.name == "*") continue;
        auto v = args.find(spec.name);
        if (v == args.end()) {
            if (spec.optional) continue;
            return QmpReply::err(kGenericError, fmt::format("Parameter '{}' is missing", spec.name));
        }
        if (!type_matches(spec.type, *v))
            return QmpReply::err(kGenericError,
                                 fmt::format("Invalid parameter type for '{}', expected: {}",
                                             spec.name, type_name(spec.type)));
    }
    return c.fn(args);
}

void JsonSplitter::reset() {
    buf_.clear();
    depth_ = 0;
    in_string_ = false;
    escape_ = false;
    bare_ = false;
}

JsonSplitter::Event JsonSplitter::next(std::string_view in, size_t& consumed, std::string& out) {
    size_t i = 0;
    auto finish = [&](Event e) {
        consumed = i;
        if (e == Event::Value) out.swap(buf_);
        reset();
        return e;
    };
    for (; i < in.size(); ++i) {
        char ch = in[i];
        if (bare_) {
            // A top-level scalar ends at whitespace or a structural character.
            if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '{' || ch == '[' ||
                ch == '"') {
                return finish(Event::Value);  // `ch` stays for the next value
            }
            buf_.push_back(ch);
            if (buf_.size() > kMaxMessage) return finish(Event::TooBig);
            continue;
        }
        if (depth_ == 0 && !in_string_) {
            if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') continue;
            buf_.push_back(ch);
            if (ch == '{' || ch == '[') {
                depth_ = 1;
            } else if (ch == '"') {
                in_string_ = true;
            } else if (ch == '}' || ch == ']') {
                ++i;
                return finish(Event::Value);  // stray closer: let the parser report it
            } else {
                bare_ = true;
            }
            continue;
        }
        buf_.push_back(ch);
        if (buf_.size() > kMaxMessage) {
            ++i;
            return finish(Event::TooBig);
        }
        if (in_string_) {
            if (escape_) {
                escape_ = false;
            } else if (ch == '\\') {
                escape_ = true;
            } else if (ch == '"') {
                in_string_ = false;
                if (depth_ == 0) {
                    ++i;
                    return finish(Event::Value);
                }
            }
            continue;
        }
        if (ch == '"') {
            in_string_ = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth_ > kMaxDepth) {
                ++i;
                return finish(Event::TooDeep);
            }
        } else if (ch == '}' || ch == ']') {
            if (--depth_ == 0) {
                ++i;
                return finish(Event::Value);
            }
        }
    }
    consumed = i;
    return Event::None;
}

QmpSession::QmpSession(const QmpDispatcher& cmds, Pretty pretty, Writer write)
    : cmds_(cmds), pretty_(pretty), write_(std::move(write)) {}

void QmpSession::send(const Json& v) {
    std::string text = to_qmp_text(v, pretty_);
    text += pretty_ == Pretty::On ? "\n" : "\r\n";
    write_(text);
}

void QmpSession::start() {
    Json ver = Json::object();
    ver["qemu"] = Json{{"micro", kQemuMicro}, {"minor", kQemuMinor}, {"major", kQemuMajor}};
    ver["package"] = package_string();
    Json greeting;
    greeting["QMP"] = Json{{"version", ver}, {"capabilities", Json::array()}};
    send(greeting);
}

void QmpSession::send_event(const Json& ev) {
    if (negotiated_) send(ev);
}

void QmpSession::reply(const Json* id, const QmpReply& r) {
    Json out = Json::object();
    if (r.is_ok()) {
        out["return"] = r.value();
    } else {
        out["error"] = Json{{"class", r.error().cls}, {"desc", r.error().desc}};
    }
    if (id) out["id"] = *id;
    send(out);
}

bool QmpSession::feed(std::string_view bytes) {
    while (!bytes.empty()) {
        size_t used = 0;
        auto ev = splitter_.next(bytes, used, scratch_);
        bytes.remove_prefix(used);
        switch (ev) {
        case JsonSplitter::Event::None: return true;
        case JsonSplitter::Event::Value:
            handle_text(scratch_);
            scratch_.clear();
            break;
        case JsonSplitter::Event::TooBig:
            reply(nullptr, QmpReply::err(kGenericError,
                                         fmt::format("JSON parse error, message exceeds {} bytes",
                                                     JsonSplitter::kMaxMessage)));
            return false;
        case JsonSplitter::Event::TooDeep:
            reply(nullptr, QmpReply::err(kGenericError,
                                         fmt::format("JSON parse error, nesting deeper than {}",
                                                     JsonSplitter::kMaxDepth)));
            return false;
        }
    }
    return true;
}

void QmpSession::handle_text(const std::string& text) {
    Json msg = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (msg.is_discarded()) {
        reply(nullptr, QmpReply::err(kGenericError,
                                     fmt::format("JSON parse error, invalid input '{:.32}'", text)));
        return;
    }
    if (!msg.is_object()) {
        reply(nullptr, QmpReply::err(kGenericError, "QMP input must be a JSON object"));
        return;
    }
    const Json* id = nullptr;
    if (auto it = msg.find("id"); it != msg.end()) id = &*it;
    for (auto it = msg.begin(); it != msg.end(); ++it) {
        const std::string& k = it.key();
        if (k != "execute" && k != "arguments" && k != "id") {
            reply(id, QmpReply::err(kGenericError,
                                    fmt::format("QMP input member '{}' is unexpected", k)));
            return;
        }
    }
    auto ex = msg.find("execute");
    if (ex == msg.end()) {
        reply(id, QmpReply::err(kGenericError, "QMP input lacks member 'execute'"));
        return;
    }
    if (!ex->is_string()) {
        reply(id, QmpReply::err(kGenericError, "QMP input member 'execute' must be a string"));
        return;
    }
    Json args = Json::object();
    if (auto a = msg.find("arguments"); a != msg.end()) {
        if (!a->is_object()) {
            reply(id, QmpReply::err(kGenericError, "QMP input member 'arguments' must be an object"));
            return;
        }
        args = *a;
    }
    const std::string& name = ex->get_ref<const std::string&>();
    if (name == "qmp_capabilities") {
        if (negotiated_) {
            reply(id, QmpReply::err(kCommandNotFound,
                                    "Capabilities negotiation is already complete, command ignored"));
            return;
        }
        for (auto a = args.begin(); a != args.end(); ++a) {
            if (a.key() != "enable") {
                reply(id, QmpReply::err(kGenericError,
                                        fmt::format("Parameter '{}' is unexpected", a.key())));
                return;
            }
            if (!a->is_array()) {
                reply(id, QmpReply::err(kGenericError,
                                        "Invalid parameter type for 'enable', expected: array"));
                return;
            }
            for (const auto& cap : *a) {
                if (cap == "oob") {
                    reply(id, QmpReply::err(kGenericError,
                                            "This monitor does not support Out-Of-Band (OOB)"));
                    return;
                }
                reply(id, QmpReply::err(kGenericError,
                                        fmt::format("Parameter 'enable' does not accept value '{}'",
                                                    cap.is_string() ? cap.get<std::string>()
                                                                    : to_qmp_text(cap))));
                return;
            }
        }
        negotiated_ = true;
        reply(id, QmpReply::ok());
        return;
    }
    if (!negotiated_) {
        reply(id, QmpReply::err(kCommandNotFound,
                                "Expecting capabilities negotiation with 'qmp_capabilities'"));
        return;
    }
    reply(id, cmds_.execute(name, args));
}

}  // namespace mpq::monitor
