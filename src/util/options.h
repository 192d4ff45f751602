// QEMU-style command-line parsing shared by qemu-scsi-dev and the VMM: one
// table of options; each program names the ones it accepts. Key/value
// arguments follow QemuOpts: "driver,key=value,...", ",," is a literal
// comma, a leading bare word gets the option's implied key, a later bare word
// "flag" means flag=on ("noflag" flag=off). Errors carry QEMU's wording and
// are prefixed with the option as typed ("-device lsi53c895a,foo=1: ...").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace mpq::opts {

enum class ArgKind : uint8_t {
    None,      // -nodefaults
    String,    // -D file, -monitor unix:PATH,server,nowait (left to the consumer)
    KeyValue,  // -device lsi53c895a,id=x
};

struct OptionDef {
    std::string_view name;         // without dashes
    ArgKind kind;
    std::string_view implied_key;  // KeyValue: key of a leading bare word ("" = none)
    std::string_view help;
};

// Every option any of our programs understands.
std::span<const OptionDef> option_table();
const OptionDef* find_option(std::string_view name);

struct KeyValue {
    std::string key;
    std::string value;
};

struct KeyValues {
    std::vector<KeyValue> items;  // in the order given; repeated keys kept
    // The last occurrence wins, as with QEMU's qemu_opt_get().
    const std::string* find(std::string_view key) const;
    std::string get(std::string_view key, std::string_view fallback = "") const;
    bool has(std::string_view key) const { return find(key) != nullptr; }
};

// Parses "a=1,b=x,,y,flag" (see top). Errors: "Invalid parameter ''" etc.
Result<KeyValues> parse_keyvalues(std::string_view text, std::string_view implied_key);

struct Option {
    const OptionDef* def = nullptr;
    std::string text;  // the argument as typed ("" for ArgKind::None)
    KeyValues kv;      // ArgKind::KeyValue only

    std::string_view name() const { return def->name; }
    // "-device lsi53c895a,id=x" (just "-nodefaults" without argument).
    std::string where() const;
    // An error about this option, prefixed like QEMU's: "<where>: <msg>".
    template <typename... Args>
    Error error(fmt::format_string<Args...> f, Args&&... args) const {
        return Error{where() + ": " + fmt::format(f, std::forward<Args>(args)...), 0};
    }
    Error error(const Error& inner) const { return Error{where() + ": " + inner.message, inner.err}; }
};

struct CommandLine {
    std::vector<std::string> positional;  // arguments not starting with '-'
    std::vector<Option> options;          // in command-line order

    std::vector<const Option*> all(std::string_view name) const;
    const Option* last(std::string_view name) const;
    bool has(std::string_view name) const { return last(name) != nullptr; }
};

// Parses argv[1..]. Options not in `accepted` are refused ("-foo: invalid
// option"); so are missing arguments ("-device: requires an argument").
// Both "-opt" and "--opt" are accepted, as QEMU does.
Result<CommandLine> parse_command_line(std::span<const char* const> args,
                                       std::span<const std::string_view> accepted);

// Value helpers with QEMU's messages ("Parameter 'KEY' expects ...").
Result<uint64_t> parse_uint(std::string_view s, std::string_view key, uint64_t max = UINT64_MAX);
// Sizes: "512", "4k", "256M", "1G" (suffix k/K, M, G, T, P, E; binary).
// `default_unit` multiplies a bare number (-m takes MiB).
Result<uint64_t> parse_size(std::string_view s, std::string_view key, uint64_t default_unit = 1);
Result<bool> parse_bool(std::string_view s, std::string_view key);
// QEMU identifiers: letters, digits, '-', '.', '_', starting with a letter.
Status check_id(std::string_view s, std::string_view key = "id");
// Refuses keys not in `known`: "Property 'TYPE.KEY' not found".
Status check_known_keys(const KeyValues& kv, std::string_view type,
                        std::span<const std::string_view> known);

}  // namespace mpq::opts
