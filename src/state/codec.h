// Primitives of the saved device-state format (state/device_state.h):
// little-endian fixed-width fields, length-prefixed strings and byte runs,
// and tagged sections. The reader treats its input like guest input: every
// read is bounds-checked, the first failure sticks and names the field, and
// nothing is ever read past the end of the blob.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace mpq::state {

// Four-character section tag, stored as a little-endian u32 ("PCIF" reads
// as PCIF in a hex dump).
constexpr uint32_t tag(const char (&s)[5]) {
    return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 |
           uint32_t(uint8_t(s[3])) << 24;
}
std::string tag_name(uint32_t t);

class Writer {
public:
    void u8(uint8_t v) { buf_.push_back(v); }
    void u16(uint16_t v);
    void u32(uint32_t v);
    void u64(uint64_t v);
    void boolean(bool v) { u8(v ? 1 : 0); }
    void bytes(std::span<const uint8_t> b);           // raw, no length
    void blob(std::span<const uint8_t> b);            // u32 length + bytes
    void str(std::string_view s);                     // u16 length + bytes
    // Sections: u32 tag, u16 version, u16 zero, u32 body length, body.
    size_t begin_section(uint32_t t, uint16_t version);
    void end_section(size_t at);
    std::vector<uint8_t>& buffer() { return buf_; }

private:
    std::vector<uint8_t> buf_;
};

class Reader {
public:
    explicit Reader(std::span<const uint8_t> in, std::string where = {})
        : in_(in), where_(std::move(where)) {}

    uint8_t u8(const char* field);
    uint16_t u16(const char* field);
    uint32_t u32(const char* field);
    uint64_t u64(const char* field);
    // 0 or 1; anything else is an error.
    bool boolean(const char* field);
    // A value that must lie in [lo, hi].
    uint64_t range(const char* field, uint64_t v, uint64_t lo, uint64_t hi);
    void bytes(const char* field, std::span<uint8_t> out);
    std::vector<uint8_t> blob(const char* field, size_t max);
    // Printable ASCII, at most `max` bytes.
    std::string str(const char* field, size_t max);

    struct Section {
        uint32_t tag = 0;
        uint16_t version = 0;
        std::span<const uint8_t> body;
    };
    // The next section, or nullopt-like {tag 0} at the end or on error.
    bool next_section(Section* s);

    // Records an input error (the first one wins).
    void error(std::string msg);
    bool ok() const { return err_.empty(); }
    bool at_end() const { return pos_ == in_.size(); }
    size_t remaining() const { return in_.size() - pos_; }
    // Fails unless the whole input was consumed.
    void expect_end(const char* what);
    Status status() const;

private:
    bool take(const char* field, size_t n, const uint8_t** p);

    std::span<const uint8_t> in_;
    size_t pos_ = 0;
    std::string where_;
    std::string err_;
};

}  // namespace mpq::state
