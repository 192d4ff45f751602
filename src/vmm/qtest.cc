#include "vmm/qtest.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <iterator>

#include <fmt/format.h>

#include "util/event_loop.h"

namespace mpq::vmm {
namespace {

constexpr int kMaxWords = 8;

struct Words {
    std::array<std::string_view, kMaxWords> w;
    int n = 0;
    bool too_many = false;
    std::string_view operator[](int i) const { return i < n ? w[i] : std::string_view(); }
};

Words split(std::string_view line) {
    Words out;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
        if (i >= line.size()) break;
        size_t j = i;
        while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
        if (out.n == kMaxWords) {
            out.too_many = true;
            break;
        }
        out.w[out.n++] = line.substr(i, j - i);
        i = j;
    }
    return out;
}

int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return 0;  // QEMU's hex2nib maps garbage to 0 as well
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

unsigned width_of(char c) {
    switch (c) {
    case 'b': return 1;
    case 'w': return 2;
    case 'l': return 4;
    case 'q': return 8;
    default: return 0;
    }
}

}  // namespace

std::optional<uint64_t> parse_qtest_u64(std::string_view s) {
    if (s.empty()) return std::nullopt;
    unsigned base = 10;
    size_t i = 0;
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    } else if (s.size() > 1 && s[0] == '0') {
        base = 8;
        i = 1;
    }
    uint64_t v = 0;
    for (; i < s.size(); ++i) {
        int d;
        char c = s[i];
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return std::nullopt;
        if (static_cast<unsigned>(d) >= base) return std::nullopt;
        if (v > (UINT64_MAX - d) / base) return std::nullopt;
        v = v * base + d;
    }
    return v;
}

std::string base64_encode(std::span<const uint8_t> in) {
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
        out += kB64[v >> 18];
        out += kB64[(v >> 12) & 63];
        out += kB64[(v >> 6) & 63];
        out += kB64[v & 63];
    }
    size_t rest = in.size() - i;
    if (rest) {
        uint32_t v = in[i] << 16;
        if (rest == 2) v |= in[i + 1] << 8;
        out += kB64[v >> 18];
        out += kB64[(v >> 12) & 63];
        out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::vector<uint8_t> base64_decode(std::string_view in) {
    static const std::array<int8_t, 256> table = [] {
        std::array<int8_t, 256> t{};
        t.fill(-1);
        for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kB64[i])] = static_cast<int8_t>(i);
        return t;
    }();
    std::vector<uint8_t> out;
    out.reserve(in.size() / 4 * 3 + 3);
    uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        if (c == '=') break;
        int v = table[static_cast<uint8_t>(c)];
        if (v < 0) continue;
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<uint8_t>(acc >> bits));
            acc &= (1u << bits) - 1;
        }
    }
    return out;
}

QtestServer::~QtestServer() = default;

void QtestServer::log_line(char dir, std::string_view text) {
    if (!log_) return;
    double now = static_cast<double>(EventLoop::now_ns()) / 1e9;
    if (log_t0_ < 0) log_t0_ = now;
    fmt::print(log_, "[{} +{:.6f}] {}\n", dir, now - log_t0_, text);
}

void QtestServer::reply(std::string_view text) {
    out_.append(text);
    out_ += '\n';
    log_line('S', text);
}

void QtestServer::reset_connection() {
    std::fill(std::begin(irq_levels_), std::end(irq_levels_), 0);
    in_.clear();
    discarding_ = false;
}

void QtestServer::irq_event(int n, bool level) {
    if (!intercepting_ || n < 0 || n >= kQtestMaxIrqs) return;
    if (irq_levels_[n] == static_cast<int8_t>(level)) return;
    irq_levels_[n] = static_cast<int8_t>(level);
    scratch_.clear();
    fmt::format_to(std::back_inserter(scratch_), "IRQ {} {}", level ? "raise" : "lower", n);
    reply(scratch_);
}

void QtestServer::feed(std::string_view data) {
    // Fast path: whole lines straight from the read buffer.
    if (in_.empty()) {
        size_t start = 0;
        while (true) {
            size_t nl = data.find('\n', start);
            if (nl == std::string_view::npos) break;
            if (!discarding_) process_line(data.substr(start, nl - start));
            discarding_ = false;
            start = nl + 1;
        }
        data.remove_prefix(start);
        if (data.empty()) return;
    }
    if (discarding_) {
        size_t nl = data.find('\n');
        if (nl == std::string_view::npos) return;
        discarding_ = false;
        data.remove_prefix(nl + 1);
        feed(data);
        return;
    }
    in_.append(data);
    size_t start = 0;
    while (true) {
        size_t nl = in_.find('\n', start);
        if (nl == std::string::npos) break;
        process_line(std::string_view(in_).substr(start, nl - start));
        start = nl + 1;
    }
    in_.erase(0, start);
    if (in_.size() > max_line_) {
        in_.clear();
        discarding_ = true;
        reply("ERR line too long");
    }
}

void QtestServer::process_line(std::string_view line) {
    if (log_) log_line('R', line);
    Words w = split(line);
    std::string_view cmd = w[0];
    if (w.too_many) {
        reply("ERR too many arguments");
        return;
    }
    auto num = [&](int i) { return parse_qtest_u64(w[i]); };
    auto bad_args = [&] {
        scratch_.clear();
        fmt::format_to(std::back_inserter(scratch_), "FAIL invalid arguments for '{}'", cmd);
        reply(scratch_);
    };

    // Port I/O: outb/outw/outl ADDR VALUE, inb/inw/inl ADDR.
    if (cmd.size() == 4 && (cmd.starts_with("out")) && width_of(cmd[3]) && cmd[3] != 'q') {
        auto addr = num(1), val = num(2);
        if (!addr || !val || *addr > 0xffff) return bad_args();
        target_.pio_write(static_cast<uint16_t>(*addr), static_cast<uint32_t>(*val), width_of(cmd[3]));
        return reply("OK");
    }
    if (cmd.size() == 3 && cmd.starts_with("in") && width_of(cmd[2]) && cmd[2] != 'q') {
        auto addr = num(1);
        if (!addr || *addr > 0xffff) return bad_args();
        uint32_t v = target_.pio_read(static_cast<uint16_t>(*addr), width_of(cmd[2]));
        scratch_.clear();
        fmt::format_to(std::back_inserter(scratch_), "OK 0x{:04x}", v);
        return reply(scratch_);
    }
    // MMIO/RAM: writeb..q ADDR VALUE, readb..q ADDR.
    if (cmd.size() == 6 && cmd.starts_with("write") && width_of(cmd[5])) {
        unsigned n = width_of(cmd[5]);
        auto addr = num(1), val = num(2);
        if (!addr || !val) return bad_args();
        uint8_t b[8];
        uint64_t v = *val;
        for (unsigned i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        target_.mem_write(*addr, std::span<const uint8_t>(b, n));
        return reply("OK");
    }
    if (cmd.size() == 5 && cmd.starts_with("read") && width_of(cmd[4])) {
        unsigned n = width_of(cmd[4]);
        auto addr = num(1);
        if (!addr) return bad_args();
        uint8_t b[8] = {};
        target_.mem_read(*addr, std::span<uint8_t>(b, n));
        uint64_t v = 0;
        for (unsigned i = 0; i < n; ++i) v |= uint64_t{b[i]} << (8 * i);
        scratch_.clear();
        fmt::format_to(std::back_inserter(scratch_), "OK 0x{:016x}", v);
        return reply(scratch_);
    }
    if (cmd == "read" || cmd == "b64read") {
        auto addr = num(1), len = num(2);
        if (!addr || !len || *len == 0) return bad_args();
        if (*len > kQtestMaxTransfer) return reply("ERR size too large");
        buf_.resize(*len);
        target_.mem_read(*addr, buf_);
        scratch_.clear();
        if (cmd == "read") {
            static constexpr char kHex[] = "0123456789abcdef";
            scratch_.reserve(4 + 2 * buf_.size());
            scratch_ += "OK 0x";
            for (uint8_t b : buf_) {
                scratch_ += kHex[b >> 4];
                scratch_ += kHex[b & 15];
            }
        } else {
            scratch_ = "OK ";
            scratch_ += base64_encode(buf_);
        }
        return reply(scratch_);
    }
    if (cmd == "write") {
        auto addr = num(1), len = num(2);
        if (!addr || !len || w.n < 4) return bad_args();
        if (*len > kQtestMaxTransfer) return reply("ERR size too large");
        std::string_view data = w[3];
        if (data.size() < 3) return reply("ERR invalid argument size");
        buf_.assign(*len, 0);
        // Byte i comes from characters 2+2i and 3+2i (after "0x"); missing
        // characters give zero bytes, as in QEMU.
        for (uint64_t i = 0; i < *len && i * 2 + 4 <= data.size(); ++i) {
            buf_[i] = static_cast<uint8_t>(hexval(data[i * 2 + 2]) << 4 | hexval(data[i * 2 + 3]));
        }
        target_.mem_write(*addr, buf_);
        return reply("OK");
    }
    if (cmd == "b64write") {
        auto addr = num(1), len = num(2);
        if (!addr || !len || w.n < 4) return bad_args();
        if (*len > kQtestMaxTransfer) return reply("ERR size too large");
        std::string_view data = w[3];
        if (data.size() < 3) return reply("ERR invalid argument size");
        std::vector<uint8_t> bytes = base64_decode(data);
        if (bytes.size() > *len) bytes.resize(*len);  // QEMU writes min(told, found)
        target_.mem_write(*addr, bytes);
        return reply("OK");
    }
    if (cmd == "memset") {
        auto addr = num(1), len = num(2), val = num(3);
        if (!addr || !len || !val) return bad_args();
        if (*len > kQtestMaxTransfer) return reply("ERR size too large");
        if (*len) target_.mem_fill(*addr, *len, static_cast<uint8_t>(*val));
        return reply("OK");
    }
    if (cmd == "irq_intercept_in" || cmd == "irq_intercept_out") {
        if (w.n < 2) return bad_args();
        std::string_view path = w[1];
        if (intercepting_) {
            return reply(path == intercept_path_ ? "OK" : "FAIL IRQ intercept already enabled");
        }
        auto st = target_.irq_intercept(path, cmd == "irq_intercept_in" ? IrqDirection::In
                                                                          : IrqDirection::Out);
        if (!st.ok()) {
            scratch_ = "FAIL ";
            scratch_ += st.error().message;
            return reply(scratch_);
        }
        intercepting_ = true;
        intercept_path_ = std::string(path);
        return reply("OK");
    }
    if (cmd == "endianness") return reply("OK little");
    if (cmd == "clock_step" || cmd == "clock_set") {
        std::optional<int64_t> ns;
        if (w.n >= 2) {
            auto v = num(1);
            if (!v || *v > static_cast<uint64_t>(INT64_MAX)) return bad_args();
            ns = static_cast<int64_t>(*v);
        } else if (cmd == "clock_set") {
            return bad_args();
        }
        int64_t now = cmd == "clock_step" ? target_.clock_step(ns) : target_.clock_set(*ns);
        scratch_.clear();
        fmt::format_to(std::back_inserter(scratch_), "OK {}", now);
        return reply(scratch_);
    }
    scratch_.clear();
    fmt::format_to(std::back_inserter(scratch_), "FAIL Unknown command '{}'", cmd);
    reply(scratch_);
}

}  // namespace mpq::vmm
