// Test bench for the LSI53C895A unit tests: guest RAM, an IRQ probe, an
// in-memory SCSI disk (synchronous or host-stepped asynchronous), SCRIPTS
// assembly helpers.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "hw/lsi53c895a.h"
#include "hw/lsi_regs.h"
#include "mem/guest_memory.h"
#include "scsi/scsi.h"
#include "util/event_loop.h"
#include "util/manual_work_queue.h"

namespace lsitest {

using namespace mpq;
namespace L = mpq::hw::lsi;

inline constexpr uint64_t kRamSize = 1 << 20;
inline constexpr uint32_t kIoBase = 0xc000;
inline constexpr uint32_t kMmioBase = 0xfebf0000;
inline constexpr uint32_t kRamBarBase = 0xfebf2000;

// ---- SCRIPTS encoding ----
inline constexpr uint32_t kIfTrue = 1u << 19;
inline constexpr uint32_t kCmpPhase = 1u << 17;
inline constexpr uint32_t kCmpData = 1u << 18;
inline constexpr uint32_t kCmpCarry = 1u << 21;
inline constexpr uint32_t kRelative = 1u << 23;
inline constexpr uint32_t kWhen = kCmpPhase | (1u << 16);

inline uint32_t move(unsigned phase, uint32_t count) { return 0x08000000u | (phase << 24) | (count & 0xffffff); }
inline uint32_t move_ti(unsigned phase) { return 0x18000000u | (phase << 24); }
inline uint32_t move_ind(unsigned phase, uint32_t count) { return 0x28000000u | (phase << 24) | count; }
inline uint32_t select_atn(unsigned id) { return 0x41000000u | (id << 16); }
inline uint32_t select_ti_atn() { return 0x43000000u; }
inline constexpr uint32_t kWaitDisc = 0x48000000u;
inline constexpr uint32_t kWaitResel = 0x50000000u;
inline constexpr uint32_t kSetAtn = 0x58000008u;
inline constexpr uint32_t kSetCarry = 0x58000400u;
inline constexpr uint32_t kClearAck = 0x60000040u;
inline constexpr uint32_t kClearCarry = 0x60000400u;
inline constexpr uint32_t kInt = 0x98080000u;
inline constexpr uint32_t kIntFly = 0x98180000u;
inline constexpr uint32_t kJump = 0x80080000u;
inline constexpr uint32_t kCall = 0x88080000u;
inline constexpr uint32_t kReturn = 0x90080000u;
inline uint32_t jump_if_phase(unsigned phase) { return 0x80000000u | kIfTrue | kWhen | (phase << 24); }
inline uint32_t int_if_not_phase(unsigned phase) { return 0x98000000u | kWhen | (phase << 24); }
inline uint32_t jump_if_data(uint8_t data, uint8_t mask = 0) {
    return 0x80000000u | kIfTrue | kCmpData | (uint32_t(mask) << 8) | data;
}
// Register ops. op: 0 MOV 1 SHL 2 OR 3 XOR 4 AND 5 SHR 6 ADD 7 ADC.
inline uint32_t reg_rmw(unsigned reg, unsigned op, uint8_t imm) {
    return 0x78000000u | (op << 24) | ((reg & 0x7f) << 16) | (reg & 0x80) | (uint32_t(imm) << 8);
}
inline uint32_t to_sfbr(unsigned reg, unsigned op, uint8_t imm) {
    return 0x70000000u | (op << 24) | ((reg & 0x7f) << 16) | (reg & 0x80) | (uint32_t(imm) << 8);
}
inline uint32_t from_sfbr(unsigned reg, unsigned op, uint8_t imm) {
    return 0x68000000u | (op << 24) | ((reg & 0x7f) << 16) | (reg & 0x80) | (uint32_t(imm) << 8);
}
inline uint32_t load(unsigned reg, unsigned n) { return 0xe1000000u | (reg << 16) | n; }
inline uint32_t store(unsigned reg, unsigned n) { return 0xe0000000u | (reg << 16) | n; }
inline uint32_t load_rel(unsigned reg, unsigned n) { return 0xf1000000u | (reg << 16) | n; }
inline uint32_t store_rel(unsigned reg, unsigned n) { return 0xf0000000u | (reg << 16) | n; }
inline uint32_t memmove_insn(uint32_t count) { return 0xc0000000u | count; }

enum PhaseNum : unsigned { kDO = 0, kDI = 1, kCMD = 2, kST = 3, kMO = 6, kMI = 7 };

class FakeIrq : public pci::IrqLine {
public:
    void set_level(bool a) override {
        level = a;
        if (a) raises++;
    }
    bool level = false;
    int raises = 0;
};

// ---- an in-memory disk ----
enum class Timing { Sync, Async };

class FakeDisk;

class FakeRequest : public scsi::Request {
public:
    FakeRequest(FakeDisk* d, uint32_t tag, unsigned lun, std::span<const uint8_t> cdb, scsi::RequestClient* c);
    scsi::DataDir start(uint32_t* expected_len) override;
    void continue_transfer() override;
    std::span<uint8_t> buffer() override { return {buf_.data(), chunk_}; }
    void cancel() override { cancelled = true; }
    scsi::Sense sense() const override { return sense_; }

    void deliver();   // async: data (read) or completion arrives
    void complete(scsi::Status st);

    FakeDisk* disk_;
    std::vector<uint8_t> cdb_;
    std::vector<uint8_t> buf_;
    uint32_t chunk_ = 0;
    uint64_t lba_ = 0;
    uint32_t total_ = 0;
    uint32_t sent_ = 0;
    scsi::Sense sense_{};
    bool cancelled = false;
    bool done = false;
};

class FakeDisk : public scsi::Device {
public:
    explicit FakeDisk(EventLoop& loop, Timing t = Timing::Sync, uint32_t blocks = 256)
        : loop_(loop), timing(t), data(blocks * 512ull) {
        for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i * 7 + (i >> 9));
    }
    std::shared_ptr<scsi::Request> new_request(uint32_t tag, unsigned lun, std::span<const uint8_t> cdb,
                                               scsi::RequestClient* client) override {
        auto r = std::make_shared<FakeRequest>(this, tag, lun, cdb, client);
        requests.push_back(r);
        return r;
    }
    void reset() override {
        resets++;
        for (auto& r : requests) r->cancelled = true;
    }
    const std::string& id() const override { return id_; }

    // Delivers every pending asynchronous event (in order).
    int pump() {
        int n = 0;
        while (!pending.empty()) {
            auto f = std::move(pending.front());
            pending.pop_front();
            f();
            n++;
        }
        return n;
    }

    EventLoop& loop_;
    Timing timing;
    std::vector<uint8_t> data;
    std::vector<std::shared_ptr<FakeRequest>> requests;
    std::deque<std::function<void()>> pending;
    std::vector<uint32_t> tags_seen;
    uint32_t chunk_limit = 0x10000;  // bytes per transfer_data
    int resets = 0;
    std::string id_ = "fake";
};

inline FakeRequest::FakeRequest(FakeDisk* d, uint32_t tag, unsigned lun, std::span<const uint8_t> cdb,
                                scsi::RequestClient* c)
    : scsi::Request(tag, lun, c), disk_(d), cdb_(cdb.begin(), cdb.end()) {
    d->tags_seen.push_back(tag);
    cdb_.resize(16);  // short CDBs read as zero-padded
}

inline void FakeRequest::complete(scsi::Status st) {
    if (cancelled || done) return;
    done = true;
    client_->command_complete(*this, st, total_ - sent_);
}

inline scsi::DataDir FakeRequest::start(uint32_t* expected) {
    uint8_t op = cdb_.empty() ? 0xff : cdb_[0];
    auto be32 = [&](int o) { return uint32_t(cdb_[o]) << 24 | uint32_t(cdb_[o + 1]) << 16 | uint32_t(cdb_[o + 2]) << 8 | cdb_[o + 3]; };
    switch (op) {
    case 0x00:  // TEST UNIT READY
        *expected = 0;
        if (disk_->timing == Timing::Async) {
            auto self = std::static_pointer_cast<FakeRequest>(shared_from_this());
            disk_->pending.push_back([self] { self->complete(scsi::Status::Good); });
        } else {
            complete(scsi::Status::Good);
        }
        return scsi::DataDir::None;
    case 0x12: {  // INQUIRY: always immediate
        uint32_t alloc = uint32_t(cdb_[3]) << 8 | cdb_[4];
        buf_.assign(36, 0);
        buf_[2] = 5;
        buf_[3] = 0x12;
        buf_[4] = 31;
        buf_[7] = 0x12;
        std::memcpy(&buf_[8], "QEMU    QEMU HARDDISK   2.5+", 28);
        total_ = std::min<uint32_t>(alloc, 36);
        dir_ = scsi::DataDir::FromDevice;
        *expected = total_;
        if (total_ == 0) {
            complete(scsi::Status::Good);
            return dir_;
        }
        chunk_ = total_;
        client_->transfer_data(*this, chunk_);
        return dir_;
    }
    case 0x03: {  // REQUEST SENSE: 18 bytes whatever the allocation
        uint32_t alloc = cdb_[4];
        buf_.assign(18, 0);
        buf_[0] = 0x70;
        buf_[7] = 10;
        total_ = std::min<uint32_t>(alloc, 18);
        dir_ = scsi::DataDir::FromDevice;
        *expected = total_;
        chunk_ = total_;
        client_->transfer_data(*this, chunk_);
        return dir_;
    }
    case 0x28:    // READ(10)
    case 0x2a: {  // WRITE(10)
        lba_ = be32(2);
        total_ = (uint32_t(cdb_[7]) << 8 | cdb_[8]) * 512u;
        *expected = total_;
        if (lba_ * 512 + total_ > disk_->data.size()) {
            sense_ = scsi::kLbaOutOfRange;
            complete(scsi::Status::CheckCondition);
            return scsi::DataDir::None;
        }
        dir_ = op == 0x28 ? scsi::DataDir::FromDevice : scsi::DataDir::ToDevice;
        if (total_ == 0) {
            complete(scsi::Status::Good);
            return scsi::DataDir::None;
        }
        if (dir_ == scsi::DataDir::FromDevice && disk_->timing == Timing::Async) {
            auto self = std::static_pointer_cast<FakeRequest>(shared_from_this());
            disk_->pending.push_back([self] { self->deliver(); });
        } else {
            deliver();
        }
        return dir_;
    }
    default:
        sense_ = scsi::kInvalidOpcode;
        *expected = 0;
        complete(scsi::Status::CheckCondition);
        return scsi::DataDir::None;
    }
}

inline void FakeRequest::deliver() {
    if (cancelled || done) return;
    chunk_ = std::min(total_ - sent_, disk_->chunk_limit);
    buf_.assign(chunk_, 0);
    if (dir_ == scsi::DataDir::FromDevice) std::memcpy(buf_.data(), &disk_->data[lba_ * 512 + sent_], chunk_);
    client_->transfer_data(*this, chunk_);
}

inline void FakeRequest::continue_transfer() {
    if (cancelled || done) return;
    if (cdb_[0] == 0x28 || cdb_[0] == 0x2a) {
        if (dir_ == scsi::DataDir::ToDevice) std::memcpy(&disk_->data[lba_ * 512 + sent_], buf_.data(), chunk_);
        sent_ += chunk_;
        if (sent_ < total_) {
            if (disk_->timing == Timing::Async) {
                auto self = std::static_pointer_cast<FakeRequest>(shared_from_this());
                disk_->pending.push_back([self] { self->deliver(); });
            } else {
                deliver();
            }
            return;
        }
    } else {
        sent_ = total_;
    }
    if (dir_ == scsi::DataDir::ToDevice && disk_->timing == Timing::Async) {
        // The write reaches the medium later.
        auto self = std::static_pointer_cast<FakeRequest>(shared_from_this());
        disk_->pending.push_back([self] { self->complete(scsi::Status::Good); });
        return;
    }
    complete(scsi::Status::Good);
}

// ---- the bench ----
class LsiBench : public ::testing::Test {
protected:
    void SetUp() override {
        ram.assign(kRamSize, 0);
        ASSERT_TRUE(mem.set_host_region(0, ram.data(), kRamSize).ok());
        lsi = hw::make_lsi53c895a(work_queue(), "lsi0");
        lsi->attach_irq(&irq);
        lsi->attach_dma(&mem);
        lsi->config_write(0x10, kIoBase | 1, 4);
        lsi->config_write(0x14, kMmioBase, 4);
        lsi->config_write(0x18, kRamBarBase, 4);
        lsi->config_write(0x04, 0x0007, 2);
    }

    uint8_t rb(uint8_t off) { return static_cast<uint8_t>(lsi->bar_read(1, off, 1)); }
    uint16_t rw(uint8_t off) { return static_cast<uint16_t>(lsi->bar_read(1, off, 2)); }
    uint32_t rl(uint8_t off) { return static_cast<uint32_t>(lsi->bar_read(1, off, 4)); }
    void wb(uint8_t off, uint8_t v) { lsi->bar_write(1, off, v, 1); }
    void ww(uint8_t off, uint16_t v) { lsi->bar_write(1, off, v, 2); }
    void wl(uint8_t off, uint32_t v) { lsi->bar_write(1, off, v, 4); }

    void put32(uint64_t addr, uint32_t v) { std::memcpy(&ram[addr], &v, 4); }
    uint32_t get32(uint64_t addr) {
        uint32_t v;
        std::memcpy(&v, &ram[addr], 4);
        return v;
    }
    // Writes a program of dwords at addr.
    void prog(uint64_t addr, std::initializer_list<uint32_t> words) {
        for (uint32_t w : words) {
            put32(addr, w);
            addr += 4;
        }
    }
    void run(uint32_t dsp) { wl(L::kDsp, dsp); }
    // Pumps the event loop (and the disk) until `done` or a round limit;
    // with Driver::Manual, the ManualWorkQueue instead (no waiting at all).
    bool pump_until(const std::function<bool()>& done, int rounds = 2000) {
        for (int i = 0; i < rounds; i++) {
            if (done()) return true;
            if (disk) disk->pump();
            if (driver == Driver::Manual) (void)manual.run_until_idle(1000);
            else loop.run_once(1);
        }
        return done();
    }
    // What runs the controller's deferred work: the event loop, or a
    // ManualWorkQueue that only pump_until() advances. Set before SetUp().
    enum class Driver : uint8_t { Loop, Manual };
    WorkQueue& work_queue() { return driver == Driver::Manual ? static_cast<WorkQueue&>(manual) : loop; }
    bool stopped() { return !(rb(L::kIstat1) & L::kIstat1Srun); }
    void attach_disk(Timing t, unsigned id = 0) {
        disk = std::make_unique<FakeDisk>(loop, t);
        ASSERT_TRUE(lsi->bus().attach(id, disk.get()));
    }

    EventLoop loop;
    ManualWorkQueue manual;
    Driver driver = Driver::Loop;
    GuestMemory mem;
    std::vector<uint8_t> ram;
    FakeIrq irq;
    std::unique_ptr<hw::Lsi53c895a> lsi;
    std::unique_ptr<FakeDisk> disk;
};

}  // namespace lsitest
