// The qtest protocol as stock QEMU 7.2 speaks it (softmmu/qtest.c): one text
// command per line, one reply per command ("OK ...", "FAIL ...", "ERR ..."),
// plus asynchronous "IRQ raise N" / "IRQ lower N" lines for intercepted
// interrupt inputs. This file is the protocol only; the transport (socket,
// stdio) lives in qtest_chardev.h and the machine behind it in QtestTarget.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace mpq::vmm {

enum class IrqDirection : uint8_t { In, Out };

// What qtest drives. Implemented by QtestMachine (vmm/qtest_machine.h),
// which forwards to the machine, and by fakes in tests.
class QtestTarget {
public:
    virtual ~QtestTarget() = default;
    virtual uint32_t pio_read(uint16_t port, unsigned size) = 0;
    virtual void pio_write(uint16_t port, uint32_t val, unsigned size) = 0;
    // Guest-physical accesses as address_space_read/write do them: RAM is
    // copied, MMIO gets naturally aligned accesses, unassigned memory reads 0.
    virtual void mem_read(uint64_t addr, std::span<uint8_t> out) = 0;
    virtual void mem_write(uint64_t addr, std::span<const uint8_t> in) = 0;
    virtual void mem_fill(uint64_t addr, uint64_t len, uint8_t byte) = 0;
    // Resolves a QOM-like path to a set of interrupt lines and starts
    // reporting them. Error text is sent after "FAIL ".
    virtual Status irq_intercept(std::string_view path, IrqDirection dir) = 0;
    virtual int64_t clock_step(std::optional<int64_t> ns) = 0;
    virtual int64_t clock_set(int64_t ns) = 0;
};

inline constexpr uint64_t kQtestMaxTransfer = 64ull << 20;  // bound for read/write/memset buffers
inline constexpr int kQtestMaxIrqs = 64;

class QtestServer {
public:
    explicit QtestServer(QtestTarget& target) : target_(target) {}
    ~QtestServer();

    // Feeds raw bytes from the client; complete lines are executed and their
    // replies appended to the output. Partial lines wait for more input.
    // A line longer than kQtestMaxLine is answered with an error and dropped.
    void feed(std::string_view data);
    // Executes one command line (without the newline).
    void process_line(std::string_view line);
    // An intercepted line changed level: queues "IRQ raise/lower N" (only on
    // a change from what was last reported, as QEMU does).
    void irq_event(int n, bool level);
    // Client (re)connected: forget the reported levels (QEMU: CHR_EVENT_OPENED).
    void reset_connection();

    std::string& output() { return out_; }
    bool has_output() const { return !out_.empty(); }

    // -qtest-log: "[R +secs] command" and "[S +secs] reply" lines.
    void set_log(FILE* f) { log_ = f; }

    static constexpr size_t kQtestMaxLine = 128u << 20;  // b64write of 64 MiB + slack
    void set_max_line(size_t n) { max_line_ = n; }

private:
    void reply(std::string_view text);
    void log_line(char dir, std::string_view text);

    QtestTarget& target_;
    std::string in_;
    std::string out_;
    std::string scratch_;
    std::vector<uint8_t> buf_;
    bool discarding_ = false;
    bool intercepting_ = false;
    std::string intercept_path_;
    int8_t irq_levels_[kQtestMaxIrqs] = {};
    size_t max_line_ = kQtestMaxLine;
    FILE* log_ = nullptr;
    double log_t0_ = -1;
};

// Helpers shared with tests.
// qemu_strtou64(base 0)-like: 0x.. hex, 0.. octal, else decimal; whole string.
std::optional<uint64_t> parse_qtest_u64(std::string_view s);
std::string base64_encode(std::span<const uint8_t> in);
// Lenient like GLib: skips characters outside the alphabet, stops at '='.
std::vector<uint8_t> base64_decode(std::string_view in);

}  // namespace mpq::vmm
