// The lsi53c895a as a guest drives it: random register writes/reads on its
// three BARs and config space, SCRIPTS and data in a fuzzed guest memory,
// with a real scsi-hd on an in-memory disk behind it (block I/O through a
// BlockBackend worker thread, completions on the event loop).
//
// Input: [ops_len:u16 LE][ops: 8 bytes each][guest RAM image (up to 64 KiB)]
// op = [kind:u8][offset:u16 LE][size:u8][value:u32 LE]; see do_op().
// Everything is built fresh per input, so a crash reproduces from its file.
// Checks: no crash/UB/leak (ASan), every call returns (libFuzzer -timeout
// catches a SCRIPTS loop that never yields).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "block/block.h"
#include "hw/lsi53c895a.h"
#include "mem/guest_memory.h"
#include "scsi/scsi_hd.h"
#include "util/event_loop.h"

namespace {

constexpr size_t kRamSize = 64 * 1024;
constexpr uint64_t kDiskSize = 256 * 1024;

// A disk in memory: synchronous, serialised by the backend.
class MemDriver final : public mpq::block::BlockDriver {
public:
    MemDriver() : data_(kDiskSize) {
        for (size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<uint8_t>(i * 13 + (i >> 9));
    }
    std::string format_name() const override { return "raw"; }
    uint64_t length() const override { return data_.size(); }
    mpq::Status pread(uint64_t off, std::span<uint8_t> buf) override {
        if (off > data_.size() || buf.size() > data_.size() - off) return mpq::fail("out of range");
        std::memcpy(buf.data(), data_.data() + off, buf.size());
        return {};
    }
    mpq::Status pwrite(uint64_t off, std::span<const uint8_t> buf) override {
        if (off > data_.size() || buf.size() > data_.size() - off) return mpq::fail("out of range");
        std::memcpy(data_.data() + off, buf.data(), buf.size());
        return {};
    }
    mpq::Status flush() override { return {}; }
    mpq::Status discard(uint64_t, uint64_t) override { return {}; }
    mpq::Status write_zeroes(uint64_t off, uint64_t len) override {
        if (off > data_.size() || len > data_.size() - off) return mpq::fail("out of range");
        std::memset(data_.data() + off, 0, len);
        return {};
    }
    bool concurrent_safe() const override { return false; }

private:
    std::vector<uint8_t> data_;
};

class Irq final : public mpq::pci::IrqLine {
public:
    void set_level(bool a) override { level = a; }
    bool level = false;
};

uint32_t le32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t(p[3]) << 24; }

struct World {
    mpq::EventLoop loop;
    std::unique_ptr<mpq::block::BlockBackend> backend;
    std::unique_ptr<mpq::scsi::Device> disk;
    std::unique_ptr<mpq::hw::Lsi53c895a> lsi;
    mpq::GuestMemory mem;
    Irq irq;

    // Lets queued work (SCRIPTS yields, block completions) happen, bounded.
    void settle(unsigned rounds) {
        for (unsigned i = 0; i < rounds; ++i) {
            backend->drain();
            loop.run_once(0);
        }
    }
};

void do_op(World& w, const uint8_t* op) {
    unsigned kind = op[0] % 10;
    uint32_t off = op[1] | op[2] << 8;
    static constexpr unsigned kSizes[] = {1, 2, 4, 1};
    unsigned size = kSizes[op[3] & 3];
    uint32_t val = le32(op + 4);
    auto& d = *w.lsi;
    switch (kind) {
        case 0: d.bar_write(1, off % mpq::hw::kLsiMmioBarSize, val, size); break;
        case 1: (void)d.bar_read(1, off % mpq::hw::kLsiMmioBarSize, size); break;
        case 2: d.bar_write(0, off % mpq::hw::kLsiIoBarSize, val, size); break;
        case 3: (void)d.bar_read(0, off % mpq::hw::kLsiIoBarSize, size); break;
        case 4: d.bar_write(2, off % mpq::hw::kLsiRamBarSize, val, size); break;
        case 5: d.config_write(off % 256, val, size); break;
        case 6: (void)d.config_read(off % 256, size); break;
        case 7: w.settle(1 + val % 32); break;
        case 8: d.bar_write(1, 0x2c, val % kRamSize, 4); break;  // DSP: start SCRIPTS
        case 9: d.device_reset(); break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    size_t ops_len = std::min<size_t>(data[0] | data[1] << 8, size - 2) / 8 * 8;
    const uint8_t* ops = data + 2;
    const uint8_t* ram_init = ops + ops_len;
    size_t ram_len = std::min(kRamSize, size - 2 - ops_len);

    std::vector<uint8_t> ram(kRamSize);
    std::memcpy(ram.data(), ram_init, ram_len);
    {
        World w;
        mpq::block::DriveOptions o;
        o.id = "d0";
        w.backend = std::make_unique<mpq::block::BlockBackend>(w.loop, std::make_unique<MemDriver>(), o);
        mpq::scsi::ScsiHdProps props;
        props.id = "sd0";
        auto disk = mpq::scsi::make_scsi_hd(w.loop, *w.backend, props);
        if (!disk.ok()) __builtin_trap();
        w.disk = std::move(*disk);
        if (!w.mem.set_host_region(0, ram.data(), ram.size()).ok()) __builtin_trap();
        w.lsi = mpq::hw::make_lsi53c895a(w.loop, "lsi0");
        w.lsi->attach_dma(&w.mem);
        w.lsi->attach_irq(&w.irq);
        w.lsi->bus().attach(0, w.disk.get());
        // What firmware does first: BARs decode, bus master on.
        w.lsi->config_write(0x04, 0x7, 2);

        for (size_t i = 0; i + 8 <= ops_len; i += 8) do_op(w, ops + i);
        w.settle(64);
        // Tear down as the remote does at exit: controller first.
        w.lsi.reset();
        w.settle(4);
        w.disk.reset();
        w.backend.reset();
    }
    return 0;
}
