// LSI53C895A with the real scsi-hd on a raw image: commands driven by a
// SCRIPTS dispatcher in guest RAM (as SeaBIOS / qtest-bench do), checked
// against the image. Each test runs twice: as the device process runs
// (event loop, a file on I/O threads) and synchronously (ManualWorkQueue,
// an in-memory image with requests run inline: no thread, no loop).
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

#include "block/block.h"
#include "block/mem.h"
#include "lsi_test_util.h"
#include "scsi/scsi_hd.h"

namespace lsitest {
namespace {

constexpr uint32_t P = 0x10000;
constexpr uint32_t kMsgOut = 0x20000;
constexpr uint32_t kCdb = 0x20100;
constexpr uint32_t kStatus = 0x20200;
constexpr uint32_t kMsgIn = 0x20300;
constexpr uint32_t kBuf = 0x40000;
constexpr uint64_t kImageSize = 4 << 20;

enum class Engine : uint8_t { LoopAndFile, ManualAndMemory };

int threads_in_process() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/task");
    if (!d) return -1;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n;
}

class LsiHd : public LsiBench, public ::testing::WithParamInterface<Engine> {
protected:
    void SetUp() override {
        if (GetParam() == Engine::ManualAndMemory) driver = Driver::Manual;
        LsiBench::SetUp();
        image_data_.resize(kImageSize);
        for (size_t i = 0; i < image_data_.size(); i++) image_data_[i] = static_cast<uint8_t>((i * 31) ^ (i >> 11));
        block::DriveOptions o;
        o.id = "d0";
        if (driver == Driver::Manual) {
            mem_image_ = std::make_shared<block::MemImage>();
            mem_image_->bytes = image_data_;
            backend_ = std::make_unique<block::BlockBackend>(manual, block::make_mem_driver(mem_image_), o,
                                                             block::kInlineIo);
        } else {
            open_file_backend(o);
            if (HasFatalFailure()) return;
        }
        scsi::ScsiHdProps props;
        props.id = "sd0";
        auto hd = scsi::make_scsi_hd(work_queue(), *backend_, props);
        ASSERT_TRUE(hd.ok()) << hd.error().message;
        hd_ = std::move(*hd);
        ASSERT_TRUE(lsi->bus().attach(0, hd_.get()));
        build_dispatcher();
    }
    void open_file_backend(block::DriveOptions& o) {
        char path[] = "/tmp/lsi_hd_test.XXXXXX";
        int fd = mkstemp(path);
        ASSERT_GE(fd, 0);
        image_ = path;
        ASSERT_EQ(::pwrite(fd, image_data_.data(), image_data_.size(), 0), static_cast<ssize_t>(kImageSize));
        ::close(fd);
        o.file = image_;
        o.format = "raw";
        auto drv = block::open_drive(o);
        ASSERT_TRUE(drv.ok()) << drv.error().message;
        backend_ = std::make_unique<block::BlockBackend>(loop, std::move(*drv), o);
    }
    void TearDown() override {
        lsi.reset();
        if (backend_) backend_->drain();
        hd_.reset();
        backend_.reset();
        if (!image_.empty()) ::unlink(image_.c_str());
    }

    std::vector<uint32_t> code;
    uint32_t here() const { return P + static_cast<uint32_t>(code.size()) * 4; }
    void emit(uint32_t a, uint32_t b) {
        code.push_back(a);
        code.push_back(b);
    }
    void patch(uint32_t at, uint32_t arg) { code[(at - P) / 4 + 1] = arg; }

    // A phase dispatcher: data moves of `data_len_` patched in per command.
    void build_dispatcher() {
        emit(select_atn(0), 0);
        emit(move(kMO, 1), kMsgOut);
        emit(move(kCMD, 10), kCdb);
        uint32_t dispatch = here();
        dispatch_ = dispatch;
        uint32_t j_di = here();
        emit(jump_if_phase(kDI), 0);
        uint32_t j_do = here();
        emit(jump_if_phase(kDO), 0);
        uint32_t j_st = here();
        emit(jump_if_phase(kST), 0);
        uint32_t j_mi = here();
        emit(jump_if_phase(kMI), 0);
        emit(kInt, 0xbad);
        patch(j_di, here());
        di_at_ = here();
        emit(move(kDI, 0), kBuf);
        emit(kJump, dispatch);
        patch(j_do, here());
        do_at_ = here();
        emit(move(kDO, 0), kBuf);
        emit(kJump, dispatch);
        patch(j_st, here());
        emit(move(kST, 1), kStatus);
        emit(kJump, dispatch);
        patch(j_mi, here());
        emit(move(kMI, 1), kMsgIn);
        uint32_t j_cc = here();
        emit(jump_if_data(0x00), 0);
        uint32_t j_disc = here();
        emit(jump_if_data(0x04), 0);
        emit(kClearAck, 0);
        emit(kJump, dispatch);
        patch(j_cc, here());
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
        emit(kInt, 0x600d);
        patch(j_disc, here());
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
        uint32_t w = here();
        emit(kWaitResel, 0);
        emit(kJump, dispatch);
        patch(w, here());
        emit(kInt, 0xbad2);
        patch(P, here() - 8);  // SELECT alternate: the "bad" INT
    }

    // Runs one command; returns the status byte (or -1 if SCRIPTS failed).
    int command(std::initializer_list<uint8_t> cdb, uint32_t len) {
        std::memset(&ram[kCdb], 0, 16);
        size_t i = 0;
        for (uint8_t b : cdb) ram[kCdb + i++] = b;
        ram[kMsgOut] = 0x80;
        ram[kStatus] = 0xff;
        // A no-data command that runs asynchronously holds a placeholder
        // DATA IN phase: a 1-byte move waits there like Linux' data_ovrun.
        code[(di_at_ - P) / 4] = move(kDI, std::max<uint32_t>(len, 1));
        code[(do_at_ - P) / 4] = move(kDO, std::max<uint32_t>(len, 1));
        for (size_t k = 0; k < code.size(); k++) put32(P + k * 4, code[k]);
        rb(L::kDstat);
        rw(L::kSist0);
        // A data move that outlasts the transfer jumps back to the
        // dispatcher once the target has gone to STATUS (as Linux does).
        wb(L::kCcntl0, L::kCcntl0Enpmj);
        wl(L::kPmjad1, dispatch_);
        wl(L::kPmjad2, dispatch_);
        run(P);
        if (!pump_until([&] { return stopped(); }, 20000)) return -2;
        uint8_t dstat = rb(L::kDstat);
        if (dstat != (0x80 | L::kDstatSir) || rl(L::kDsps) != 0x600d) {
            last_error_ = fmt::format("dstat {:#x} dsps {:#x} sist0 {:#x} dsp {:#x} phase {} dbc {:#x}", dstat,
                                      rl(L::kDsps), rb(L::kSist0), rl(L::kDsp), rb(L::kSstat1) & 7, rl(L::kDbc) & 0xffffff);
            return -1;
        }
        return ram[kStatus];
    }
    // What reached the image (the file, or the in-memory bytes).
    std::vector<uint8_t> file_bytes(uint64_t off, size_t len) {
        if (mem_image_) {
            EXPECT_LE(off + len, mem_image_->bytes.size());
            return {mem_image_->bytes.begin() + static_cast<ptrdiff_t>(off),
                    mem_image_->bytes.begin() + static_cast<ptrdiff_t>(off + len)};
        }
        std::vector<uint8_t> v(len);
        int fd = ::open(image_.c_str(), O_RDONLY);
        EXPECT_EQ(::pread(fd, v.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
        ::close(fd);
        return v;
    }

    std::string image_;
    std::shared_ptr<block::MemImage> mem_image_;
    std::vector<uint8_t> image_data_;
    std::unique_ptr<block::BlockBackend> backend_;
    std::unique_ptr<scsi::Device> hd_;
    uint32_t di_at_ = 0, do_at_ = 0, dispatch_ = 0;
    std::string last_error_;
};

TEST_P(LsiHd, InquiryThenUnitAttentionThenReadWrite) {
    ASSERT_EQ(command({0x12, 0, 0, 0, 36, 0}, 36), 0);
    EXPECT_EQ(std::memcmp(&ram[kBuf + 8], "QEMU    QEMU HARDDISK", 21), 0);
    // TEST UNIT READY until GOOD (unit attention first), REQUEST SENSE in between.
    int st = -1;
    for (int i = 0; i < 4 && st != 0; i++) {
        st = command({0x00, 0, 0, 0, 0, 0}, 0);
        if (st == 2) command({0x03, 0, 0, 0, 18, 0}, 18);
    }
    ASSERT_EQ(st, 0);
    // READ(10) of 64 KiB at LBA 100.
    ASSERT_EQ(command({0x28, 0, 0, 0, 0, 100, 0, 0, 128, 0}, 65536), 0);
    EXPECT_EQ(std::memcmp(&ram[kBuf], &image_data_[100 * 512], 65536), 0);
    // WRITE(10) of 200 KiB at LBA 2000 (several chunks).
    const uint32_t wlen = 400 * 512;
    for (uint32_t k = 0; k < wlen; k++) ram[kBuf + k] = static_cast<uint8_t>(k * 3 + 1);
    ASSERT_EQ(command({0x2a, 0, 0, 0, 0x07, 0xd0, 0, 0x01, 0x90, 0}, wlen), 0) << last_error_;
    backend_->drain();
    auto got = file_bytes(2000 * 512, wlen);
    EXPECT_EQ(std::memcmp(got.data(), &ram[kBuf], wlen), 0);
    // Read it back through the controller into another place.
    std::memset(&ram[kBuf], 0, wlen);
    ASSERT_EQ(command({0x28, 0, 0, 0, 0x07, 0xd0, 0, 0x01, 0x90, 0}, wlen), 0);
    EXPECT_EQ(std::memcmp(got.data(), &ram[kBuf], wlen), 0);
    // SYNCHRONIZE CACHE (async, no data).
    ASSERT_EQ(command({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0), 0) << last_error_;
    // Out of range: CHECK CONDITION.
    EXPECT_EQ(command({0x28, 0, 0xff, 0, 0, 0, 0, 0, 1, 0}, 512), 2);
    // All of it ran on this one thread.
    if (driver == Driver::Manual) {
        EXPECT_EQ(threads_in_process(), 1);
    }
}

TEST_P(LsiHd, LargeReadThenDmaFaultThenBusResetRecovers) {
    auto ready = [&] {
        int st = -1;
        for (int i = 0; i < 4 && st != 0; i++) {
            st = command({0x00, 0, 0, 0, 0, 0}, 0);
            if (st == 2) command({0x03, 0, 0, 0, 18, 0}, 18);
        }
        return st;
    };
    ASSERT_EQ(ready(), 0);
    ASSERT_EQ(command({0x28, 0, 0, 0, 0, 16, 0, 0x04, 0, 0}, 512 << 10), 0);
    EXPECT_EQ(std::memcmp(&ram[kBuf], &image_data_[16 * 512], 512 << 10), 0);
    // 1 MiB into a buffer that runs past the end of guest RAM: bus fault.
    EXPECT_EQ(command({0x28, 0, 0, 0, 0, 16, 0, 0x08, 0, 0}, 1 << 20), -1);
    EXPECT_TRUE(stopped());
    // The driver's answer: a SCSI bus reset. Then the disk works again.
    wb(L::kScntl1, L::kScntl1Rst);
    wb(L::kScntl1, 0);
    rw(L::kSist0);
    EXPECT_EQ(rb(L::kScntl1) & L::kScntl1Con, 0);
    ASSERT_EQ(ready(), 0);
    ASSERT_EQ(command({0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0}, 4096), 0);
    EXPECT_EQ(std::memcmp(&ram[kBuf], &image_data_[512], 4096), 0);
}

INSTANTIATE_TEST_SUITE_P(Engines, LsiHd, ::testing::Values(Engine::LoopAndFile, Engine::ManualAndMemory),
                         [](const ::testing::TestParamInfo<Engine>& i) {
                             return i.param == Engine::LoopAndFile ? "LoopAndFile" : "ManualAndMemory";
                         });

}  // namespace
}  // namespace lsitest
