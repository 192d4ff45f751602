#include "scsi/scsi_hd.h"

#include <cerrno>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "block/fault_inject.h"
#include "block_testutil.h"
#include "util/event_loop.h"

namespace mpq::scsi {
namespace {

using block::BlockBackend;
using block::DriveOptions;
using block::FaultInjectDriver;
using block::FaultOp;
using block::FaultRule;
using testutil::pattern;
using testutil::TempImage;

constexpr Sense kSense(uint8_t k, uint8_t a, uint8_t q) { return Sense{k, a, q}; }

struct Outcome {
    bool completed = false;
    Status status = Status::Good;
    uint32_t residual = 0;
    uint32_t expected = 0;
    DataDir dir = DataDir::None;
    std::vector<uint8_t> data;  // everything the device sent
    Sense sense{};
    int transfers = 0;
};

enum class Continue : uint8_t { Deferred, Inline, Manual };

// A minimal HBA: takes each data-in chunk, fills each data-out chunk from
// `out`, and continues from the event loop like a real controller would.
class FakeHba final : public RequestClient {
public:
    FakeHba(EventLoop& loop, Outcome& o, std::vector<uint8_t> out, Continue how)
        : loop_(loop), o_(o), out_(std::move(out)), how_(how) {}
    void transfer_data(Request& req, uint32_t len) override {
        ++o_.transfers;
        // start()'s expected length is already known at the first callback.
        EXPECT_LE(len, o_.expected);
        auto b = req.buffer();
        EXPECT_EQ(b.size(), len);
        if (req.dir() == DataDir::FromDevice) {
            o_.data.insert(o_.data.end(), b.begin(), b.begin() + len);
        } else {
            EXPECT_EQ(req.dir(), DataDir::ToDevice);
            for (uint32_t i = 0; i < len; ++i) b[i] = out_pos_ < out_.size() ? out_[out_pos_++] : 0;
        }
        auto self = req.shared_from_this();
        if (how_ == Continue::Manual) return;
        if (how_ == Continue::Inline) {
            req.continue_transfer();
        } else {
            loop_.defer([self] { self->continue_transfer(); });
        }
    }
    void command_complete(Request& req, Status st, uint32_t residual) override {
        EXPECT_FALSE(o_.completed) << "completed twice";
        o_.completed = true;
        o_.status = st;
        o_.residual = residual;
        if (st == Status::CheckCondition) o_.sense = req.sense();
    }

private:
    EventLoop& loop_;
    Outcome& o_;
    std::vector<uint8_t> out_;
    size_t out_pos_ = 0;
    Continue how_;
};

class ScsiHdTest : public ::testing::Test {
protected:
    void SetUp() override { open(4 << 20, ScsiHdProps{}); }

    void open(uint64_t size, ScsiHdProps props, block::ReadOnly ro = block::ReadOnly::No,
              bool faults = false) {
        dev_.reset();
        if (backend_) backend_->drain();
        backend_.reset();
        img_ = std::make_unique<TempImage>(size);
        DriveOptions o;
        o.id = "drive0";
        o.file = img_->path();
        o.format = "raw";
        o.read_only = ro;
        auto f = block::open_file(o);
        ASSERT_TRUE(f.ok());
        std::unique_ptr<block::BlockDriver> drv = std::move(f.value());
        fault_ = nullptr;
        if (faults) {
            auto fi = std::make_unique<FaultInjectDriver>(std::move(drv));
            fault_ = fi.get();
            drv = std::move(fi);
        }
        backend_ = std::make_unique<BlockBackend>(loop_, std::move(drv), o);
        if (props.id.empty()) props.id = "hd0";
        auto d = make_scsi_hd(loop_, *backend_, props);
        ASSERT_TRUE(d.ok()) << d.error().message;
        dev_ = std::move(d.value());
        // Clear the power-on unit attention.
        auto ua = run({0x03, 0, 0, 0, 18, 0});
        ASSERT_EQ(ua.data.size(), 18u);
        ASSERT_EQ(ua.data[2], 0x06);
        ASSERT_EQ(ua.data[12], 0x29);
    }

    void TearDown() override {
        dev_.reset();
        if (backend_) backend_->drain();
    }

    Outcome run(std::vector<uint8_t> cdb, std::vector<uint8_t> out = {}, unsigned lun = 0,
                Continue how = Continue::Deferred) {
        Outcome o;
        FakeHba hba(loop_, o, std::move(out), how);
        cdb.resize(std::max<size_t>(cdb.size(), 6));
        auto req = dev_->new_request(++tag_, lun, cdb, &hba);
        o.dir = req->start(&o.expected);
        for (int i = 0; i < 20000 && !o.completed; ++i) loop_.run_once(10);
        EXPECT_TRUE(o.completed);
        return o;
    }

    static void expect_sense(const Outcome& o, Sense s) {
        EXPECT_EQ(o.status, Status::CheckCondition);
        EXPECT_EQ(o.sense.key, s.key);
        EXPECT_EQ(o.sense.asc, s.asc);
        EXPECT_EQ(o.sense.ascq, s.ascq);
    }
    static void expect_good(const Outcome& o) {
        EXPECT_EQ(o.status, Status::Good)
            << std::hex << "sense " << int(o.sense.key) << "/" << int(o.sense.asc) << "/"
            << int(o.sense.ascq);
    }

    // Reads the sense data of the last CHECK CONDITION through REQUEST SENSE.
    Sense request_sense() {
        auto o = run({0x03, 0, 0, 0, 32, 0});
        EXPECT_EQ(o.status, Status::Good);
        if (o.data.size() < 18) {
            ADD_FAILURE() << "sense data of " << o.data.size() << " bytes";
            return {};
        }
        // Pending sense data is 18 bytes; NO SENSE is padded to the allocation length.
        bool none = o.data[2] == 0 && o.data[12] == 0 && o.data[13] == 0;
        EXPECT_EQ(o.data.size(), none ? 32u : 18u);
        EXPECT_EQ(o.data[0], 0x70);
        EXPECT_EQ(o.data[7], 10);
        return Sense{o.data[2], o.data[12], o.data[13]};
    }

    static std::vector<uint8_t> rw10(uint8_t opc, uint32_t lba, uint16_t n, uint8_t flags = 0) {
        return {opc, flags, uint8_t(lba >> 24), uint8_t(lba >> 16), uint8_t(lba >> 8), uint8_t(lba),
                0, uint8_t(n >> 8), uint8_t(n), 0};
    }
    static std::vector<uint8_t> rw16(uint8_t opc, uint64_t lba, uint32_t n, uint8_t flags = 0) {
        std::vector<uint8_t> c(16, 0);
        c[0] = opc;
        c[1] = flags;
        for (int i = 0; i < 8; ++i) c[2 + i] = uint8_t(lba >> (56 - 8 * i));
        for (int i = 0; i < 4; ++i) c[10 + i] = uint8_t(n >> (24 - 8 * i));
        return c;
    }

    EventLoop loop_;
    std::unique_ptr<TempImage> img_;
    std::unique_ptr<BlockBackend> backend_;
    std::unique_ptr<Device> dev_;
    FaultInjectDriver* fault_ = nullptr;
    uint32_t tag_ = 0;
};

TEST_F(ScsiHdTest, StandardInquiry) {
    auto o = run({0x12, 0, 0, 0, 36, 0});
    expect_good(o);
    EXPECT_EQ(o.dir, DataDir::FromDevice);
    ASSERT_EQ(o.data.size(), 36u);
    EXPECT_EQ(o.data[0], 0x00);
    EXPECT_EQ(o.data[1], 0x00);
    EXPECT_EQ(o.data[2], 5);
    EXPECT_EQ(o.data[3], 0x12);
    EXPECT_EQ(o.data[4], 31);
    EXPECT_EQ(o.data[7], 0x12);
    EXPECT_EQ(std::string(o.data.begin() + 8, o.data.begin() + 16), "QEMU    ");
    EXPECT_EQ(std::string(o.data.begin() + 16, o.data.begin() + 32), "QEMU HARDDISK   ");
    EXPECT_EQ(std::string(o.data.begin() + 32, o.data.begin() + 36), "2.5+");
    EXPECT_EQ(o.residual, 0u);

    // Exactly the allocation length, zero padded; additional length follows it.
    o = run({0x12, 0, 0, 0, 96, 0});
    ASSERT_EQ(o.data.size(), 96u);
    EXPECT_EQ(o.data[4], 91);
    for (size_t i = 36; i < 96; ++i) EXPECT_EQ(o.data[i], 0);
    o = run({0x12, 0, 0, 0, 5, 0});
    EXPECT_EQ(o.data.size(), 5u);
    o = run({0x12, 0, 0, 0, 0, 0});
    expect_good(o);
    EXPECT_EQ(o.transfers, 0);

    expect_sense(run({0x12, 0, 0x80, 0, 36, 0}), kInvalidField);  // page without EVPD
    expect_sense(run({0x12, 0x02, 0, 0, 36, 0}), kInvalidField);  // CmdDt
}

TEST_F(ScsiHdTest, AllocationLengthOver64KiBIsRejected) {
    // INQUIRY carries only 16 bits; REPORT LUNS and READ CAPACITY(16) 32.
    expect_sense(run({0xa0, 0, 0, 0, 0, 0, 0x00, 0x01, 0x00, 0x01, 0, 0}), kInvalidField);
    std::vector<uint8_t> rc16(16, 0);
    rc16[0] = 0x9e;
    rc16[1] = 0x10;
    rc16[11] = 0x01;
    rc16[12] = 0x00;
    rc16[13] = 0x01;  // 65537
    expect_sense(run(rc16), kInvalidField);
}

TEST_F(ScsiHdTest, VpdPages) {
    ScsiHdProps p;
    p.serial = "SER123";
    p.wwn = 0x5000c50015ea71acull;
    open(4 << 20, p);
    auto o = run({0x12, 1, 0x00, 0, 255, 0});
    expect_good(o);
    ASSERT_EQ(o.data.size(), 255u);
    EXPECT_EQ(o.data[1], 0x00);
    EXPECT_EQ(o.data[3], 6);
    EXPECT_EQ(std::vector<uint8_t>(o.data.begin() + 4, o.data.begin() + 10),
              (std::vector<uint8_t>{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}));

    o = run({0x12, 1, 0x80, 0, 255, 0});
    EXPECT_EQ(o.data[3], 6);
    EXPECT_EQ(std::string(o.data.begin() + 4, o.data.begin() + 10), "SER123");

    o = run({0x12, 1, 0x83, 0, 255, 0});
    // ASCII designator (the serial), then NAA.
    EXPECT_EQ(o.data[3], 4 + 6 + 4 + 8);
    EXPECT_EQ(o.data[4], 0x02);
    EXPECT_EQ(o.data[7], 6);
    EXPECT_EQ(std::string(o.data.begin() + 8, o.data.begin() + 14), "SER123");
    EXPECT_EQ(o.data[14], 0x01);
    EXPECT_EQ(o.data[15], 0x03);
    EXPECT_EQ(o.data[17], 8);
    EXPECT_EQ(o.data[18], 0x50);
    EXPECT_EQ(o.data[25], 0xac);

    o = run({0x12, 1, 0xb0, 0, 255, 0});
    EXPECT_EQ(o.data[3], 0x3c);
    EXPECT_EQ(o.data[4], 0x01);  // WSNZ
    uint32_t max_xfer = uint32_t(o.data[8]) << 24 | o.data[9] << 16 | o.data[10] << 8 | o.data[11];
    EXPECT_EQ(max_xfer, 4u * 1024 * 1024 / 512);
    EXPECT_EQ(o.data[27], 255);  // max unmap descriptors

    o = run({0x12, 1, 0xb1, 0, 255, 0});
    EXPECT_EQ(o.data[3], 0x3c);

    p.max_io_size = 1 << 20;
    open(4 << 20, p);
    o = run({0x12, 1, 0xb0, 0, 255, 0});
    max_xfer = uint32_t(o.data[8]) << 24 | o.data[9] << 16 | o.data[10] << 8 | o.data[11];
    EXPECT_EQ(max_xfer, 2048u);
    o = run({0x12, 1, 0xb2, 0, 255, 0});
    EXPECT_EQ(o.data[3], 4);
    EXPECT_EQ(o.data[5], 0xe0);
    EXPECT_EQ(o.data[6], 0x02);

    expect_sense(run({0x12, 1, 0x99, 0, 255, 0}), kInvalidField);
}

TEST_F(ScsiHdTest, VpdWithoutSerial) {
    auto o = run({0x12, 1, 0x00, 0, 255, 0});
    EXPECT_EQ(o.data[3], 5);
    EXPECT_EQ(o.data[5], 0x83);
    expect_sense(run({0x12, 1, 0x80, 0, 255, 0}), kInvalidField);
    // Without serial the ASCII designator is the drive name; no NAA without wwn.
    o = run({0x12, 1, 0x83, 0, 255, 0});
    EXPECT_EQ(o.data[3], 4 + 6);
    EXPECT_EQ(std::string(o.data.begin() + 8, o.data.begin() + 14), "drive0");
}

TEST_F(ScsiHdTest, UnitAttentionAfterReset) {
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    dev_->reset();
    // INQUIRY and REPORT LUNS pass through a pending unit attention.
    expect_good(run({0x12, 0, 0, 0, 36, 0}));
    expect_good(run({0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}));
    auto o = run({0x00, 0, 0, 0, 0, 0});
    expect_sense(o, kResetOccurred);
    EXPECT_EQ(o.dir, DataDir::None);
    Sense s = request_sense();
    EXPECT_EQ(s.key, 0x06);
    EXPECT_EQ(s.asc, 0x29);
    EXPECT_EQ(s.ascq, 0x00);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    s = request_sense();
    EXPECT_EQ(s.key, 0);
    EXPECT_EQ(s.asc, 0);
}

TEST_F(ScsiHdTest, RequestSenseClearsPendingUnitAttentionDirectly) {
    dev_->reset();
    Sense s = request_sense();
    EXPECT_EQ(s.key, 0x06);
    EXPECT_EQ(s.asc, 0x29);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
}

TEST_F(ScsiHdTest, RequestSenseReturnsLastErrorOnceAndShortTransfer) {
    expect_sense(run({0xff, 0, 0, 0, 0, 0}), kInvalidOpcode);
    auto o = run({0x03, 0, 0, 0, 32, 0});
    expect_good(o);
    EXPECT_EQ(o.expected, 32u);
    ASSERT_EQ(o.data.size(), 18u);
    EXPECT_EQ(o.residual, 14u);
    EXPECT_EQ(o.data[2], 0x05);
    EXPECT_EQ(o.data[12], 0x20);
    Sense s = request_sense();
    EXPECT_EQ(s.key, 0);
    // Descriptor format on request.
    expect_sense(run({0x28, 0xe0, 0, 0, 0, 0, 0, 0, 1, 0}), kInvalidField);
    o = run({0x03, 0x01, 0, 0, 32, 0});
    ASSERT_EQ(o.data.size(), 8u);
    EXPECT_EQ(o.data[0], 0x72);
    EXPECT_EQ(o.data[1], 0x05);
    EXPECT_EQ(o.data[2], 0x24);
}

// REQUEST SENSE with nothing pending answers NO SENSE padded with zeros to
// the allocation length (as stock QEMU's scsi-hd); pending sense data goes
// out as its 18 bytes (see the test above).
TEST_F(ScsiHdTest, RequestSenseNoSensePaddedToAllocationLength) {
    auto o = run({0x03, 0, 0, 0, 96, 0});
    expect_good(o);
    ASSERT_EQ(o.data.size(), 96u);
    EXPECT_EQ(o.residual, 0u);
    EXPECT_EQ(o.data[0], 0x70);
    EXPECT_EQ(o.data[2], 0x00);
    EXPECT_EQ(o.data[7], 10);
    for (size_t i = 18; i < o.data.size(); i++) EXPECT_EQ(o.data[i], 0) << i;
    expect_sense(run({0xff, 0, 0, 0, 0, 0}), kInvalidOpcode);
    o = run({0x03, 0, 0, 0, 96, 0});
    EXPECT_EQ(o.data.size(), 18u);
}

// Sense data is kept only until the next command: a REQUEST SENSE after
// an intervening command reports NO SENSE (as stock QEMU's scsi-hd).
TEST_F(ScsiHdTest, SenseDataClearedByTheNextCommand) {
    expect_sense(run({0xff, 0, 0, 0, 0, 0}), kInvalidOpcode);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    Sense s = request_sense();
    EXPECT_EQ(s.key, 0);
    EXPECT_EQ(s.asc, 0);
    dev_->reset();
    expect_sense(run({0x00, 0, 0, 0, 0, 0}), kResetOccurred);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    s = request_sense();
    EXPECT_EQ(s.key, 0);
    EXPECT_EQ(s.asc, 0);
}

// The device's unit attention goes to the first command that is not
// INQUIRY, REPORT LUNS or REQUEST SENSE, even one for a LUN it does not
// have (as stock QEMU's scsi-hd); LUN 0 then runs without it.
TEST_F(ScsiHdTest, UnitAttentionReportedToAnyLun) {
    dev_->reset();
    expect_sense(run({0x00, 0, 0, 0, 0, 0}, {}, 1), kResetOccurred);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    expect_sense(run({0x00, 0, 0, 0, 0, 0}, {}, 1), kLunNotSupported);
}

// block_resize: the backend grows, the disk raises CAPACITY DATA HAS
// CHANGED once, and READ CAPACITY reports the new size.
TEST_F(ScsiHdTest, CapacityChangeAfterResize) {
    ASSERT_TRUE(backend_->resize(8 << 20).ok());
    dev_->capacity_changed();
    expect_good(run({0x12, 0, 0, 0, 36, 0}));  // INQUIRY passes a unit attention
    auto o = run({0x00, 0, 0, 0, 0, 0});
    expect_sense(o, kCapacityChanged);
    Sense s = request_sense();
    EXPECT_EQ(s.key, 0x06);
    EXPECT_EQ(s.asc, 0x2a);
    EXPECT_EQ(s.ascq, 0x09);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    o = run({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    expect_good(o);
    EXPECT_EQ(o.data, (std::vector<uint8_t>{0, 0, 0x3f, 0xff, 0, 0, 0x02, 0x00}));

    // A pending reset outranks it: one unit attention (the reset's), then none.
    dev_->reset();
    dev_->capacity_changed();
    expect_sense(run({0x00, 0, 0, 0, 0, 0}), kResetOccurred);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    // ... and a reset replaces a pending capacity change.
    dev_->capacity_changed();
    dev_->reset();
    expect_sense(run({0x00, 0, 0, 0, 0, 0}), kResetOccurred);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    // REQUEST SENSE reports and clears it directly.
    dev_->capacity_changed();
    s = request_sense();
    EXPECT_EQ(s.asc, 0x2a);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
}

// Hot-plugged: REPORTED LUNS DATA HAS CHANGED instead of the power-on unit
// attention, once; a reset later outranks it.
TEST_F(ScsiHdTest, HotpluggedDiskReportsLunsChanged) {
    dev_->reset();
    dev_->hotplugged();
    expect_good(run({0x12, 0, 0, 0, 36, 0}));  // INQUIRY passes
    expect_sense(run({0x00, 0, 0, 0, 0, 0}), kReportedLunsChanged);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
    dev_->hotplugged();
    Sense s = request_sense();
    EXPECT_EQ(s.key, 0x06);
    EXPECT_EQ(s.asc, 0x3f);
    EXPECT_EQ(s.ascq, 0x0e);
    dev_->hotplugged();
    dev_->reset();
    expect_sense(run({0x00, 0, 0, 0, 0, 0}), kResetOccurred);
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
}

// Unplug while a WRITE waits for the HBA's next chunk: the request ends now
// with CHECK CONDITION, ABORTED COMMAND (not acknowledged), and the HBA is
// never left waiting; a later continue from a confused HBA is ignored.
TEST_F(ScsiHdTest, UnplugFailsRequestsStillOpen) {
    Outcome o;
    FakeHba hba(loop_, o, pattern(512 * 512, 9), Continue::Manual);
    auto req = dev_->new_request(1, 0, rw10(0x2a, 0, 512), &hba);
    EXPECT_EQ(req->start(&o.expected), DataDir::ToDevice);
    EXPECT_EQ(o.transfers, 1);
    EXPECT_FALSE(o.completed);
    backend_->drain();
    dev_->unplug(kCommandAborted);
    ASSERT_TRUE(o.completed);
    expect_sense(o, kCommandAborted);
    req->continue_transfer();
    for (int i = 0; i < 10; ++i) loop_.run_once(1);
    EXPECT_EQ(o.transfers, 1);
    dev_.reset();  // the HBA may keep its reference past the device
    EXPECT_EQ(req->sense().key, 0x0b);
}

TEST_F(ScsiHdTest, ReadCapacity) {
    auto o = run({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    expect_good(o);
    ASSERT_EQ(o.data.size(), 8u);
    EXPECT_EQ(o.data, (std::vector<uint8_t>{0, 0, 0x1f, 0xff, 0, 0, 0x02, 0x00}));
    expect_sense(run({0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0}), kInvalidField);  // LBA without PMI

    std::vector<uint8_t> c(16, 0);
    c[0] = 0x9e;
    c[1] = 0x10;
    c[13] = 32;
    o = run(c);
    expect_good(o);
    ASSERT_EQ(o.data.size(), 32u);
    EXPECT_EQ(o.data[6], 0x1f);
    EXPECT_EQ(o.data[7], 0xff);
    EXPECT_EQ(o.data[10], 0x02);
    EXPECT_EQ(o.data[14], 0x80);  // TPE
    c[1] = 0x11;
    expect_sense(run(c), kInvalidField);
}

TEST_F(ScsiHdTest, ReadCapacity4096) {
    ScsiHdProps p;
    p.logical_block_size = 4096;
    open(4 << 20, p);
    auto o = run({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    EXPECT_EQ(o.data, (std::vector<uint8_t>{0, 0, 0x03, 0xff, 0, 0, 0x10, 0x00}));
}

TEST_F(ScsiHdTest, ModeSense) {
    // Linux: MODE SENSE(6) all pages, 4 bytes (header only).
    auto o = run({0x1a, 0, 0x3f, 0, 4, 0});
    expect_good(o);
    ASSERT_EQ(o.data.size(), 4u);
    EXPECT_EQ(o.data[0], 3 + 8 + 12 + 24 + 32 + 20);
    EXPECT_EQ(o.data[2], 0x00);  // writable
    EXPECT_EQ(o.data[3], 8);

    o = run({0x1a, 0, 0x08, 0, 255, 0});
    ASSERT_EQ(o.data.size(), 255u);
    EXPECT_EQ(o.data[0], 3 + 8 + 20);
    // block descriptor: 8192 blocks of 512
    EXPECT_EQ(o.data[4 + 2], 0x20);
    EXPECT_EQ(o.data[4 + 6], 0x02);
    EXPECT_EQ(o.data[12], 0x08);
    EXPECT_EQ(o.data[13], 0x12);
    EXPECT_EQ(o.data[14] & 0x04, 0x04);  // WCE

    // DBD, MODE SENSE(10)
    o = run({0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 28, 0});
    ASSERT_EQ(o.data.size(), 28u);
    EXPECT_EQ(o.data[1], 8 + 20 - 2);
    EXPECT_EQ(o.data[7], 0);
    EXPECT_EQ(o.data[8], 0x08);

    // Changeable values: only WCE.
    o = run({0x1a, 0x08, 0x40 | 0x08, 0, 255, 0});
    EXPECT_EQ(o.data[4], 0x08);
    EXPECT_EQ(o.data[6], 0x04);
    for (int i = 7; i < 24; ++i) EXPECT_EQ(o.data[i], 0) << i;

    expect_sense(run({0x1a, 0, 0xc0 | 0x08, 0, 255, 0}), kSense(0x05, 0x39, 0x00));
    expect_sense(run({0x1a, 0, 0x0a, 0, 255, 0}), kInvalidField);  // control page
    expect_sense(run({0x1a, 0, 0x08, 0x01, 255, 0}), kInvalidField);
    o = run({0x1a, 0, 0x3f, 0, 255, 0});
    ASSERT_GE(o.data.size(), 12u + 12 + 24 + 32 + 20);
    EXPECT_EQ(o.data[12], 0x01);
    EXPECT_EQ(o.data[24], 0x04);
    EXPECT_EQ(o.data[48], 0x05);
    EXPECT_EQ(o.data[80], 0x08);

    // Rigid disk geometry page: step rate 200 and landing zone FFFFFFh, the
    // values stock QEMU's scsi-hd reports.
    o = run({0x1a, 0x08, 0x04, 0, 255, 0});
    ASSERT_GE(o.data.size(), 4u + 24);
    EXPECT_EQ(o.data[4], 0x04);
    EXPECT_EQ(std::vector<uint8_t>(o.data.begin() + 4 + 12, o.data.begin() + 4 + 17),
              (std::vector<uint8_t>{0x00, 0xc8, 0xff, 0xff, 0xff}));

    // Flexible disk page: the cylinder count also as write precompensation
    // and reduced write current start, and one unit of step rate, step
    // pulse width, head settle and motor on/off delay, as stock QEMU has it.
    o = run({0x1a, 0x08, 0x05, 0, 255, 0});
    ASSERT_GE(o.data.size(), 4u + 32);
    const uint8_t* f = &o.data[4];
    EXPECT_EQ(f[0], 0x05);
    EXPECT_EQ(f[1], 0x1e);
    const uint16_t cyl = uint16_t(f[8] << 8 | f[9]);
    EXPECT_NE(cyl, 0);
    EXPECT_EQ(uint16_t(f[10] << 8 | f[11]), cyl);
    EXPECT_EQ(uint16_t(f[12] << 8 | f[13]), cyl);
    EXPECT_EQ(std::vector<uint8_t>(f + 14, f + 21), (std::vector<uint8_t>{0, 1, 1, 0, 1, 1, 1}));
    EXPECT_EQ(uint16_t(f[28] << 8 | f[29]), 5400);
}

TEST_F(ScsiHdTest, ModeSenseReadOnly) {
    open(1 << 20, ScsiHdProps{}, block::ReadOnly::Yes);
    auto o = run({0x1a, 0, 0x3f, 0, 4, 0});
    EXPECT_EQ(o.data[2], 0x80);
}

std::vector<uint8_t> caching_page(bool wce) {
    std::vector<uint8_t> p(20, 0);
    p[0] = 0x08;
    p[1] = 0x12;
    p[2] = wce ? 0x04 : 0;
    return p;
}

TEST_F(ScsiHdTest, ModeSelectWriteCache) {
    std::vector<uint8_t> list = {0, 0, 0, 0};
    auto pg = caching_page(false);
    list.insert(list.end(), pg.begin(), pg.end());
    auto o = run({0x15, 0x10, 0, 0, uint8_t(list.size()), 0}, list);
    expect_good(o);
    EXPECT_EQ(o.dir, DataDir::ToDevice);
    o = run({0x1a, 0x08, 0x08, 0, 255, 0});
    EXPECT_EQ(o.data[6] & 0x04, 0);

    // With the cache off every write is flushed before GOOD.
    uint64_t flushes = backend_->stats().flush_ops;
    expect_good(run(rw10(0x2a, 0, 1), pattern(512, 1)));
    EXPECT_EQ(backend_->stats().flush_ops, flushes + 1);

    // Back on via MODE SELECT(10).
    std::vector<uint8_t> l10 = {0, 0, 0, 0, 0, 0, 0, 0};
    pg = caching_page(true);
    l10.insert(l10.end(), pg.begin(), pg.end());
    expect_good(run({0x55, 0x10, 0, 0, 0, 0, 0, 0, uint8_t(l10.size()), 0}, l10));
    o = run({0x1a, 0x08, 0x08, 0, 255, 0});
    EXPECT_EQ(o.data[6] & 0x04, 0x04);
    flushes = backend_->stats().flush_ops;
    expect_good(run(rw10(0x2a, 0, 1), pattern(512, 1)));
    EXPECT_EQ(backend_->stats().flush_ops, flushes);
}

TEST_F(ScsiHdTest, ModeSelectValidation) {
    auto list_with = [](std::vector<uint8_t> bd, std::vector<uint8_t> page) {
        std::vector<uint8_t> l = {0, 0, 0, uint8_t(bd.size())};
        l.insert(l.end(), bd.begin(), bd.end());
        l.insert(l.end(), page.begin(), page.end());
        return l;
    };
    auto sel = [&](std::vector<uint8_t> l, uint8_t b1 = 0x10) {
        return run({0x15, b1, 0, 0, uint8_t(l.size()), 0}, l);
    };
    // SP=1 and PF=0 are refused once the list has come in (a DATA OUT
    // phase, as in stock QEMU).
    auto sp = sel(list_with({}, caching_page(true)), 0x11);
    expect_sense(sp, kInvalidField);
    EXPECT_EQ(sp.dir, DataDir::ToDevice);
    expect_sense(sel(list_with({}, caching_page(true)), 0x00), kInvalidField);  // PF=0
    // A byte that is not changeable.
    auto pg = caching_page(true);
    pg[3] = 0x80;
    expect_sense(sel(list_with({}, pg)), kInvalidParamList);
    // Wrong page length, unknown page, truncated list.
    pg = caching_page(true);
    pg[1] = 0x10;
    pg.resize(18);
    expect_sense(sel(list_with({}, pg)), kInvalidParamList);
    expect_sense(sel(list_with({}, {0x0a, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})), kInvalidParamList);
    expect_sense(sel(list_with({}, {0x08, 0x12, 0x04})), kSense(0x05, 0x1a, 0x00));
    // Block descriptor: CVE-2023-42467, sizes that are not 512-multiples.
    for (uint32_t bs : {1u, 256u, 511u, 513u, 1000u}) {
        std::vector<uint8_t> bd = {0, 0, 0, 0, 0, uint8_t(bs >> 16), uint8_t(bs >> 8), uint8_t(bs)};
        expect_sense(sel(list_with(bd, {})), kInvalidParamList);
    }
    auto o = run({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    EXPECT_EQ(o.data[6], 0x02);  // still 512
    // A valid block size change is applied (and 0 = keep).
    std::vector<uint8_t> bd = {0, 0, 0, 0, 0, 0, 0x10, 0x00};
    expect_good(sel(list_with(bd, {})));
    o = run({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    EXPECT_EQ(o.data, (std::vector<uint8_t>{0, 0, 0x03, 0xff, 0, 0, 0x10, 0x00}));
    bd = {0, 0, 0, 0, 0, 0, 0, 0};
    expect_good(sel(list_with(bd, {})));
    // Zero-length parameter list: nothing to do.
    expect_good(run({0x15, 0x10, 0, 0, 0, 0}));
}

TEST_F(ScsiHdTest, WriteThenReadRoundTripReachesTheImage) {
    auto data = pattern(8 * 512, 7);
    auto o = run(rw10(0x2a, 100, 8), data);
    expect_good(o);
    EXPECT_EQ(o.dir, DataDir::ToDevice);
    EXPECT_EQ(o.expected, 4096u);
    EXPECT_EQ(o.residual, 0u);
    EXPECT_EQ(img_->read(100 * 512, 4096), data);
    o = run(rw10(0x28, 100, 8));
    expect_good(o);
    EXPECT_EQ(o.dir, DataDir::FromDevice);
    EXPECT_EQ(o.data, data);
    EXPECT_EQ(backend_->stats().wr_bytes, 4096u);
    EXPECT_EQ(backend_->stats().rd_bytes, 4096u);
}

TEST_F(ScsiHdTest, AllReadWriteForms) {
    auto a = pattern(512, 1), b = pattern(1024, 2), c = pattern(1536, 3);
    expect_good(run({0x0a, 0, 0, 5, 1, 0}, a));  // WRITE(6)
    EXPECT_EQ(img_->read(5 * 512, 512), a);
    auto o = run({0x08, 0, 0, 5, 1, 0});  // READ(6)
    EXPECT_EQ(o.data, a);
    std::vector<uint8_t> w12 = {0xaa, 0, 0, 0, 0, 10, 0, 0, 0, 2, 0, 0};
    expect_good(run(w12, b));
    EXPECT_EQ(img_->read(10 * 512, 1024), b);
    std::vector<uint8_t> r12 = {0xa8, 0, 0, 0, 0, 10, 0, 0, 0, 2, 0, 0};
    EXPECT_EQ(run(r12).data, b);
    expect_good(run(rw16(0x8a, 20, 3), c));
    EXPECT_EQ(img_->read(20 * 512, 1536), c);
    EXPECT_EQ(run(rw16(0x88, 20, 3)).data, c);
    // WRITE AND VERIFY flushes; FUA flushes.
    uint64_t f0 = backend_->stats().flush_ops;
    expect_good(run(rw10(0x2e, 30, 1), a));
    EXPECT_EQ(backend_->stats().flush_ops, f0 + 1);
    expect_good(run(rw10(0x2a, 31, 1, 0x08), a));
    EXPECT_EQ(backend_->stats().flush_ops, f0 + 2);
    EXPECT_EQ(img_->read(30 * 512, 512), a);
    EXPECT_EQ(img_->read(31 * 512, 512), a);
    // Transfer length 0: no data, GOOD.
    o = run(rw10(0x28, 0, 0));
    expect_good(o);
    EXPECT_EQ(o.transfers, 0);
}

TEST_F(ScsiHdTest, Read6LengthZeroMeans256) {
    auto o = run({0x08, 0, 0, 0, 0, 0});
    expect_good(o);
    EXPECT_EQ(o.data.size(), 256u * 512);
}

TEST_F(ScsiHdTest, LargeTransfersMoveInChunks) {
    const uint32_t n = 1000;  // 500 KiB: four chunks
    auto data = pattern(n * 512, 8);
    auto o = run(rw10(0x2a, 7, n), data);
    expect_good(o);
    EXPECT_EQ(o.transfers, 4);
    EXPECT_EQ(img_->read(7 * 512, n * 512), data);
    o = run(rw10(0x28, 7, n));
    expect_good(o);
    EXPECT_EQ(o.transfers, 4);
    EXPECT_EQ(o.data, data);
    // Inline continuation (the HBA continues from inside transfer_data).
    o = run(rw10(0x28, 7, n), {}, 0, Continue::Inline);
    EXPECT_EQ(o.data, data);
    auto data2 = pattern(n * 512, 9);
    expect_good(run(rw10(0x2a, 7, n), data2, 0, Continue::Inline));
    EXPECT_EQ(img_->read(7 * 512, n * 512), data2);
}

TEST_F(ScsiHdTest, BlockSize4096) {
    ScsiHdProps p;
    p.logical_block_size = 4096;
    open(4 << 20, p);
    auto data = pattern(2 * 4096, 10);
    expect_good(run(rw10(0x2a, 3, 2), data));
    EXPECT_EQ(img_->read(3 * 4096, 8192), data);
    EXPECT_EQ(run(rw10(0x28, 3, 2)).data, data);
    expect_sense(run(rw10(0x28, 1023, 2)), kLbaOutOfRange);
    expect_good(run(rw10(0x28, 1023, 1)));
}

TEST_F(ScsiHdTest, LbaRangeAndProtectionChecks) {
    // 8192 blocks: the last one is readable, one past is not.
    expect_good(run(rw10(0x28, 8191, 1)));
    expect_sense(run(rw10(0x28, 8191, 2)), kLbaOutOfRange);
    expect_sense(run(rw10(0x28, 8192, 1)), kLbaOutOfRange);
    expect_sense(run(rw16(0x88, ~0ull, 2)), kLbaOutOfRange);  // overflow
    expect_sense(run(rw16(0x8a, 8000, 0xffffffff)), kLbaOutOfRange);
    expect_sense(run(rw10(0x28, 0, 1, 0x20)), kInvalidField);  // RDPROTECT
    expect_sense(run(rw10(0x2a, 0, 1, 0x40)), kInvalidField);  // WRPROTECT
    EXPECT_EQ(img_->read(0, 512), std::vector<uint8_t>(512, 0));
}

TEST_F(ScsiHdTest, ReadOnlyDriveRefusesWrites) {
    open(1 << 20, ScsiHdProps{}, block::ReadOnly::Yes);
    auto o = run(rw10(0x2a, 0, 1), pattern(512, 1));
    expect_sense(o, kWriteProtected);
    EXPECT_EQ(o.transfers, 0);
    expect_good(run(rw10(0x28, 0, 1)));
    EXPECT_EQ(img_->read(0, 512), std::vector<uint8_t>(512, 0));
}

TEST_F(ScsiHdTest, HostIoErrorsBecomeSense) {
    open(1 << 20, ScsiHdProps{}, block::ReadOnly::No, true);
    fault_->add_rule({FaultOp::Read, 4096, 512, EIO, 0, -1});
    auto o = run(rw10(0x28, 8, 1));
    expect_sense(o, kReadError);
    Sense s = request_sense();
    EXPECT_EQ(s.key, 0x03);
    EXPECT_EQ(s.asc, 0x11);
    expect_good(run(rw10(0x28, 0, 1)));

    fault_->add_rule({FaultOp::Write, 0, UINT64_MAX, EIO, 0, 1});
    expect_sense(run(rw10(0x2a, 0, 1), pattern(512, 2)), kWriteError);
    fault_->add_rule({FaultOp::Write, 0, UINT64_MAX, ENOSPC, 0, 1});
    expect_sense(run(rw10(0x2a, 0, 1), pattern(512, 2)), kSpaceExhausted);
    fault_->add_rule({FaultOp::Flush, 0, 0, EIO, 0, 1});
    expect_sense(run({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}), kWriteError);
    // A failure in the middle of a multi-chunk write.
    fault_->add_rule({FaultOp::Write, 0, 1, EIO, 0, 1});  // the first chunk
    auto big = run(rw10(0x2a, 0, 1000), pattern(1000 * 512, 3));
    expect_sense(big, kWriteError);
    EXPECT_GT(big.residual, 0u);
    // Still alive.
    expect_good(run({0x00, 0, 0, 0, 0, 0}));
}

TEST_F(ScsiHdTest, SynchronizeCacheFlushes) {
    uint64_t f0 = backend_->stats().flush_ops;
    auto o = run({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    expect_good(o);
    EXPECT_EQ(o.dir, DataDir::None);
    EXPECT_EQ(backend_->stats().flush_ops, f0 + 1);
    std::vector<uint8_t> c16(16, 0);
    c16[0] = 0x91;
    expect_good(run(c16));
    EXPECT_EQ(backend_->stats().flush_ops, f0 + 2);
}

TEST_F(ScsiHdTest, MiscCommands) {
    expect_good(run({0x1b, 0, 0, 0, 1, 0}));  // START STOP UNIT
    expect_good(run({0x1e, 0, 0, 0, 1, 0}));  // PREVENT ALLOW
    expect_good(run({0x16, 0, 0, 0, 0, 0}));
    expect_good(run({0x17, 0, 0, 0, 0, 0}));
    expect_good(run({0x2b, 0, 0, 0, 0, 10, 0, 0, 0, 0}));  // SEEK(10)
    expect_sense(run({0x2b, 0, 0, 0, 0x20, 0, 0, 0, 0, 0}), kLbaOutOfRange);
    expect_good(run({0x2f, 0, 0, 0, 0, 0, 0, 0, 8, 0}));  // VERIFY(10)
    expect_sense(run({0x2f, 0x02, 0, 0, 0, 0, 0, 0, 8, 0}), kInvalidField);
    expect_sense(run({0x2f, 0, 0, 0, 0x20, 0, 0, 0, 8, 0}), kLbaOutOfRange);
    expect_sense(run({0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0}), kInvalidOpcode);  // REPORT OPCODES
    expect_sense(run({0x4d, 0, 0, 0, 0, 0, 0, 0, 0xff, 0}), kInvalidOpcode);  // LOG SENSE
    expect_sense(run({0xc0, 0, 0, 0, 0, 0}), kInvalidOpcode);
}

TEST_F(ScsiHdTest, ShortCdbIsRejectedWithoutReadingPastIt) {
    Outcome o;
    FakeHba hba(loop_, o, {}, Continue::Deferred);
    std::vector<uint8_t> cdb = {0x28, 0, 0, 0};  // READ(10) needs 10 bytes
    auto req = dev_->new_request(1, 0, cdb, &hba);
    EXPECT_EQ(req->start(&o.expected), DataDir::None);
    ASSERT_TRUE(o.completed);
    expect_sense(o, kInvalidOpcode);
}

TEST_F(ScsiHdTest, ReportLunsAndOtherLuns) {
    auto o = run({0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0});
    expect_good(o);
    ASSERT_EQ(o.data.size(), 16u);
    EXPECT_EQ(o.data[3], 8);
    for (int i = 8; i < 16; ++i) EXPECT_EQ(o.data[i], 0);
    o = run({0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0});
    o = run({0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x00, 0, 0});
    EXPECT_EQ(o.residual, 4096u - 16);
    expect_sense(run({0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}), kInvalidField);  // alloc < 16
    expect_sense(run({0xa0, 0, 3, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}), kInvalidField);

    // LUN 1 does not exist.
    o = run({0x12, 0, 0, 0, 96, 0}, {}, 1);
    expect_good(o);
    ASSERT_EQ(o.data.size(), 36u);
    EXPECT_EQ(o.data[0], 0x7f);
    // Only the peripheral byte, as stock QEMU's target answers for a LUN
    // other than 0: no vendor, product or version there.
    EXPECT_EQ(std::vector<uint8_t>(o.data.begin() + 1, o.data.end()), std::vector<uint8_t>(35, 0));
    expect_sense(run({0x00, 0, 0, 0, 0, 0}, {}, 1), kLunNotSupported);
    expect_sense(run(rw10(0x28, 0, 1), {}, 1), kLunNotSupported);
    // REPORT LUNS too, as stock QEMU answers it for a LUN that is not
    // there: no data, CHECK CONDITION.
    o = run({0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, {}, 1);
    expect_sense(o, kLunNotSupported);
    EXPECT_TRUE(o.data.empty());
    o = run({0x03, 0, 0, 0, 18, 0}, {}, 1);
    expect_good(o);
    EXPECT_EQ(o.data[2], 0x05);
    EXPECT_EQ(o.data[12], 0x25);
    // Unit attention belongs to LUN 0 only.
    dev_->reset();
    o = run({0x12, 0, 0, 0, 36, 0}, {}, 1);
    EXPECT_EQ(o.data[0], 0x7f);
    expect_sense(run({0x00, 0, 0, 0, 0, 0}), kResetOccurred);
}

TEST_F(ScsiHdTest, UnmapAndWriteSame) {
    auto fill = pattern(64 * 512, 11);
    expect_good(run(rw10(0x2a, 0, 64), fill));
    // UNMAP blocks 8..15 and 40..41.
    std::vector<uint8_t> list(8 + 32, 0);
    list[1] = 6 + 32;
    list[3] = 32;
    list[8 + 7] = 8;
    list[8 + 11] = 8;
    list[24 + 7] = 40;
    list[24 + 11] = 2;
    uint64_t u0 = backend_->stats().unmap_ops;
    auto o = run({0x42, 0, 0, 0, 0, 0, 0, 0, uint8_t(list.size()), 0}, list);
    expect_good(o);
    EXPECT_EQ(backend_->stats().unmap_ops, u0 + 2);
    EXPECT_EQ(img_->read(8 * 512, 8 * 512), std::vector<uint8_t>(8 * 512, 0));
    EXPECT_EQ(img_->read(7 * 512, 512), std::vector<uint8_t>(fill.begin() + 7 * 512, fill.begin() + 8 * 512));
    // Bad lists.
    // ANCHOR is refused after the parameter list came in (a DATA OUT
    // phase, as in stock QEMU), and nothing is unmapped.
    uint64_t u1 = backend_->stats().unmap_ops;
    o = run({0x42, 1, 0, 0, 0, 0, 0, 0, uint8_t(list.size()), 0}, list);
    expect_sense(o, kInvalidField);
    EXPECT_EQ(o.dir, DataDir::ToDevice);
    EXPECT_EQ(backend_->stats().unmap_ops, u1);
    auto bad = list;
    bad[3] = 33;
    expect_sense(run({0x42, 0, 0, 0, 0, 0, 0, 0, uint8_t(bad.size()), 0}, bad),
                 kSense(0x05, 0x1a, 0x00));
    bad = list;
    bad[8 + 5] = 0x40;  // LBA 0x400000 > capacity
    expect_sense(run({0x42, 0, 0, 0, 0, 0, 0, 0, uint8_t(bad.size()), 0}, bad), kLbaOutOfRange);
    expect_good(run({0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0}));

    // WRITE SAME(10) with a pattern block, WRITE SAME(16) with zeroes, NDOB.
    auto blk = pattern(512, 12);
    expect_good(run({0x41, 0, 0, 0, 0, 50, 0, 0, 4, 0}, blk));
    for (int i = 0; i < 4; ++i) EXPECT_EQ(img_->read((50 + i) * 512, 512), blk);
    auto ws16 = rw16(0x93, 50, 2);
    expect_good(run(ws16, std::vector<uint8_t>(512, 0)));
    EXPECT_EQ(img_->read(50 * 512, 1024), std::vector<uint8_t>(1024, 0));
    EXPECT_EQ(img_->read(52 * 512, 512), blk);
    ws16 = rw16(0x93, 52, 2, 0x01);  // NDOB
    auto ndob = run(ws16);
    expect_good(ndob);
    EXPECT_EQ(ndob.transfers, 0);
    EXPECT_EQ(img_->read(52 * 512, 1024), std::vector<uint8_t>(1024, 0));
    // Flags and range are checked once the block is in, as stock QEMU's
    // scsi-hd does: a bad WRITE SAME still has its DATA OUT phase (a
    // driver's data move ends in a phase mismatch, not at once in STATUS),
    // and nothing reaches the disk.
    const auto before = img_->read(0, 64 * 512);
    for (auto cdb : {std::vector<uint8_t>{0x41, 0, 0, 0, 0, 50, 0, 0, 0, 0},          // 0 blocks
                     std::vector<uint8_t>{0x41, 0x02, 0, 0, 0, 50, 0, 0, 1, 0},       // LBDATA
                     std::vector<uint8_t>{0x41, 0, 0, 0, 0x20, 0, 0, 0, 1, 0},        // LBA beyond the end
                     rw16(0x93, (4 << 20) / 512 - 1, 8, 0x08)}) {                     // range runs past it
        auto w = run(cdb, blk);
        expect_sense(w, cdb[1] == 0x02 || cdb[8] == 0 ? kInvalidField : kLbaOutOfRange);
        EXPECT_EQ(w.dir, DataDir::ToDevice);
        EXPECT_EQ(w.expected, 512u);
        EXPECT_EQ(w.transfers, 1);
    }
    EXPECT_EQ(img_->read(0, 64 * 512), before);
}

// Hostile CDBs: known opcodes with random fields, random data-out bytes,
// random CDB lengths, resets in between. Every command must complete
// exactly once (FakeHba checks) with valid sense, and the disk must still
// work afterwards.
TEST_F(ScsiHdTest, RandomCdbsNeverBreakTheDevice) {
    static constexpr uint8_t kOps[] = {0x00, 0x03, 0x04, 0x08, 0x0a, 0x12, 0x15, 0x16, 0x17, 0x1a,
                                       0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x2b, 0x2e, 0x2f, 0x35, 0x41,
                                       0x42, 0x55, 0x56, 0x57, 0x5a, 0x88, 0x8a, 0x8e, 0x8f, 0x91,
                                       0x93, 0x9e, 0xa0, 0xa3, 0xa8, 0xaa, 0xae, 0xaf};
    std::mt19937 rng(1234);
    auto byte = [&] { return static_cast<uint8_t>(rng()); };
    for (int i = 0; i < 3000; ++i) {
        std::vector<uint8_t> cdb(1 + rng() % 16);
        for (auto& b : cdb) b = byte();
        cdb[0] = kOps[rng() % sizeof(kOps)];
        // Keep transfers small enough to stay quick: bound the length fields
        // some of the time, let them be wild the rest.
        if (rng() % 4 != 0) {
            for (size_t k = 2; k < cdb.size(); ++k)
                if (rng() % 2) cdb[k] = 0;
        }
        std::vector<uint8_t> out(rng() % 70000);
        for (auto& b : out) b = byte();
        Outcome o;
        FakeHba hba(loop_, o, out, rng() % 2 ? Continue::Inline : Continue::Deferred);
        auto req = dev_->new_request(++tag_, rng() % 8 == 0 ? 1 : 0, cdb, &hba);
        o.dir = req->start(&o.expected);
        if (rng() % 50 == 0) {
            req->cancel();
            backend_->drain();
            continue;
        }
        for (int k = 0; k < 20000 && !o.completed; ++k) loop_.run_once(10);
        ASSERT_TRUE(o.completed) << "opcode " << std::hex << int(cdb[0]);
        if (o.status == Status::CheckCondition) {
            EXPECT_NE(o.sense.key, 0) << "opcode " << std::hex << int(cdb[0]);
        }
        EXPECT_LE(o.residual, o.expected);
        if (rng() % 100 == 0) dev_->reset();
    }
    // Put the disk back into a known state and check it still does I/O.
    dev_->reset();
    request_sense();
    std::vector<uint8_t> l = {0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x02, 0x00};
    expect_good(run({0x15, 0x10, 0, 0, uint8_t(l.size()), 0}, l));
    auto data = pattern(4096, 77);
    expect_good(run(rw10(0x2a, 40, 8), data));
    EXPECT_EQ(img_->read(40 * 512, 4096), data);
    EXPECT_EQ(run(rw10(0x28, 40, 8)).data, data);
}

TEST_F(ScsiHdTest, ResetWhileReadInFlightDropsTheCompletion) {
    open(1 << 20, ScsiHdProps{}, block::ReadOnly::No, true);
    fault_->close_gate();
    Outcome o;
    {
        FakeHba hba(loop_, o, {}, Continue::Deferred);
        auto req = dev_->new_request(1, 0, rw10(0x28, 0, 8), &hba);
        EXPECT_EQ(req->start(&o.expected), DataDir::FromDevice);
        fault_->wait_for_waiting(1);
        dev_->reset();  // cancels the request; the HBA forgets it
        req.reset();
        fault_->open_gate();
        backend_->drain();
        for (int i = 0; i < 10; ++i) loop_.run_once(1);
    }
    EXPECT_FALSE(o.completed);
    EXPECT_EQ(o.transfers, 0);
    expect_sense(run({0x00, 0, 0, 0, 0, 0}), kResetOccurred);
}

TEST_F(ScsiHdTest, CancelDuringWriteChunkIsSafe) {
    open(1 << 20, ScsiHdProps{}, block::ReadOnly::No, true);
    Outcome o;
    FakeHba hba(loop_, o, pattern(1000 * 512, 4), Continue::Deferred);
    auto req = dev_->new_request(1, 0, rw10(0x2a, 0, 1000), &hba);
    EXPECT_EQ(req->start(&o.expected), DataDir::ToDevice);
    fault_->close_gate();
    loop_.run_once(0);  // HBA continues; the first chunk goes to the backend
    fault_->wait_for_waiting(1);
    req->cancel();
    req->cancel();  // idempotent
    req->continue_transfer();  // a confused HBA: ignored
    fault_->open_gate();
    backend_->drain();
    for (int i = 0; i < 10; ++i) loop_.run_once(1);
    EXPECT_FALSE(o.completed);
    EXPECT_EQ(o.transfers, 2);  // the second chunk was offered while the first was written
}

TEST_F(ScsiHdTest, ReadsAheadWhileTheHbaHoldsAChunk) {
    const uint32_t n = 768;  // three chunks
    auto data = pattern(n * 512, 21);
    img_->write(0, data);
    Outcome o;
    FakeHba hba(loop_, o, {}, Continue::Manual);
    auto req = dev_->new_request(1, 0, rw10(0x28, 0, n), &hba);
    EXPECT_EQ(req->start(&o.expected), DataDir::FromDevice);
    for (int i = 0; i < 20000 && o.transfers < 1; ++i) loop_.run_once(10);
    ASSERT_EQ(o.transfers, 1);
    backend_->drain();
    // The HBA has not taken chunk 1 yet, chunk 2 is already read.
    EXPECT_EQ(backend_->stats().rd_ops, 2u);
    EXPECT_EQ(o.transfers, 1);
    for (int k = 0; k < 3 && !o.completed; ++k) {
        req->continue_transfer();
        for (int i = 0; i < 20000 && !o.completed && o.transfers < k + 2; ++i) loop_.run_once(10);
    }
    ASSERT_TRUE(o.completed);
    expect_good(o);
    EXPECT_EQ(o.data, data);
    EXPECT_EQ(o.residual, 0u);
}

TEST_F(ScsiHdTest, NextWriteChunkIsFilledWhileThePreviousIsWritten) {
    open(4 << 20, ScsiHdProps{}, block::ReadOnly::No, true);
    const uint32_t n = 768;
    auto data = pattern(n * 512, 22);
    Outcome o;
    FakeHba hba(loop_, o, data, Continue::Manual);
    auto req = dev_->new_request(1, 0, rw10(0x2a, 0, n), &hba);
    EXPECT_EQ(req->start(&o.expected), DataDir::ToDevice);
    ASSERT_EQ(o.transfers, 1);
    fault_->close_gate();
    req->continue_transfer();
    fault_->wait_for_waiting(1);
    EXPECT_EQ(o.transfers, 2);  // offered before chunk 1 reached the disk
    req->continue_transfer();
    fault_->wait_for_waiting(2);
    EXPECT_EQ(o.transfers, 2);  // both buffers busy: wait
    fault_->open_gate();
    for (int i = 0; i < 20000 && o.transfers < 3; ++i) loop_.run_once(10);
    ASSERT_EQ(o.transfers, 3);
    EXPECT_FALSE(o.completed);
    req->continue_transfer();
    for (int i = 0; i < 20000 && !o.completed; ++i) loop_.run_once(10);
    expect_good(o);
    EXPECT_EQ(img_->read(0, n * 512), data);
}

TEST_F(ScsiHdTest, DeviceDestroyedWithIoInFlight) {
    open(1 << 20, ScsiHdProps{}, block::ReadOnly::No, true);
    fault_->close_gate();
    Outcome o;
    FakeHba hba(loop_, o, {}, Continue::Deferred);
    auto req = dev_->new_request(1, 0, rw10(0x28, 0, 8), &hba);
    req->start(&o.expected);
    fault_->wait_for_waiting(1);
    dev_.reset();
    fault_->open_gate();
    backend_->drain();
    EXPECT_FALSE(o.completed);
    req->continue_transfer();
    req->cancel();
}

TEST(ScsiHdPowerOn, FirstCommandSeesUnitAttention) {
    TempImage img(1 << 20);
    EventLoop loop;
    DriveOptions o;
    o.id = "d";
    o.file = img.path();
    auto f = block::open_file(o);
    ASSERT_TRUE(f.ok());
    BlockBackend bb(loop, std::move(f.value()), o);
    auto d = make_scsi_hd(loop, bb, ScsiHdProps{});
    ASSERT_TRUE(d.ok());
    Outcome out;
    FakeHba hba(loop, out, {}, Continue::Inline);
    std::vector<uint8_t> tur(6, 0);
    uint32_t len = 0;
    EXPECT_EQ((*d)->new_request(1, 0, tur, &hba)->start(&len), DataDir::None);
    ASSERT_TRUE(out.completed);
    EXPECT_EQ(out.status, Status::CheckCondition);
    EXPECT_EQ(out.sense.key, 0x06);
    EXPECT_EQ(out.sense.asc, 0x29);
}

TEST(ScsiHdProps, Validation) {
    TempImage img(1 << 20);
    EventLoop loop;
    DriveOptions o;
    o.id = "d";
    o.file = img.path();
    auto f = block::open_file(o);
    ASSERT_TRUE(f.ok());
    BlockBackend bb(loop, std::move(f.value()), o);
    auto bad = [&](ScsiHdProps p) { return !make_scsi_hd(loop, bb, p).ok(); };
    ScsiHdProps p;
    EXPECT_FALSE(bad(p));
    p.logical_block_size = 1024;
    EXPECT_TRUE(bad(p));
    p = {};
    p.vendor = "TOOLONGVENDOR";
    EXPECT_TRUE(bad(p));
    p = {};
    p.product = std::string(17, 'x');
    EXPECT_TRUE(bad(p));
    p = {};
    p.serial = std::string(37, 's');
    EXPECT_TRUE(bad(p));
    p = {};
    p.serial = "a\nb";
    EXPECT_TRUE(bad(p));
    p = {};
    p.scsi_id = 8;
    EXPECT_TRUE(bad(p));
    p = {};
    p.max_io_size = 1000;
    EXPECT_TRUE(bad(p));
    p.max_io_size = 0;
    EXPECT_TRUE(bad(p));
    p.max_io_size = 1 << 20;
    EXPECT_FALSE(bad(p));

    TempImage tiny(100);
    o.file = tiny.path();
    auto t = block::open_file(o);
    ASSERT_TRUE(t.ok());
    BlockBackend bt(loop, std::move(t.value()), o);
    EXPECT_FALSE(make_scsi_hd(loop, bt, ScsiHdProps{}).ok());
}

}  // namespace
}  // namespace mpq::scsi
