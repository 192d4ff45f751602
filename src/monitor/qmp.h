// QMP: the JSON wire format, command dispatch with argument checking, and
// one client's protocol state (greeting, capabilities negotiation, id echo).
// Transport-agnostic: a session gets bytes in and hands bytes to a writer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "monitor/chardev_spec.h"

namespace mpq::monitor {

using Json = nlohmann::ordered_json;

// QEMU's QMP version this monitor speaks, and our package string.
inline constexpr int kQemuMajor = 7, kQemuMinor = 2, kQemuMicro = 0;
std::string package_string();  // "mpqemu-<version>"

// QMP error classes (QAPI QapiErrorClass).
inline constexpr std::string_view kGenericError = "GenericError";
inline constexpr std::string_view kCommandNotFound = "CommandNotFound";
inline constexpr std::string_view kDeviceNotFound = "DeviceNotFound";

struct QmpError {
    std::string cls;
    std::string desc;
};

// What a command returns: a value or an error, as QMP's "return"/"error".
class QmpReply {
public:
    static QmpReply ok(Json v = Json::object()) { return QmpReply(std::move(v), std::nullopt); }
    static QmpReply err(std::string_view cls, std::string desc) {
        return QmpReply(Json(), QmpError{std::string(cls), std::move(desc)});
    }
    bool is_ok() const { return !error_; }
    const Json& value() const { return value_; }
    const QmpError& error() const { return *error_; }

private:
    QmpReply(Json v, std::optional<QmpError> e) : value_(std::move(v)), error_(std::move(e)) {}
    Json value_;
    std::optional<QmpError> error_;
};

// Serialises as QEMU does ("key": value, ", " separators); invalid UTF-8 in
// strings is replaced, never thrown on. Pretty::On indents by 4.
std::string to_qmp_text(const Json& v, Pretty pretty = Pretty::Off);

// Where asynchronous events go; the monitor set broadcasts them to every
// negotiated QMP client with a timestamp.
class EventSink {
public:
    virtual ~EventSink() = default;
    virtual void emit(std::string_view event, Json data) = 0;
};

enum class ArgType : uint8_t { String, Int, UInt, Bool, Number, Object, Any };

struct ArgSpec {
    std::string name;
    ArgType type;
    bool optional = false;
};

class QmpDispatcher {
public:
    using Handler = std::function<QmpReply(const Json& args)>;

    void add(std::string name, std::vector<ArgSpec> args, Handler fn);
    bool has(std::string_view name) const;
    // Checks the arguments against the command's spec, then runs it.
    // `args` is an object (possibly empty).
    QmpReply execute(std::string_view name, const Json& args) const;
    std::vector<std::string> names() const;

private:
    struct Command {
        std::vector<ArgSpec> args;
        Handler fn;
    };
    std::map<std::string, Command, std::less<>> cmds_;
};

// Splits a byte stream into top-level JSON values, as QEMU's streaming
// parser does (objects may span lines). Bounded in size and nesting.
class JsonSplitter {
public:
    static constexpr size_t kMaxMessage = 1 << 20;
    static constexpr unsigned kMaxDepth = 64;

    enum class Event : uint8_t { None, Value, TooBig, TooDeep };
    // Consumes bytes from `in` until one value is complete (Event::Value,
    // text in `out`) or a limit is hit; `consumed` tells how far it got.
    Event next(std::string_view in, size_t& consumed, std::string& out);
    void reset();

private:
    std::string buf_;
    unsigned depth_ = 0;
    bool in_string_ = false;
    bool escape_ = false;
    bool bare_ = false;  // inside a top-level scalar token (number, keyword)
};

class QmpSession {
public:
    using Writer = std::function<void(std::string_view)>;

    QmpSession(const QmpDispatcher& cmds, Pretty pretty, Writer write);
    // Sends the greeting.
    void start();
    // A session a predecessor process started: no greeting, and commands
    // (or only qmp_capabilities) as that one left it.
    void resume(bool negotiated) { negotiated_ = negotiated; }
    // Returns false when the client must be dropped (a limit was exceeded;
    // the error was already written).
    bool feed(std::string_view bytes);
    // Events reach a client only after capabilities negotiation.
    void send_event(const Json& ev);
    bool negotiated() const { return negotiated_; }

private:
    void handle_text(const std::string& text);
    void reply(const Json* id, const QmpReply& r);
    void send(const Json& v);

    const QmpDispatcher& cmds_;
    Pretty pretty_;
    Writer write_;
    JsonSplitter splitter_;
    std::string scratch_;
    bool negotiated_ = false;
};

}  // namespace mpq::monitor
