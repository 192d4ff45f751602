// qtest protocol server: command parsing, reply formats (as stock QEMU 7.2),
// errors for hostile input, asynchronous IRQ lines.
#include <gtest/gtest.h>

#include <map>

#include "vmm/qtest.h"

namespace mpq::vmm {
namespace {

class FakeTarget : public QtestTarget {
public:
    std::map<uint64_t, uint8_t> mem;
    std::vector<std::string> log;
    uint32_t pio_value = 0x1234abcd;
    bool allow_ioapic = true;
    int64_t now = 0;

    uint32_t pio_read(uint16_t port, unsigned size) override {
        log.push_back(fmt::format("in{} {:#x}", size, port));
        return size == 4 ? pio_value : pio_value & ((1u << (8 * size)) - 1);
    }
    void pio_write(uint16_t port, uint32_t val, unsigned size) override {
        log.push_back(fmt::format("out{} {:#x} {:#x}", size, port, val));
    }
    void mem_read(uint64_t addr, std::span<uint8_t> out) override {
        log.push_back(fmt::format("read {:#x} {}", addr, out.size()));
        for (size_t i = 0; i < out.size(); ++i) out[i] = mem.count(addr + i) ? mem[addr + i] : 0;
    }
    void mem_write(uint64_t addr, std::span<const uint8_t> in) override {
        log.push_back(fmt::format("write {:#x} {}", addr, in.size()));
        for (size_t i = 0; i < in.size(); ++i) mem[addr + i] = in[i];
    }
    void mem_fill(uint64_t addr, uint64_t len, uint8_t b) override {
        log.push_back(fmt::format("fill {:#x} {} {:#x}", addr, len, b));
        for (uint64_t i = 0; i < len; ++i) mem[addr + i] = b;
    }
    Status irq_intercept(std::string_view path, IrqDirection) override {
        if (allow_ioapic && path == "ioapic") return {};
        return fail("Unknown device");
    }
    int64_t clock_step(std::optional<int64_t> ns) override {
        now += ns.value_or(1000);
        return now;
    }
    int64_t clock_set(int64_t ns) override {
        if (ns > now) now = ns;
        return now;
    }
};

class QtestTest : public ::testing::Test {
protected:
    FakeTarget t;
    QtestServer s{t};
    std::string run(std::string_view line) {
        s.output().clear();
        s.feed(std::string(line) + "\n");
        std::string out = s.output();
        s.output().clear();
        return out;
    }
};

TEST_F(QtestTest, PortIoRepliesLikeQemu) {
    EXPECT_EQ(run("outb 0x80 0x12"), "OK\n");
    EXPECT_EQ(run("outw 0x80 0x1234"), "OK\n");
    EXPECT_EQ(run("outl 0xcf8 0x80000000"), "OK\n");
    EXPECT_EQ(t.log.back(), "out4 0xcf8 0x80000000");
    EXPECT_EQ(run("inb 0x80"), "OK 0x00cd\n");
    EXPECT_EQ(run("inw 0x80"), "OK 0xabcd\n");
    EXPECT_EQ(run("inl 0xcfc"), "OK 0x1234abcd\n");
    t.pio_value = 0x5;
    EXPECT_EQ(run("inl 0xcfc"), "OK 0x0005\n");  // %04x: at least four digits
}

TEST_F(QtestTest, PortAboveFfffIsRejected) {
    EXPECT_EQ(run("outb 0x10000 1").substr(0, 4), "FAIL");
    EXPECT_EQ(run("inl 0x10000").substr(0, 4), "FAIL");
    EXPECT_TRUE(t.log.empty());
}

TEST_F(QtestTest, MemoryValuesAreLittleEndianAndSixteenDigits) {
    EXPECT_EQ(run("writel 0x1000 0xdeadbeef"), "OK\n");
    EXPECT_EQ(t.mem[0x1000], 0xef);
    EXPECT_EQ(t.mem[0x1003], 0xde);
    EXPECT_EQ(run("readl 0x1000"), "OK 0x00000000deadbeef\n");
    EXPECT_EQ(run("readb 0x1001"), "OK 0x00000000000000be\n");
    EXPECT_EQ(run("writeq 0x2000 0x0102030405060708"), "OK\n");
    EXPECT_EQ(run("readq 0x2000"), "OK 0x0102030405060708\n");
    EXPECT_EQ(run("readw 0x2006"), "OK 0x0000000000000102\n");
    // One access of the full width reaches the target (not byte by byte).
    EXPECT_EQ(t.log.back(), "read 0x2006 2");
}

TEST_F(QtestTest, DecimalAndOctalNumbersAsStrtoull) {
    EXPECT_EQ(run("writeb 4096 255"), "OK\n");
    EXPECT_EQ(t.mem[4096], 0xff);
    EXPECT_EQ(run("writeb 010 7"), "OK\n");  // octal
    EXPECT_EQ(t.mem[8], 7);
    EXPECT_EQ(run("writeb 0x10 0x1zz").substr(0, 4), "FAIL");
    EXPECT_EQ(run("writeb 0xffffffffffffffffff 1").substr(0, 4), "FAIL");  // overflow
}

TEST_F(QtestTest, HexReadWrite) {
    EXPECT_EQ(run("write 0x100 4 0x0a0b0c0d"), "OK\n");
    EXPECT_EQ(run("read 0x100 4"), "OK 0x0a0b0c0d\n");
    // Short data: missing bytes are written as zero (QEMU's behaviour).
    t.mem[0x203] = 0x77;
    EXPECT_EQ(run("write 0x200 4 0xff"), "OK\n");
    EXPECT_EQ(run("read 0x200 4"), "OK 0xff000000\n");
    EXPECT_EQ(run("write 0x200 4 0x"), "ERR invalid argument size\n");
}

TEST_F(QtestTest, Base64RoundTrip) {
    EXPECT_EQ(run("b64write 0x300 5 aGVsbG8="), "OK\n");
    EXPECT_EQ(run("read 0x300 5"), "OK 0x68656c6c6f\n");
    EXPECT_EQ(run("b64read 0x300 5"), "OK aGVsbG8=\n");
    EXPECT_EQ(run("b64read 0x300 1"), "OK aA==\n");
    EXPECT_EQ(run("b64write 0x300 1 aA"), "ERR invalid argument size\n");
    // More data than announced: only `size` bytes are written.
    EXPECT_EQ(run("b64write 0x400 2 aGVsbG8="), "OK\n");
    EXPECT_EQ(t.log.back(), "write 0x400 2");
}

TEST_F(QtestTest, Base64CodecEdgeCases) {
    std::vector<uint8_t> all(256);
    for (int i = 0; i < 256; ++i) all[i] = static_cast<uint8_t>(i);
    for (size_t n = 0; n < 10; ++n) {
        auto enc = base64_encode(std::span(all.data(), n));
        auto dec = base64_decode(enc);
        EXPECT_EQ(dec, std::vector<uint8_t>(all.begin(), all.begin() + n)) << n;
    }
    EXPECT_EQ(base64_decode("a G\nVs!bG8="), std::vector<uint8_t>({'h', 'e', 'l', 'l', 'o'}));
}

TEST_F(QtestTest, MemsetAndBounds) {
    EXPECT_EQ(run("memset 0x500 3 0xab"), "OK\n");
    EXPECT_EQ(t.log.back(), "fill 0x500 3 0xab");
    EXPECT_EQ(run("memset 0x500 0 0xab"), "OK\n");
    EXPECT_EQ(t.log.back(), "fill 0x500 3 0xab");  // nothing for length 0
    EXPECT_EQ(run("read 0 0x100000000"), "ERR size too large\n");
    EXPECT_EQ(run("memset 0 0xffffffffffff 0"), "ERR size too large\n");
    EXPECT_EQ(run("read 0 0").substr(0, 4), "FAIL");
}

TEST_F(QtestTest, UnknownAndMalformedCommands) {
    EXPECT_EQ(run("frobnicate 1 2"), "FAIL Unknown command 'frobnicate'\n");
    EXPECT_EQ(run("readl").substr(0, 4), "FAIL");
    EXPECT_EQ(run("outl 0x10").substr(0, 4), "FAIL");
    EXPECT_EQ(run("a b c d e f g h i j").substr(0, 3), "ERR");
    EXPECT_EQ(run("endianness"), "OK little\n");
}

TEST_F(QtestTest, PartialLinesAndPipelining) {
    s.feed("writel 0x10 0x1");
    EXPECT_TRUE(s.output().empty());
    s.feed("2\nreadl 0x10\nread");
    EXPECT_EQ(s.output(), "OK\nOK 0x0000000000000012\n");
    s.output().clear();
    s.feed("b 0x10\r\n");
    EXPECT_EQ(s.output(), "OK 0x0000000000000012\n");
}

TEST_F(QtestTest, IrqInterceptAndAsyncLines) {
    s.irq_event(11, true);  // not intercepting yet: nothing
    EXPECT_TRUE(s.output().empty());
    EXPECT_EQ(run("irq_intercept_in /machine/unknown"), "FAIL Unknown device\n");
    EXPECT_EQ(run("irq_intercept_in ioapic"), "OK\n");
    EXPECT_EQ(run("irq_intercept_in ioapic"), "OK\n");
    EXPECT_EQ(run("irq_intercept_out ioapic"), "OK\n");
    t.allow_ioapic = false;
    EXPECT_EQ(run("irq_intercept_in other"), "FAIL IRQ intercept already enabled\n");
    s.irq_event(11, true);
    s.irq_event(11, true);  // no change: no second line
    s.irq_event(11, false);
    s.irq_event(99, true);  // out of range: ignored
    EXPECT_EQ(s.output(), "IRQ raise 11\nIRQ lower 11\n");
}

TEST_F(QtestTest, Clock) {
    EXPECT_EQ(run("clock_step 100"), "OK 100\n");
    EXPECT_EQ(run("clock_step"), "OK 1100\n");
    EXPECT_EQ(run("clock_set 5000"), "OK 5000\n");
    EXPECT_EQ(run("clock_set").substr(0, 4), "FAIL");
}

TEST_F(QtestTest, OverlongLineIsDroppedWithError) {
    s.set_max_line(1000);
    std::string big(1010, 'x');
    s.feed(big);
    EXPECT_EQ(s.output(), "ERR line too long\n");
    s.output().clear();
    s.feed("yyy\nendianness\n");  // rest of the long line is skipped
    EXPECT_EQ(s.output(), "OK little\n");
}

}  // namespace
}  // namespace mpq::vmm
