// Saved device state, end to end at the device level: an LSI53C895A with a
// real scsi-hd on a raw image runs a command workload; at many points in the
// middle of it (inside SCRIPTS, with a READ or WRITE chunk half moved, with
// the power-on unit attention still pending) its state is quiesced, encoded,
// decoded and loaded into a freshly built controller and disk, and the
// workload carries on there. Every such run must end with the same status
// bytes, guest memory, registers and disk contents as the run that was
// never saved.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "block/block.h"
#include "lsi_test_util.h"
#include "scsi/scsi_hd.h"
#include "state/device_state.h"
#include "state/live.h"

namespace lsitest {
namespace {

constexpr uint32_t P = 0x10000;
constexpr uint32_t kMsgOut = 0x20000;
constexpr uint32_t kCdb = 0x20100;
constexpr uint32_t kStatusAddr = 0x20200;
constexpr uint32_t kMsgIn = 0x20300;
constexpr uint32_t kBuf = 0x40000;
constexpr uint64_t kImageSize = 4 << 20;

std::string make_image(const std::vector<uint8_t>& data) {
    char path[] = "/tmp/state_rt_test.XXXXXX";
    int fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    ::close(fd);
    return path;
}

std::vector<uint8_t> read_file(const std::string& p) {
    std::vector<uint8_t> v(kImageSize);
    int fd = ::open(p.c_str(), O_RDONLY);
    EXPECT_EQ(::pread(fd, v.data(), v.size(), 0), static_cast<ssize_t>(v.size()));
    ::close(fd);
    return v;
}

// One controller with one disk, as a device process builds them.
struct Devices {
    std::unique_ptr<block::BlockBackend> backend;
    std::unique_ptr<scsi::Device> hd;
    std::unique_ptr<hw::Lsi53c895a> lsi;

    void build(EventLoop& loop, GuestMemory& mem, FakeIrq& irq, const std::string& image) {
        block::DriveOptions o;
        o.id = "d0";
        o.file = image;
        o.format = "raw";
        auto drv = block::open_drive(o);
        ASSERT_TRUE(drv.ok()) << drv.error().message;
        backend = std::make_unique<block::BlockBackend>(loop, std::move(*drv), o);
        scsi::ScsiHdProps props;
        props.id = "sd0";
        auto h = scsi::make_scsi_hd(loop, *backend, props);
        ASSERT_TRUE(h.ok()) << h.error().message;
        hd = std::move(*h);
        lsi = hw::make_lsi53c895a(loop, "lsi0");
        lsi->attach_irq(&irq);
        lsi->attach_dma(&mem);
        ASSERT_TRUE(lsi->bus().attach(0, hd.get()));
    }
    void destroy() {
        lsi.reset();
        if (backend) backend->drain();
        hd.reset();
        backend.reset();
    }
    state::LiveDevices live() {
        state::LiveDevices l;
        l.drives.push_back({"d0", backend.get()});
        l.disks.push_back({"sd0", "lsi0", "d0", 0, hd.get()});
        l.functions.push_back({"lsi0", "lsi53c895a", lsi.get()});
        return l;
    }
    // Quiesce and take the state, the way the device process does.
    std::vector<uint8_t> save() {
        auto l = live();
        auto img = state::capture(l, "test");
        EXPECT_TRUE(img.ok()) << img.error().message;
        return state::encode(*img);
    }
    Status load(const std::vector<uint8_t>& blob) {
        auto img = state::decode(blob);
        if (!img.ok()) return img.take_error();
        auto l = live();
        return state::apply(*img, l);
    }
};

struct Outcome {
    std::vector<int> statuses;
    std::vector<uint8_t> ram, image;
    hw::LsiRegs regs;
    int saves = 0, saves_in_flight = 0, saves_running = 0, saves_with_ua = 0;
};

class StateRoundTrip : public ::testing::Test {
protected:
    void SetUp() override {
        image_data_.resize(kImageSize);
        for (size_t i = 0; i < image_data_.size(); i++) image_data_[i] = static_cast<uint8_t>((i * 31) ^ (i >> 11));
        build_dispatcher();
    }

    // ---- the SCRIPTS dispatcher of lsi_hd_test, driven from the host ----
    std::vector<uint32_t> code;
    uint32_t di_at_ = 0, do_at_ = 0, dispatch_ = 0;
    uint32_t here() const { return P + static_cast<uint32_t>(code.size()) * 4; }
    void emit(uint32_t a, uint32_t b) {
        code.push_back(a);
        code.push_back(b);
    }
    void patch(uint32_t at, uint32_t arg) { code[(at - P) / 4 + 1] = arg; }
    void build_dispatcher() {
        emit(select_atn(0), 0);
        emit(move(kMO, 1), kMsgOut);
        emit(move(kCMD, 10), kCdb);
        dispatch_ = here();
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
        emit(kJump, dispatch_);
        patch(j_do, here());
        do_at_ = here();
        emit(move(kDO, 0), kBuf);
        emit(kJump, dispatch_);
        patch(j_st, here());
        emit(move(kST, 1), kStatusAddr);
        emit(kJump, dispatch_);
        patch(j_mi, here());
        emit(move(kMI, 1), kMsgIn);
        uint32_t j_cc = here();
        emit(jump_if_data(0x00), 0);
        uint32_t j_disc = here();
        emit(jump_if_data(0x04), 0);
        emit(kClearAck, 0);
        emit(kJump, dispatch_);
        patch(j_cc, here());
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
        emit(kInt, 0x600d);
        patch(j_disc, here());
        emit(kClearAck, 0);
        emit(kWaitDisc, 0);
        uint32_t w = here();
        emit(kWaitResel, 0);
        emit(kJump, dispatch_);
        patch(w, here());
        emit(kInt, 0xbad2);
        patch(P, here() - 8);
    }

    hw::Lsi53c895a& lsi() { return *dev_.lsi; }
    uint8_t rb(uint8_t off) { return static_cast<uint8_t>(lsi().bar_read(1, off, 1)); }
    uint16_t rw(uint8_t off) { return static_cast<uint16_t>(lsi().bar_read(1, off, 2)); }
    uint32_t rl(uint8_t off) { return static_cast<uint32_t>(lsi().bar_read(1, off, 4)); }
    void wb(uint8_t off, uint8_t v) { lsi().bar_write(1, off, v, 1); }
    void wl(uint8_t off, uint32_t v) { lsi().bar_write(1, off, v, 4); }
    void put32(uint64_t addr, uint32_t v) { std::memcpy(&ram_[addr], &v, 4); }

    // A point where the process is between event-loop rounds: before each
    // command, and after each pump round. The save/restore happens at the
    // chosen points.
    void point() {
        if (save_every_ && round_ >= first_save_ && (round_ - first_save_) % save_every_ == 0) swap();
        round_++;
    }
    void round() {
        hooks_this_round_ = 0;
        if (!armed_) arm();
        loop_.run_once(1);
        point();
    }
    // Points between the loop's callbacks too: a hook that defers itself
    // runs between each batch of deferred work (a completion announcing a
    // chunk, the SCRIPTS resuming to move it), where a monitor command can
    // also land.
    // A few times per round, so that a round with nothing else to do still
    // waits for the disk instead of spinning.
    void arm() {
        armed_ = true;
        loop_.defer([this, gen = gen_] {
            if (gen != gen_) return;
            armed_ = false;
            point();
            if (++hooks_this_round_ < 3) arm();
        });
    }
    void swap() {
        std::vector<uint8_t> blob = dev_.save();
        // MPQ_STATE_SEED_DIR=dir: keep the blobs (the fuzzer's seeds).
        if (const char* dir = std::getenv("MPQ_STATE_SEED_DIR")) {
            std::string p = std::string(dir) + "/seed-" + std::to_string(seed_no_++);
            FILE* f = std::fopen(p.c_str(), "wb");
            if (f) {
                std::fwrite(blob.data(), 1, blob.size(), f);
                std::fclose(f);
            }
        }
        auto snap = lsi().snapshot();
        ASSERT_TRUE(snap.ok());
        auto hs = scsi::scsi_hd_save(*dev_.hd);
        out_.saves++;
        for (const auto& r : snap->reqs)
            if (r.target_req) out_.saves_in_flight++;
        if (snap->chip.regs.istat1 & L::kIstat1Srun) out_.saves_running++;
        if (hs->unit_attention) out_.saves_with_ua++;
        if (std::getenv("STATE_RT_DEBUG"))
        {
            fprintf(stderr, "save at %d: reqs %zu srun %d wait %d cur %d phase %d con %d dbc %u dsp %x\n", round_, snap->reqs.size(),
                    snap->chip.regs.istat1 & L::kIstat1Srun, int(snap->chip.scripts.wait), snap->current,
                    snap->chip.regs.sstat1 & 7, snap->chip.regs.scntl1 & 0x10, snap->chip.regs.dbc, snap->chip.regs.dsp);
            for (auto& r : snap->reqs)
                fprintf(stderr, "   req avail %u off %u completed %d moved %u exp %u\n", r.avail, r.off, r.completed,
                        r.target_req ? r.target_req->moved : 0, r.target_req ? r.target_req->expected : 0);
        }
        dev_.destroy();
        dev_.build(loop_, *mem_, irq_, image_);
        auto st = dev_.load(blob);
        ASSERT_TRUE(st.ok()) << st.error().message;
    }

    int command(std::initializer_list<uint8_t> cdb, uint32_t len) {
        point();
        std::memset(&ram_[kCdb], 0, 16);
        size_t i = 0;
        for (uint8_t b : cdb) ram_[kCdb + i++] = b;
        ram_[kMsgOut] = 0x80;
        ram_[kStatusAddr] = 0xff;
        code[(di_at_ - P) / 4] = move(kDI, std::max<uint32_t>(len, 1));
        code[(do_at_ - P) / 4] = move(kDO, std::max<uint32_t>(len, 1));
        for (size_t k = 0; k < code.size(); k++) put32(P + k * 4, code[k]);
        rb(L::kDstat);
        rw(L::kSist0);
        wb(L::kCcntl0, L::kCcntl0Enpmj);
        wl(L::kPmjad1, dispatch_);
        wl(L::kPmjad2, dispatch_);
        wl(L::kDsp, P);
        // A hang guard, not a timing check: the hook's rounds are short, so
        // the bound is wall-clock time (a flush on a loaded host is slow).
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while ((rb(L::kIstat1) & L::kIstat1Srun) && std::chrono::steady_clock::now() < deadline) round();
        if (rb(L::kIstat1) & L::kIstat1Srun) return -2;
        uint8_t dstat = rb(L::kDstat);
        if (dstat != (0x80 | L::kDstatSir) || rl(L::kDsps) != 0x600d) return -1;
        return ram_[kStatusAddr];
    }

    Outcome run(int first_save, int save_every) {
        first_save_ = first_save;
        save_every_ = save_every;
        round_ = 0;
        out_ = Outcome{};
        ram_.assign(kRamSize, 0);
        mem_ = std::make_unique<GuestMemory>();
        EXPECT_TRUE(mem_->set_host_region(0, ram_.data(), kRamSize).ok());
        image_ = make_image(image_data_);
        dev_.build(loop_, *mem_, irq_, image_);
        gen_++;
        armed_ = false;
        lsi().config_write(0x10, kIoBase | 1, 4);
        lsi().config_write(0x14, kMmioBase, 4);
        lsi().config_write(0x18, kRamBarBase, 4);
        lsi().config_write(0x04, 0x0007, 2);

        auto& s = out_.statuses;
        s.push_back(command({0x00, 0, 0, 0, 0, 0}, 0));         // TEST UNIT READY: unit attention
        s.push_back(command({0x03, 0, 0, 0, 18, 0}, 18));       // REQUEST SENSE
        s.push_back(command({0x12, 0, 0, 0, 36, 0}, 36));       // INQUIRY
        s.push_back(command({0x28, 0, 0, 0, 0, 16, 0, 0x04, 0, 0}, 512 << 10));  // READ 512 KiB
        const uint32_t wlen = 600 * 512;
        for (uint32_t k = 0; k < wlen; k++) ram_[kBuf + k] = static_cast<uint8_t>(k * 3 + 1);
        s.push_back(command({0x2a, 0, 0, 0, 0x0b, 0xb8, 0, 0x02, 0x58, 0}, wlen));  // WRITE 300 KiB at 3000
        std::memset(&ram_[kBuf], 0, wlen);
        s.push_back(command({0x28, 0, 0, 0, 0x0b, 0xb8, 0, 0x02, 0x58, 0}, wlen));  // read it back
        s.push_back(command({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0));                   // SYNCHRONIZE CACHE
        s.push_back(command({0x28, 0, 0xff, 0, 0, 0, 0, 0, 1, 0}, 512));              // out of range
        s.push_back(command({0x03, 0, 0, 0, 18, 0}, 18));                             // its sense

        gen_++;  // the hook stops
        dev_.backend->drain();
        out_.ram = ram_;
        out_.regs = lsi().save_state().regs;
        dev_.destroy();
        out_.image = read_file(image_);
        ::unlink(image_.c_str());
        return std::move(out_);
    }

    EventLoop loop_;
    std::unique_ptr<GuestMemory> mem_;
    FakeIrq irq_;
    std::vector<uint8_t> ram_;
    std::vector<uint8_t> image_data_;
    std::string image_;
    Devices dev_;
    int round_ = 0, first_save_ = 0, save_every_ = 0;
    unsigned gen_ = 0;
    int seed_no_ = 0;
    bool armed_ = false;
    int hooks_this_round_ = 0;
    Outcome out_;
};

void expect_same(const Outcome& a, const Outcome& b, const std::string& what) {
    EXPECT_EQ(a.statuses, b.statuses) << what;
    EXPECT_TRUE(a.ram == b.ram) << what << ": guest memory differs";
    EXPECT_TRUE(a.image == b.image) << what << ": disk contents differ";
    EXPECT_EQ(std::memcmp(&a.regs, &b.regs, sizeof a.regs), 0) << what << ": registers differ";
}

TEST_F(StateRoundTrip, SavedAnywhereCarriesOnIdentically) {
    Outcome ref = run(0, 0);
    ASSERT_EQ(ref.statuses, (std::vector<int>{2, 0, 0, 0, 0, 0, 0, 2, 0}));
    for (uint32_t k = 0; k < 600 * 512; k += 511) ASSERT_EQ(ref.image[3000 * 512 + k], static_cast<uint8_t>(k * 3 + 1));
    EXPECT_EQ(ref.ram[kBuf], 0x70);      // sense of the out-of-range read:
    EXPECT_EQ(ref.ram[kBuf + 2], 0x05);  // ILLEGAL REQUEST,
    EXPECT_EQ(ref.ram[kBuf + 12], 0x21); // LBA OUT OF RANGE

    int in_flight = 0, running = 0, with_ua = 0;
    // Save once, at many different rounds, and every few rounds.
    for (int first : {0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 17, 21, 27, 34}) {
        Outcome o = run(first, 100000);
        expect_same(ref, o, "saved at round " + std::to_string(first));
        in_flight += o.saves_in_flight;
        running += o.saves_running;
        with_ua += o.saves_with_ua;
    }
    for (int every : {1, 2, 3, 7}) {
        Outcome o = run(0, every);
        expect_same(ref, o, "saved every " + std::to_string(every) + " rounds");
        EXPECT_GE(o.saves, 3);
        in_flight += o.saves_in_flight;
        running += o.saves_running;
        with_ua += o.saves_with_ua;
    }
    // The saves did hit the interesting moments.
    EXPECT_GT(in_flight, 0) << "no save with a request in flight";
    EXPECT_GT(running, 0) << "no save with SCRIPTS running";
    EXPECT_GT(with_ua, 0) << "no save with a unit attention pending";
}

// A blob whose request does not fit the disk is refused and the devices are
// left as they were.
TEST_F(StateRoundTrip, RestoreRefusesInconsistentRequests) {
    ram_.assign(kRamSize, 0);
    mem_ = std::make_unique<GuestMemory>();
    ASSERT_TRUE(mem_->set_host_region(0, ram_.data(), kRamSize).ok());
    image_ = make_image(image_data_);
    dev_.build(loop_, *mem_, irq_, image_);
    auto img = state::decode(dev_.save());
    ASSERT_TRUE(img.ok()) << img.error().message;

    hw::LsiRequestState r;
    r.target = 0;
    r.avail = 512;
    scsi::RequestSnapshot t;
    t.tag = 0x100;
    t.cdb = {0x28, 0, 0, 0, 0, 16, 0, 0, 1, 0};
    t.cdb_len = 10;
    t.dir = scsi::DataDir::FromDevice;
    t.expected = 512;
    t.moved = 512;
    t.chunk.assign(512, 0xaa);
    r.target_req = t;
    auto try_load = [&](const hw::LsiRequestState& req) {
        state::DeviceStateImage bad = *img;
        bad.functions[0].lsi.reqs = {req};
        return dev_.load(state::encode(bad));
    };
    ASSERT_TRUE(try_load(r).ok());  // the well-formed one is accepted

    auto expect_refused = [&](hw::LsiRequestState q, const char* what) {
        auto st = try_load(q);
        EXPECT_FALSE(st.ok()) << what;
        if (!st.ok()) {
            EXPECT_FALSE(st.error().message.empty());
        }
    };
    auto q = r;
    q.target_req->cdb[5] = 0xff;  // LBA beyond the medium
    q.target_req->cdb[2] = 0xff;
    expect_refused(q, "LBA beyond the medium");
    q = r;
    q.target_req->expected = 1024;  // length not from the CDB
    expect_refused(q, "length");
    q = r;
    q.avail = 256;  // controller and target disagree on the chunk
    expect_refused(q, "chunk length");
    q = r;
    q.off = 512;  // the whole chunk moved yet not continued
    expect_refused(q, "offset");
    q = r;
    q.target = 3;  // no disk there
    expect_refused(q, "target");
    q = r;
    q.out = true;  // direction
    expect_refused(q, "direction");
    q = r;
    q.target_req->moved = 0;
    expect_refused(q, "moved count");
    q = r;
    q.completed = true;  // complete but still carrying data
    expect_refused(q, "completed with data");

    // A disk that the guest would see as another one (INQUIRY data) or of
    // another size is refused.
    {
        state::DeviceStateImage other = *img;
        other.disks[0].hd.product = "OTHER DISK";
        auto st = dev_.load(state::encode(other));
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().message.find("saved as"), std::string::npos) << st.error().message;
        other = *img;
        other.drives[0].length += 512;
        other.disks[0].hd.capacity_bytes += 512;
        st = dev_.load(state::encode(other));
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().message.find("bytes"), std::string::npos) << st.error().message;
    }

    // Another disk set (disks are hot-plugged at run time): the disk or
    // drive that differs is named, whichever side has it.
    {
        auto l = dev_.live();
        l.disks.clear();
        auto st = state::apply(*img, l);
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().message.find("disk 'sd0' (lsi0.0 scsi-id 0, drive 'd0') is not on this command line"),
                  std::string::npos) << st.error().message;
        l = dev_.live();
        l.drives.push_back({"hot", dev_.backend.get()});
        l.disks.push_back({"hot0", "lsi0", "hot", 1, dev_.hd.get()});
        st = state::apply(*img, l);
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().message.find("disk 'hot0' (lsi0.0 scsi-id 1) is not in the saved state"),
                  std::string::npos) << st.error().message;
        l.disks.pop_back();
        st = state::apply(*img, l);
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().message.find("drive 'hot' is not in the saved state"), std::string::npos)
            << st.error().message;
    }

    // After all the refusals the controller still works from its state.
    EXPECT_TRUE(dev_.lsi->snapshot().ok());
    dev_.destroy();
    ::unlink(image_.c_str());
}

}  // namespace
}  // namespace lsitest
