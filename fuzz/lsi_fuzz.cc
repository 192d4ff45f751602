// The lsi53c895a as a guest drives it: random register writes/reads on its
// three BARs and config space, SCRIPTS and data in a fuzzed guest memory,
// with a real scsi-hd on an in-memory raw image behind it. Everything runs
// on this thread: block requests run inline (InlineIo), completions and
// SCRIPTS resumptions wait on a ManualWorkQueue that the input pumps, so an
// input costs microseconds, not an event loop and an I/O thread.
//
// Input: [ops_len:u16 LE][ops: 8 bytes each, at most 256][guest RAM image (up to 64 KiB)]
// op = [kind:u8][offset:u16 LE][size:u8][value:u32 LE]; see do_op().
// Everything is built fresh per input, so a crash reproduces from its file.
// Checks: no crash/UB/leak (ASan), every call returns (libFuzzer -timeout
// catches a SCRIPTS loop that never yields), and the queue is bounded.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "block/block.h"
#include "block/mem.h"
#include "hw/lsi53c895a.h"
#include "mem/guest_memory.h"
#include "scsi/scsi_hd.h"
#include "util/manual_work_queue.h"

namespace {

constexpr size_t kRamSize = 64 * 1024;
constexpr uint64_t kDiskSize = 256 * 1024;
// SCRIPTS steps per activation, callbacks (completions, resumptions,
// yields) one settle op may run, and the final settle. Together they bound
// what a SCRIPTS program that never stops costs: at most 8 x 32 steps per
// settle op and 16 x 32 at the end. Most of an input's time is SCRIPTS
// fetches, and a loop finds nothing new after its first round, so these
// are kept small (a SCSI command's SCRIPTS take about ten steps and one
// completion): 64 / 16 / 48 let a looping input take six times the steps.
constexpr unsigned kScriptsBudget = 32;
constexpr unsigned kMaxSettle = 8;
constexpr unsigned kFinalSettle = 16;
// Ops one input may run. The ops length is a u16, so without this a grown
// input carried up to 8,191 ops (the corpus after 130,000 executions: the
// median input 37 ops, 40 % of them over 256), and those long inputs took
// most of the time while a SCRIPTS setup needs a dozen ops. Op bytes past
// the bound are guest RAM.
constexpr size_t kMaxOps = 256;

// The disk's first contents, computed once: a pattern, so reads return
// something other than zeroes.
const std::vector<uint8_t>& disk_pattern() {
    static const std::vector<uint8_t> bytes = [] {
        std::vector<uint8_t> v(kDiskSize);
        for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 13 + (i >> 9));
        return v;
    }();
    return bytes;
}

class Irq final : public mpq::pci::IrqLine {
public:
    void set_level(bool a) override { level = a; }
    bool level = false;
};

uint32_t le32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t(p[3]) << 24; }

struct World {
    mpq::ManualWorkQueue wq;
    std::unique_ptr<mpq::block::BlockBackend> backend;
    std::unique_ptr<mpq::scsi::Device> disk;
    std::unique_ptr<mpq::hw::Lsi53c895a> lsi;
    mpq::GuestMemory mem;
    Irq irq;

    // Lets queued work (block completions, SCRIPTS resumptions and
    // yields) happen: at most `callbacks` of them.
    void settle(unsigned callbacks) { (void)wq.run_until_idle(callbacks); }
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
        case 7: w.settle(1 + val % kMaxSettle); break;
        case 8: d.bar_write(1, 0x2c, val % kRamSize, 4); break;  // DSP: start SCRIPTS
        case 9: d.device_reset(); break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    size_t ops_len = std::min<size_t>({size_t(data[0] | data[1] << 8), size - 2, kMaxOps * 8}) / 8 * 8;
    const uint8_t* ops = data + 2;
    const uint8_t* ram_init = ops + ops_len;
    size_t ram_len = std::min(kRamSize, size - 2 - ops_len);

    // Guest RAM and the disk's bytes live across inputs only to spare the
    // allocator (and the page faults of fresh big blocks): both are fully
    // rewritten here, so an input still sees nothing of the one before.
    static std::vector<uint8_t> ram(kRamSize);
    static const auto image = std::make_shared<mpq::block::MemImage>();
    std::memcpy(ram.data(), ram_init, ram_len);
    std::memset(ram.data() + ram_len, 0, kRamSize - ram_len);
    image->bytes = disk_pattern();
    image->max_size = kDiskSize;
    image->flushes = 0;
    {
        World w;
        mpq::block::DriveOptions o;
        o.id = "d0";
        w.backend = std::make_unique<mpq::block::BlockBackend>(
            w.wq, mpq::block::make_mem_driver(image), o, mpq::block::kInlineIo);
        mpq::scsi::ScsiHdProps props;
        props.id = "sd0";
        auto disk = mpq::scsi::make_scsi_hd(w.wq, *w.backend, props);
        if (!disk.ok()) __builtin_trap();
        w.disk = std::move(*disk);
        if (!w.mem.set_host_region(0, ram.data(), ram.size()).ok()) __builtin_trap();
        // A small SCRIPTS budget: an endless SCRIPTS loop costs this many
        // steps per activation instead of the device process' 10,000.
        w.lsi = mpq::hw::make_lsi53c895a(w.wq, "lsi0", mpq::hw::LsiTuning{kScriptsBudget});
        w.lsi->attach_dma(&w.mem);
        w.lsi->attach_irq(&w.irq);
        w.lsi->bus().attach(0, w.disk.get());
        // What firmware does first: BARs decode, bus master on.
        w.lsi->config_write(0x04, 0x7, 2);

        for (size_t i = 0; i + 8 <= ops_len; i += 8) do_op(w, ops + i);
        w.settle(kFinalSettle);
        // Tear down as the remote does at exit: controller first.
        w.lsi.reset();
        w.settle(4);
        w.disk.reset();
        w.backend.reset();
    }
    return 0;
}
