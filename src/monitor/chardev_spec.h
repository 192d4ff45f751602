// Character device specifications as QEMU's command line spells them, for
// the monitors: -monitor SPEC, -qmp SPEC, -qmp-pretty SPEC,
// -chardev socket|stdio,id=..,... and -mon chardev=..,mode=control|readline.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace mpq::monitor {

enum class ChardevKind : uint8_t { Unix, Tcp, Stdio, Null };
enum class ServerMode : uint8_t { Client, Server };
enum class WaitMode : uint8_t { NoWait, Wait };

struct ChardevSpec {
    std::string id;
    ChardevKind kind = ChardevKind::Null;
    std::string path;                 // Unix
    std::string host;                 // Tcp (numeric or name; "" = loopback)
    uint16_t port = 0;                // Tcp (0 = any free port)
    ServerMode server = ServerMode::Client;
    WaitMode wait = WaitMode::Wait;   // server only: block startup until a client connects

    // QEMU's query-chardev "filename", e.g. "unix:/tmp/m.sock,server=on".
    std::string describe() const;
};

enum class MonitorMode : uint8_t { Hmp, Qmp };
enum class Pretty : uint8_t { Off, On };

struct MonitorSpec {
    MonitorMode mode = MonitorMode::Hmp;
    Pretty pretty = Pretty::Off;
    ChardevSpec chardev;
};

// "unix:PATH[,server[=on|off]][,wait[=on|off]][,nowait]", "tcp:HOST:PORT,...",
// "stdio", "none". `id` becomes the chardev label.
Result<ChardevSpec> parse_chardev_shorthand(std::string_view spec, std::string id);
// The argument of -chardev: "socket,id=x,path=P,server=on,wait=off",
// "socket,id=x,host=H,port=N,server=on", "stdio,id=x".
Result<ChardevSpec> parse_chardev_option(std::string_view opts);

struct QemuOpt {
    std::string key;
    std::string value;
    bool has_value = false;  // "key=..." rather than a bare "key"
};
// QEMU option-string splitting: "a,b=c,d=e,,f" -> {a, b=c, d=e,f}.
// Fails on an empty element (",," aside) or a parameter without a name.
Result<std::vector<QemuOpt>> split_qemu_opts(std::string_view s);
// "on|off|yes|no|true|false" (and "" for a bare flag = on).
Result<bool> parse_qemu_bool(std::string_view key, std::string_view v);

// Collects every monitor-related option of one command line and pairs -mon
// with -chardev in finish().
class MonitorOptions {
public:
    // Returns true when `opt` (with its leading '-' or '--') is one of ours
    // and was consumed, false if it is someone else's option.
    Result<bool> consume(std::string_view opt, std::string_view arg);
    Status finish();
    const std::vector<MonitorSpec>& monitors() const { return monitors_; }
    // Chardevs given with -chardev that no -mon uses (the process may use them).
    std::vector<ChardevSpec> unused_chardevs() const;

private:
    struct Mon {
        std::string chardev_id;
        MonitorMode mode;
        Pretty pretty;
    };
    std::vector<ChardevSpec> chardevs_;
    std::vector<Mon> mons_;
    std::vector<MonitorSpec> monitors_;
    std::vector<std::string> used_;
    unsigned compat_index_ = 0;
    bool finished_ = false;
};

}  // namespace mpq::monitor
