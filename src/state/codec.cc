#include "state/codec.h"

#include <cstring>

namespace mpq::state {

std::string tag_name(uint32_t t) {
    std::string s;
    for (int i = 0; i < 4; i++) {
        char c = static_cast<char>((t >> (8 * i)) & 0xff);
        s += (c >= 0x20 && c <= 0x7e) ? c : '?';
    }
    return s;
}

void Writer::u16(uint16_t v) {
    u8(v & 0xff);
    u8(v >> 8);
}
void Writer::u32(uint32_t v) {
    u16(v & 0xffff);
    u16(v >> 16);
}
void Writer::u64(uint64_t v) {
    u32(v & 0xffffffffu);
    u32(v >> 32);
}
void Writer::bytes(std::span<const uint8_t> b) { buf_.insert(buf_.end(), b.begin(), b.end()); }
void Writer::blob(std::span<const uint8_t> b) {
    u32(static_cast<uint32_t>(b.size()));
    bytes(b);
}
void Writer::str(std::string_view s) {
    u16(static_cast<uint16_t>(s.size()));
    bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

size_t Writer::begin_section(uint32_t t, uint16_t version) {
    u32(t);
    u16(version);
    u16(0);
    size_t at = buf_.size();
    u32(0);  // patched by end_section
    return at;
}

void Writer::end_section(size_t at) {
    uint32_t len = static_cast<uint32_t>(buf_.size() - at - 4);
    for (int i = 0; i < 4; i++) buf_[at + i] = static_cast<uint8_t>(len >> (8 * i));
}

void Reader::error(std::string msg) {
    if (!err_.empty()) return;
    err_ = where_.empty() ? std::move(msg) : where_ + ": " + msg;
    pos_ = in_.size();  // nothing more is read once the input is known bad
}

bool Reader::take(const char* field, size_t n, const uint8_t** p) {
    if (!ok()) return false;
    if (n > in_.size() - pos_) {
        error(std::string(field) + ": truncated (needs " + std::to_string(n) + " bytes, " +
              std::to_string(in_.size() - pos_) + " left)");
        return false;
    }
    *p = in_.data() + pos_;
    pos_ += n;
    return true;
}

uint8_t Reader::u8(const char* field) {
    const uint8_t* p;
    return take(field, 1, &p) ? p[0] : 0;
}
uint16_t Reader::u16(const char* field) {
    const uint8_t* p;
    return take(field, 2, &p) ? static_cast<uint16_t>(p[0] | p[1] << 8) : 0;
}
uint32_t Reader::u32(const char* field) {
    const uint8_t* p;
    if (!take(field, 4, &p)) return 0;
    return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t Reader::u64(const char* field) {
    uint64_t lo = u32(field);
    uint64_t hi = u32(field);
    return lo | hi << 32;
}
bool Reader::boolean(const char* field) {
    uint8_t v = u8(field);
    if (v > 1) error(std::string(field) + ": " + std::to_string(v) + " is not a boolean");
    return v == 1;
}
uint64_t Reader::range(const char* field, uint64_t v, uint64_t lo, uint64_t hi) {
    if (ok() && (v < lo || v > hi)) {
        error(std::string(field) + ": " + std::to_string(v) + " out of range [" + std::to_string(lo) + ", " +
              std::to_string(hi) + "]");
        return lo;
    }
    return v;
}
void Reader::bytes(const char* field, std::span<uint8_t> out) {
    const uint8_t* p;
    if (take(field, out.size(), &p))
        std::memcpy(out.data(), p, out.size());
    else
        std::memset(out.data(), 0, out.size());
}
std::vector<uint8_t> Reader::blob(const char* field, size_t max) {
    uint32_t n = u32(field);
    if (!ok()) return {};
    if (n > max) {
        error(std::string(field) + ": length " + std::to_string(n) + " exceeds " + std::to_string(max));
        return {};
    }
    const uint8_t* p;
    if (!take(field, n, &p)) return {};
    return std::vector<uint8_t>(p, p + n);
}
std::string Reader::str(const char* field, size_t max) {
    uint16_t n = u16(field);
    if (!ok()) return {};
    if (n > max) {
        error(std::string(field) + ": length " + std::to_string(n) + " exceeds " + std::to_string(max));
        return {};
    }
    const uint8_t* p;
    if (!take(field, n, &p)) return {};
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e) {
            error(std::string(field) + ": not printable ASCII");
            return {};
        }
    return std::string(reinterpret_cast<const char*>(p), n);
}

bool Reader::next_section(Section* s) {
    if (!ok() || at_end()) return false;
    s->tag = u32("section tag");
    s->version = u16("section version");
    uint16_t zero = u16("section reserved");
    uint32_t len = u32("section length");
    if (!ok()) return false;
    if (zero != 0) {
        error("section " + tag_name(s->tag) + ": reserved field is " + std::to_string(zero) + ", not 0");
        return false;
    }
    const uint8_t* p;
    if (!take(("section " + tag_name(s->tag) + " body").c_str(), len, &p)) return false;
    s->body = std::span<const uint8_t>(p, len);
    return true;
}

void Reader::expect_end(const char* what) {
    if (ok() && !at_end()) error(std::string(what) + ": " + std::to_string(remaining()) + " unexpected trailing bytes");
}

Status Reader::status() const {
    if (ok()) return {};
    return Error{err_, 0};
}

}  // namespace mpq::state
