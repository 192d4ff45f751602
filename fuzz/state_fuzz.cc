// The device-state loader (state/device_state.h, state/live.h) with a
// hostile blob: decode, apply to a freshly built lsi53c895a + scsi-hd on an
// in-memory disk (the same ids and sizes as tests/unit/state_roundtrip_test,
// whose saved blobs are the seeds), let the restored devices run, and save
// them again.
//
// Input: [mode:u8][blob]. mode bit 0: rewrite the header's payload length
// and CRC first, so that mutations reach the section parser instead of all
// dying at the checksum; bit 1: decode as a worker's publish, which may
// omit the checksum.
// Checks: no crash/UB/leak (ASan), every call returns (libFuzzer -timeout),
// and a state that was accepted can always be saved again and that blob
// decodes (restore never leaves the devices in a state the format cannot
// describe).
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "block/block.h"
#include "hw/lsi53c895a.h"
#include "mem/guest_memory.h"
#include "scsi/scsi_hd.h"
#include "state/device_state.h"
#include "state/live.h"
#include "util/event_loop.h"

namespace {

constexpr size_t kRamSize = 1 << 20;
constexpr uint64_t kDiskSize = 4 << 20;

class MemDriver final : public mpq::block::BlockDriver {
public:
    MemDriver() : data_(kDiskSize) {}
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

void reseal(std::vector<uint8_t>& b) {
    if (b.size() < mpq::state::kHeaderSize) return;
    uint64_t len = b.size() - mpq::state::kHeaderSize;
    for (int i = 0; i < 8; i++) b[16 + i] = static_cast<uint8_t>(len >> (8 * i));
    uint32_t c = (b[12] & mpq::state::kFlagNoChecksum)
                     ? 0
                     : static_cast<uint32_t>(::crc32(::crc32(0, nullptr, 0), b.data() + mpq::state::kHeaderSize,
                                                     static_cast<uInt>(len)));
    for (int i = 0; i < 4; i++) b[24 + i] = static_cast<uint8_t>(c >> (8 * i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    std::vector<uint8_t> blob(data + 1, data + size);
    if (data[0] & 1) reseal(blob);
    // Bit 1: read it as a worker's publish (a missing checksum allowed).
    auto img = mpq::state::decode(blob, (data[0] & 2) ? mpq::state::ChecksumPolicy::MayBeOmitted
                                                      : mpq::state::ChecksumPolicy::Required);
    if (!img.ok()) {
        if (img.error().message.empty()) std::abort();  // every refusal says why
        return 0;
    }
    std::vector<uint8_t> ram(kRamSize);
    mpq::EventLoop loop;
    mpq::GuestMemory mem;
    Irq irq;
    if (!mem.set_host_region(0, ram.data(), ram.size()).ok()) __builtin_trap();
    mpq::block::DriveOptions o;
    o.id = "d0";
    auto backend = std::make_unique<mpq::block::BlockBackend>(loop, std::make_unique<MemDriver>(), o);
    mpq::scsi::ScsiHdProps props;
    props.id = "sd0";
    auto disk = mpq::scsi::make_scsi_hd(loop, *backend, props);
    if (!disk.ok()) __builtin_trap();
    auto lsi = mpq::hw::make_lsi53c895a(loop, "lsi0");
    lsi->attach_dma(&mem);
    lsi->attach_irq(&irq);
    lsi->bus().attach(0, disk->get());
    {
        mpq::state::LiveDevices live;
        live.drives.push_back({"d0", backend.get()});
        live.disks.push_back({"sd0", "lsi0", "d0", 0, disk->get()});
        live.functions.push_back({"lsi0", "lsi53c895a", lsi.get()});
        if (mpq::state::apply(*img, live).ok()) {
            // Let the restored devices go on for a while, as a guest would.
            for (int i = 0; i < 8; i++) {
                backend->drain();
                loop.run_once(0);
            }
            (void)lsi->bar_read(1, 0x14, 1);  // ISTAT0
            (void)lsi->bar_read(1, 0x0c, 1);  // DSTAT
            auto again = mpq::state::capture(live, "fuzz");
            if (!again.ok()) std::abort();
            if (!mpq::state::decode(mpq::state::encode(*again)).ok()) std::abort();
        }
    }
    lsi.reset();
    backend->drain();
    disk->reset();
    disk = mpq::Result<std::unique_ptr<mpq::scsi::Device>>(std::unique_ptr<mpq::scsi::Device>());
    backend.reset();
    return 0;
}
