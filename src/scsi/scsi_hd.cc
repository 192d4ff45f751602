// scsi-hd: command dispatch, unit attention, and the chunked READ/WRITE
// paths over the asynchronous block backend.
#include "scsi/scsi_hd.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "scsi/scsi_hd_impl.h"
#include "trace/trace.h"
#include "util/work_queue.h"
#include "util/log.h"

namespace mpq::scsi {

using IoStatus = mpq::Status;

namespace {

struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
};

// O_DIRECT wants aligned memory; a chunk buffer is page aligned so the
// block layer never has to bounce it.
std::unique_ptr<uint8_t, FreeDeleter> alloc_aligned(size_t n) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, std::max<size_t>(n, 1)) != 0) return nullptr;
    return std::unique_ptr<uint8_t, FreeDeleter>(static_cast<uint8_t*>(p));
}

Sense sense_from_error(const Error& e, bool writing) {
    switch (e.err) {
        case ENOSPC:
        case EDQUOT: return kSpaceExhausted;
        case EROFS:
        case EPERM:
        case EACCES: return writing ? kWriteProtected : kReadError;
        case ENOMEDIUM: return kNoMedium;
        default: return writing ? kWriteError : kReadError;
    }
}

bool is_rw(uint8_t opc) {
    switch (opc) {
        case op::kRead6: case op::kRead10: case op::kRead12: case op::kRead16:
        case op::kWrite6: case op::kWrite10: case op::kWrite12: case op::kWrite16:
        case op::kWriteVerify10: case op::kWriteVerify12: case op::kWriteVerify16:
            return true;
        default:
            return false;
    }
}

using ChunkBuf = std::unique_ptr<uint8_t, FreeDeleter>;

// Chunk buffers outlive requests here so that the steady stream of a
// sequential workload does not map, fault in and unmap 256 KiB per command.
// Shared: a request may finish after its device is gone.
class ChunkPool {
public:
    ChunkBuf take() {
        if (free_.empty()) return alloc_aligned(kChunkBytes);
        ChunkBuf b = std::move(free_.back());
        free_.pop_back();
        return b;
    }
    void give_back(ChunkBuf b) {
        if (b && free_.size() < kKeep) free_.push_back(std::move(b));
    }

private:
    static constexpr size_t kKeep = 4;  // two commands' double buffers
    std::vector<ChunkBuf> free_;
};

}  // namespace

class HdRequest;

class ScsiHd final : public Device {
public:
    ScsiHd(WorkQueue& wq, block::BlockBackend& backend, const ScsiHdProps& props)
        : wq_(wq), backend_(backend), props_(props) {
        // Powered on: like QEMU after its system reset, the first command
        // (other than INQUIRY / REPORT LUNS / REQUEST SENSE) sees 06/29/00.
        state_.unit_attention = true;
        state_.write_cache = props.write_cache;
        state_.block_size = props.logical_block_size;
        device_id_ = !props.serial.empty() ? props.serial
                     : !backend.options().id.empty() ? backend.options().id
                                                      : props.id;
    }
    ~ScsiHd() override;

    std::shared_ptr<Request> new_request(uint32_t tag, unsigned lun, std::span<const uint8_t> cdb,
                                         RequestClient* client) override;
    void reset() override;
    const std::string& id() const override { return props_.id; }
    void capacity_changed() override {
        if (!state_.unit_attention) state_.capacity_changed = true;
    }
    Result<RequestSnapshot> save_request(const Request& req) const override;
    Result<std::shared_ptr<Request>> restore_request(const RequestSnapshot& snap,
                                                     RequestClient* client) override;
    void unplug(Sense sense) override;
    void hotplugged() override {
        state_.unit_attention = false;
        state_.luns_changed = true;
    }

    HdView view() const {
        return HdView{props_, state_, device_id_, blocks(), backend_.read_only()};
    }
    uint64_t blocks() const { return backend_.length() / state_.block_size; }

    WorkQueue& wq_;
    block::BlockBackend& backend_;
    ScsiHdProps props_;
    ScsiHdState state_;
    std::string device_id_;
    std::unordered_set<HdRequest*> active_;
    uint64_t io_errors_ = 0;
    std::shared_ptr<ChunkPool> pool_ = std::make_shared<ChunkPool>();
};

class HdRequest final : public Request {
public:
    HdRequest(ScsiHd* dev, uint32_t tag, unsigned lun, std::span<const uint8_t> cdb,
              RequestClient* client)
        : Request(tag, lun, client), dev_(dev), pool_(dev->pool_) {
        cdb_len_ = std::min(cdb.size(), cdb_.size());
        std::copy_n(cdb.begin(), cdb_len_, cdb_.begin());
        dev_->active_.insert(this);
    }
    ~HdRequest() override {
        detach();
        // Nothing can use the buffers any more: every I/O holds a reference.
        for (size_t i = 0; i < bufs_.size(); i++)
            if (buf_size_[i] == kChunkBytes) pool_->give_back(std::move(bufs_[i]));
    }

    DataDir start(uint32_t* expected_len) override;
    void continue_transfer() override;
    std::span<uint8_t> buffer() override {
        uint8_t* b = bufs_[hba_idx_].get();
        return b ? std::span<uint8_t>(b, cur_len_) : std::span<uint8_t>();
    }
    void cancel() override;
    Sense sense() const override { return sense_; }

    // Device reset or destruction: drop silently.
    void cancel_from_device() { cancel(); }
    // Saved state (scsi_hd.cc, end of file).
    Result<RequestSnapshot> snapshot() const;
    IoStatus resume_from(const RequestSnapshot& snap);
    const ScsiHd* device() const { return dev_; }
    // Hot-unplug: the HBA gets a CHECK CONDITION for it now.
    void fail_from_device(Sense s) {
        if (live()) complete_check(s);
    }

private:
    enum class Phase : uint8_t { New, Active, Done, Cancelled };
    enum class Kind : uint8_t { Emulated, Read, Write, ModeSelect, Unmap, WriteSame };

    bool live() const { return phase_ != Phase::Done && phase_ != Phase::Cancelled; }
    void detach() {
        if (dev_) dev_->active_.erase(this);
        dev_ = nullptr;
    }
    DataDir fail(Sense s);
    void complete_good() { complete(true); }
    void complete_check(Sense s) {
        sense_ = s;
        complete(false);
    }
    void complete(bool good);
    DataDir dispatch();
    DataDir start_emulated(EmulResult r, uint32_t alloc);
    DataDir start_request_sense();
    DataDir start_rw();
    DataDir start_data_out(Kind k, uint32_t len);
    DataDir start_flush();
    DataDir start_verify();
    DataDir start_write_same();
    DataDir start_unmap();
    DataDir no_data_good();
    bool set_buffer(size_t n) { return ensure_buffer(0, n); }
    bool ensure_buffer(int idx, size_t n);
    void set_expected(uint32_t n);
    void announce(int idx, uint32_t len);
    void issue_read(int idx);
    void read_done(int idx, uint32_t len, IoStatus st);
    void pump_read();
    void pump_write();
    void write_done(int idx, IoStatus st);
    void after_writes();
    void data_out_received();
    void finish_mode_select();
    void finish_unmap();
    void unmap_next();
    void finish_write_same();
    bool write_same_range_ok();
    void io_failed(const IoStatus& st, bool writing);
    // Wraps a completion so it is dropped once the request is cancelled.
    template <typename F>
    block::BlockBackend::Done guard(F f) {
        return [self = std::static_pointer_cast<HdRequest>(shared_from_this()),
                f](IoStatus st) mutable {
            if (!self->live()) return;
            f(self.get(), std::move(st));
        };
    }

    ScsiHd* dev_;
    std::shared_ptr<ChunkPool> pool_;
    std::array<uint8_t, kMaxCdb> cdb_{};
    size_t cdb_len_ = 0;
    Phase phase_ = Phase::New;
    Kind kind_ = Kind::Emulated;
    Sense sense_ = kNoSense;
    // Two chunk buffers so the disk and the HBA can work at the same time
    // (the second one only for commands longer than a chunk).
    std::array<std::unique_ptr<uint8_t, FreeDeleter>, 2> bufs_;
    std::array<size_t, 2> buf_size_{};
    int hba_idx_ = 0;         // buffer of the chunk announced to the HBA
    bool hba_busy_ = false;   // announced and not yet continued
    uint32_t cur_len_ = 0;    // bytes of that chunk
    uint32_t expected_ = 0;
    uint32_t* expected_out_ = nullptr;  // start()'s out parameter while it runs
    uint32_t moved_ = 0;        // bytes handed to or taken from the HBA
    // READ: bytes not yet requested from the disk; the chunk being read and
    // the one read and waiting for the HBA.
    uint64_t rd_off_ = 0, rd_left_ = 0;
    int rd_inflight_ = -1;
    int ready_idx_ = -1;
    uint32_t ready_len_ = 0;
    // WRITE: bytes not yet announced to the HBA; where the HBA's chunk goes;
    // buffers with a write in flight.
    uint64_t ann_off_ = 0, ann_left_ = 0;
    uint64_t hba_off_ = 0;
    std::array<bool, 2> wr_busy_{};
    unsigned wr_inflight_ = 0;
    // WRITE SAME range.
    uint64_t io_off_ = 0;
    uint64_t io_left_ = 0;
    bool flush_after_ = false;
    // UNMAP descriptors still to discard.
    std::vector<std::pair<uint64_t, uint64_t>> unmap_;
    size_t unmap_next_ = 0;
};

ScsiHd::~ScsiHd() {
    auto reqs = active_;
    for (auto* r : reqs) r->cancel_from_device();
}

std::shared_ptr<Request> ScsiHd::new_request(uint32_t tag, unsigned lun,
                                             std::span<const uint8_t> cdb,
                                             RequestClient* client) {
    return std::make_shared<HdRequest>(this, tag, lun, cdb, client);
}

void ScsiHd::reset() {
    auto reqs = active_;
    for (auto* r : reqs) r->cancel_from_device();
    state_.unit_attention = true;
    state_.luns_changed = false;  // the reset's unit attention outranks it
    state_.capacity_changed = false;  // the reset's unit attention outranks it
}

void ScsiHd::unplug(Sense sense) {
    auto reqs = active_;
    for (auto* r : reqs) {
        // A completion may drop the HBA's last reference to another request.
        if (active_.count(r)) {
            auto keep = r->shared_from_this();
            r->fail_from_device(sense);
        }
    }
}

void HdRequest::cancel() {
    if (phase_ == Phase::Cancelled) return;
    phase_ = Phase::Cancelled;
    client_ = nullptr;
    detach();
}

// QEMU's scsi_disk_new_request text: " 0x28 0x00 ..." for the CDB bytes.
static std::string cdb_text(std::span<const uint8_t> cdb) {
    std::string out;
    for (uint8_t b : cdb) out += fmt::format(" 0x{:02x}", b);
    return out;
}

DataDir HdRequest::fail(Sense s) {
    MPQ_TRACE(scsi_disk_check_condition, tag_, s.key, s.asc, s.ascq);
    complete_check(s);
    return DataDir::None;
}

void HdRequest::complete(bool good) {
    if (!live()) return;
    auto self = shared_from_this();
    phase_ = Phase::Done;
    Status st = good ? Status::Good : Status::CheckCondition;
    if (!good && dev_) dev_->state_.sense = sense_;
    detach();
    RequestClient* c = client_;
    client_ = nullptr;
    if (c) c->command_complete(*this, st, expected_ > moved_ ? expected_ - moved_ : 0);
}

DataDir HdRequest::start(uint32_t* expected_len) {
    auto self = shared_from_this();
    *expected_len = 0;
    if (phase_ != Phase::New || !dev_) return DataDir::None;
    phase_ = Phase::Active;
    expected_out_ = expected_len;
    DataDir d = dispatch();
    expected_out_ = nullptr;
    *expected_len = expected_;
    return live() || moved_ ? d : DataDir::None;
}

// The HBA may look at the expected length from inside the first callback.
void HdRequest::set_expected(uint32_t n) {
    expected_ = n;
    if (expected_out_) *expected_out_ = n;
}

bool HdRequest::ensure_buffer(int idx, size_t n) {
    if (n > buf_size_[idx]) {
        bufs_[idx] = n <= kChunkBytes ? pool_->take() : alloc_aligned(n);
        if (n <= kChunkBytes) n = kChunkBytes;
        buf_size_[idx] = bufs_[idx] ? n : 0;
        if (!bufs_[idx]) return false;
    }
    return true;
}

// Hands a chunk to the HBA. It may continue from inside the call.
void HdRequest::announce(int idx, uint32_t len) {
    hba_idx_ = idx;
    cur_len_ = len;
    hba_busy_ = true;
    if (client_) client_->transfer_data(*this, len);
}

DataDir HdRequest::no_data_good() {
    complete_good();
    return DataDir::None;
}

DataDir HdRequest::dispatch() {
    const uint8_t opc = cdb_[0];
    const size_t need = cdb_length(opc);
    if (need == 0 || cdb_len_ < need) return fail(kInvalidOpcode);
    std::span<const uint8_t> c(cdb_.data(), need);
    MPQ_TRACE(scsi_disk_new_request, lun_, tag_, cdb_text(c).c_str());

    // A pending unit attention is reported once, to the first command
    // that is not INQUIRY, REPORT LUNS or REQUEST SENSE, whichever LUN it
    // names (stock QEMU's scsi-hd keeps one unit attention per device);
    // REQUEST SENSE then returns it from the sense data.
    ScsiHdState& st = dev_->state_;
    if ((st.unit_attention || st.luns_changed || st.capacity_changed) && opc != op::kInquiry &&
        opc != op::kReportLuns && opc != op::kRequestSense) {
        Sense ua = st.unit_attention ? kResetOccurred : st.luns_changed ? kReportedLunsChanged : kCapacityChanged;
        if (st.unit_attention) st.unit_attention = false;
        else if (st.luns_changed) st.luns_changed = false;
        else st.capacity_changed = false;
        return fail(ua);
    }

    if (lun_ != dev_->props_.lun) {
        if (opc == op::kInquiry) {
            uint32_t alloc = allocation_length(c);
            return start_emulated(emulate_inquiry_bad_lun(c, lun_), alloc);
        }
        // REPORT LUNS is answered by the logical units that exist (stock
        // QEMU's SCSI target answers only INQUIRY and REQUEST SENSE for
        // another LUN): here it is LOGICAL UNIT NOT SUPPORTED like the rest.
        if (opc == op::kRequestSense) {
            EmulResult r;
            r.exact_alloc = false;
            r.data = build_sense(kLunNotSupported, c[1] & 1);
            return start_emulated(std::move(r), c[4]);
        }
        return fail(kLunNotSupported);
    }

    ScsiHdState& s = dev_->state_;
    // The sense data of a CHECK CONDITION lives until the next command on
    // this logical unit: only a REQUEST SENSE right after it sees it.
    if (opc != op::kRequestSense && lun_ == dev_->props_.lun) s.sense = kNoSense;

    if (is_rw(opc)) return start_rw();
    const HdView v = dev_->view();
    switch (opc) {
        case op::kTestUnitReady:
        case op::kStartStopUnit:
        case op::kAllowMediumRemoval:
        case op::kReserve6:
        case op::kRelease6:
        case op::kReserve10:
        case op::kRelease10:
            return no_data_good();
        case op::kFormatUnit:
            MPQ_TRACE(scsi_disk_emulate_command_FORMAT_UNIT, size_t{0});
            if (c[1] & 0x10) return fail(kInvalidField);  // FMTDATA: no parameter list support
            return no_data_good();
        case op::kSeek10:
            MPQ_TRACE(scsi_disk_emulate_command_SEEK_10, uint64_t{be32(&c[2])});
            if (be32(&c[2]) >= v.blocks) return fail(kLbaOutOfRange);
            return no_data_good();
        case op::kRequestSense:
            return start_request_sense();
        case op::kInquiry:
            return start_emulated(emulate_inquiry(v, c), allocation_length(c));
        case op::kModeSense6:
        case op::kModeSense10:
            MPQ_TRACE(scsi_disk_emulate_mode_sense, opc == op::kModeSense6 ? 6 : 10, c[2] & 0x3f, size_t{allocation_length(c)}, c[2] >> 6);
            return start_emulated(emulate_mode_sense(v, c), allocation_length(c));
        case op::kReadCapacity10:
            return start_emulated(emulate_read_capacity10(v, c), 8);
        case op::kServiceActionIn16:
            MPQ_TRACE(scsi_disk_emulate_command_SAI_16);
            return start_emulated(emulate_read_capacity16(v, c), allocation_length(c));
        case op::kReportLuns:
            return start_emulated(emulate_report_luns(v, c), allocation_length(c));
        case op::kModeSelect6:
        case op::kModeSelect10: {
            uint32_t len = opc == op::kModeSelect6 ? c[4] : be16(&c[7]);
            if (opc == op::kModeSelect6) MPQ_TRACE(scsi_disk_emulate_command_MODE_SELECT, size_t{len});
            else MPQ_TRACE(scsi_disk_emulate_command_MODE_SELECT_10, size_t{len});
            if (len == 0) return no_data_good();
            return start_data_out(Kind::ModeSelect, len);
        }
        case op::kSyncCache10:
        case op::kSyncCache16:
            return start_flush();
        case op::kVerify10:
        case op::kVerify12:
        case op::kVerify16:
            MPQ_TRACE(scsi_disk_emulate_command_VERIFY, (c[1] >> 1) & 3);
            return start_verify();
        case op::kWriteSame10:
        case op::kWriteSame16:
            MPQ_TRACE(scsi_disk_emulate_command_WRITE_SAME, opc == op::kWriteSame10 ? 10 : 16, size_t{expected_});
            return start_write_same();
        case op::kUnmap:
            MPQ_TRACE(scsi_disk_emulate_command_UNMAP, size_t{be16(&c[7])});
            return start_unmap();
        default:
            MPQ_TRACE(scsi_disk_emulate_command_UNKNOWN, opc, "");
            return fail(kInvalidOpcode);
    }
}

DataDir HdRequest::start_emulated(EmulResult r, uint32_t alloc) {
    if (!r.ok) return fail(r.sense);
    if (alloc > kMaxAllocLen) return fail(kInvalidField);
    set_expected(alloc);
    uint32_t n = r.exact_alloc ? alloc : std::min<uint32_t>(alloc, static_cast<uint32_t>(r.data.size()));
    if (n == 0) return no_data_good();
    if (!set_buffer(n)) return fail(kInvalidField);
    std::memset(bufs_[0].get(), 0, n);
    std::memcpy(bufs_[0].get(), r.data.data(), std::min<size_t>(n, r.data.size()));
    kind_ = Kind::Emulated;
    dir_ = DataDir::FromDevice;
    moved_ = n;
    announce(0, n);
    return DataDir::FromDevice;
}

DataDir HdRequest::start_request_sense() {
    ScsiHdState& s = dev_->state_;
    Sense sn = kNoSense;
    if (s.unit_attention) {
        sn = kResetOccurred;
        s.unit_attention = false;
    } else if (s.luns_changed) {
        sn = kReportedLunsChanged;
        s.luns_changed = false;
    } else if (s.capacity_changed) {
        sn = kCapacityChanged;
        s.capacity_changed = false;
    } else {
        sn = s.sense;
    }
    s.sense = kNoSense;
    EmulResult r;
    // Pending sense data goes out as it is (18 bytes fixed, 8 descriptor,
    // cut to the allocation length); with nothing pending the NO SENSE
    // answer is padded with zeros to the allocation length like the other
    // emulated commands, as stock QEMU's scsi-hd does (its SCSI target
    // answers the former, the disk the latter): the cumulative byte count
    // and the phase that follows a longer DATA IN move depend on it.
    r.exact_alloc = sn.key == kNoSense.key && sn.asc == kNoSense.asc && sn.ascq == kNoSense.ascq;
    r.data = build_sense(sn, cdb_[1] & 0x01);
    return start_emulated(std::move(r), cdb_[4]);
}

void HdRequest::continue_transfer() {
    if (!live() || !hba_busy_) return;
    auto self = shared_from_this();
    hba_busy_ = false;
    switch (kind_) {
        case Kind::Emulated:
            complete_good();
            return;
        case Kind::Read:
            pump_read();
            return;
        case Kind::Write: {
            const int idx = hba_idx_;
            moved_ += cur_len_;
            wr_busy_[idx] = true;
            ++wr_inflight_;
            dev_->backend_.write(hba_off_, std::span<const uint8_t>(bufs_[idx].get(), cur_len_),
                                 guard([idx](HdRequest* r, IoStatus st) { r->write_done(idx, std::move(st)); }));
            pump_write();
            return;
        }
        case Kind::ModeSelect:
        case Kind::Unmap:
        case Kind::WriteSame:
            moved_ += cur_len_;
            data_out_received();
            return;
    }
}

void HdRequest::io_failed(const IoStatus& st, bool writing) {
    // The guest sees every error as sense data; the log gets the first few
    // (a failing disk must not flood it).
    if (dev_ && dev_->io_errors_++ < 10)
        log::warn("scsi-hd '{}': host {} error reported to the guest: {}", dev_->props_.id,
                  writing ? "write" : "read", st.error().message);
    complete_check(sense_from_error(st.error(), writing));
}

// ---- READ / WRITE -------------------------------------------------------

DataDir HdRequest::start_rw() {
    const uint8_t opc = cdb_[0];
    uint64_t lba = 0;
    uint32_t nblk = 0;
    uint8_t flags = cdb_[1];
    switch (opc) {
        case op::kRead6:
        case op::kWrite6:
            lba = be24(&cdb_[1]) & 0x1fffff;
            nblk = cdb_[4] ? cdb_[4] : 256;
            flags = 0;
            break;
        case op::kRead10: case op::kWrite10: case op::kWriteVerify10:
            lba = be32(&cdb_[2]);
            nblk = be16(&cdb_[7]);
            break;
        case op::kRead12: case op::kWrite12: case op::kWriteVerify12:
            lba = be32(&cdb_[2]);
            nblk = be32(&cdb_[6]);
            break;
        default:  // 16-byte forms
            lba = be64(&cdb_[2]);
            nblk = be32(&cdb_[10]);
            break;
    }
    const bool write = opc != op::kRead6 && opc != op::kRead10 && opc != op::kRead12 &&
                       opc != op::kRead16;
    const bool verify = opc == op::kWriteVerify10 || opc == op::kWriteVerify12 ||
                        opc == op::kWriteVerify16;
    if (flags & 0xe0) return fail(kInvalidField);  // RDPROTECT / WRPROTECT: no protection info
    if (write && dev_->backend_.read_only()) return fail(kWriteProtected);
    const uint64_t blocks = dev_->blocks();
    if (lba > blocks || nblk > blocks - lba) return fail(kLbaOutOfRange);
    const uint32_t bs = dev_->state_.block_size;
    const uint64_t bytes = uint64_t{nblk} * bs;
    if (bytes > UINT32_MAX) return fail(kInvalidField);
    if (bytes == 0) return no_data_good();
    set_expected(static_cast<uint32_t>(bytes));
    const uint32_t chunk = static_cast<uint32_t>(std::min<uint64_t>(bytes, kChunkBytes));
    if (!ensure_buffer(0, chunk)) return fail(kInvalidField);
    if (bytes > kChunkBytes && !ensure_buffer(1, chunk)) return fail(kInvalidField);
    if (!write) {
        MPQ_TRACE(scsi_disk_dma_command_READ, lba, nblk);
        kind_ = Kind::Read;
        dir_ = DataDir::FromDevice;
        rd_off_ = lba * bs;
        rd_left_ = bytes;
        issue_read(0);
        return DataDir::FromDevice;
    }
    MPQ_TRACE(scsi_disk_dma_command_WRITE, verify ? "And Verify " : "", lba, static_cast<int>(nblk));
    kind_ = Kind::Write;
    dir_ = DataDir::ToDevice;
    flush_after_ = verify || (flags & 0x08) || dev_->state_.write_cache == WriteCache::Off;
    ann_off_ = lba * bs;
    ann_left_ = bytes;
    pump_write();
    return DataDir::ToDevice;
}

void HdRequest::issue_read(int idx) {
    const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(rd_left_, kChunkBytes));
    const uint64_t off = rd_off_;
    rd_off_ += len;
    rd_left_ -= len;
    rd_inflight_ = idx;
    dev_->backend_.read(off, std::span<uint8_t>(bufs_[idx].get(), len),
                        guard([idx, len](HdRequest* r, IoStatus st) { r->read_done(idx, len, std::move(st)); }));
}

void HdRequest::read_done(int idx, uint32_t len, IoStatus st) {
    rd_inflight_ = -1;
    if (!st) return io_failed(st, false);
    MPQ_TRACE(scsi_disk_read_complete, tag_, size_t{len});
    ready_idx_ = idx;
    ready_len_ = len;
    pump_read();
}

// Keeps one chunk with the HBA and reads the next one meanwhile.
void HdRequest::pump_read() {
    if (hba_busy_) return;
    if (ready_idx_ >= 0) {
        const int idx = ready_idx_;
        const uint32_t len = ready_len_;
        ready_idx_ = -1;
        if (rd_inflight_ < 0 && rd_left_ > 0) issue_read(1 - idx);
        moved_ += len;
        announce(idx, len);
        return;
    }
    if (rd_inflight_ >= 0) return;  // the next chunk is on its way
    if (rd_left_ > 0) {
        issue_read(hba_idx_);
        return;
    }
    complete_good();
}

// Lets the HBA fill a free buffer while the other one is being written.
void HdRequest::pump_write() {
    if (hba_busy_) return;
    if (ann_left_ > 0) {
        int idx = !wr_busy_[0] ? 0 : (!wr_busy_[1] && bufs_[1]) ? 1 : -1;
        if (idx < 0) return;  // both buffers are being written
        const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(ann_left_, kChunkBytes));
        hba_off_ = ann_off_;
        ann_off_ += len;
        ann_left_ -= len;
        announce(idx, len);
        return;
    }
    if (wr_inflight_ == 0) after_writes();
}

void HdRequest::write_done(int idx, IoStatus st) {
    wr_busy_[idx] = false;
    --wr_inflight_;
    if (!st) return io_failed(st, true);
    pump_write();
}

// GOOD only once the data is where the guest was promised it is.
void HdRequest::after_writes() {
    if (!flush_after_) {
        complete_good();
        return;
    }
    dev_->backend_.flush(guard([](HdRequest* r, IoStatus st) {
        if (!st) return r->io_failed(st, true);
        r->complete_good();
    }));
}

DataDir HdRequest::start_flush() {
    dev_->backend_.flush(guard([](HdRequest* r, IoStatus st) {
        if (!st) return r->io_failed(st, true);
        r->complete_good();
    }));
    return DataDir::None;
}

DataDir HdRequest::start_verify() {
    if (cdb_[1] & 0x06) return fail(kInvalidField);  // BYTCHK: no compare support
    uint64_t lba;
    uint32_t n;
    if (cdb_[0] == op::kVerify10) {
        lba = be32(&cdb_[2]);
        n = be16(&cdb_[7]);
    } else if (cdb_[0] == op::kVerify12) {
        lba = be32(&cdb_[2]);
        n = be32(&cdb_[6]);
    } else {
        lba = be64(&cdb_[2]);
        n = be32(&cdb_[10]);
    }
    const uint64_t blocks = dev_->blocks();
    if (lba > blocks || n > blocks - lba) return fail(kLbaOutOfRange);
    return no_data_good();
}

// ---- parameter-list commands --------------------------------------------

DataDir HdRequest::start_data_out(Kind k, uint32_t len) {
    if (!set_buffer(len)) return fail(kInvalidField);
    std::memset(bufs_[0].get(), 0, len);
    kind_ = k;
    dir_ = DataDir::ToDevice;
    set_expected(len);
    announce(0, len);
    return DataDir::ToDevice;
}

void HdRequest::data_out_received() {
    switch (kind_) {
        case Kind::ModeSelect: finish_mode_select(); break;
        case Kind::Unmap: finish_unmap(); break;
        case Kind::WriteSame: finish_write_same(); break;
        default: break;
    }
}

void HdRequest::finish_mode_select() {
    // PF=1, SP=0 only; checked once the parameter list has arrived, as
    // stock QEMU's scsi-hd does (the guest sees the DATA OUT phase).
    if ((cdb_[1] & 0x11) != 0x10) {
        complete_check(kInvalidField);
        return;
    }
    const bool ten = cdb_[0] == op::kModeSelect10;
    auto out = parse_mode_select(dev_->view(), ten, std::span<const uint8_t>(bufs_[0].get(), cur_len_));
    if (!out.ok) {
        complete_check(out.sense);
        return;
    }
    if (out.write_cache != dev_->state_.write_cache)
        log::info("scsi-hd '{}': guest turned the write cache {}", dev_->props_.id,
                  out.write_cache == WriteCache::On ? "on" : "off");
    dev_->state_.write_cache = out.write_cache;
    dev_->state_.block_size = out.block_size;
    complete_good();
}

DataDir HdRequest::start_unmap() {
    // ANCHOR and write protection are checked once the parameter list has
    // arrived, as stock QEMU's scsi-hd does: the guest sees the DATA OUT
    // phase either way.
    uint32_t len = be16(&cdb_[7]);
    if (len == 0) return no_data_good();
    return start_data_out(Kind::Unmap, len);
}

void HdRequest::finish_unmap() {
    std::span<const uint8_t> p(bufs_[0].get(), cur_len_);
    auto bad = [&](Sense s) {
        complete_check(s);
    };
    if (cdb_[1] & 0x01) return bad(kInvalidField);  // ANCHOR
    if (p.size() < 8 || p.size() < size_t{be16(&p[0])} + 2 || p.size() < size_t{be16(&p[2])} + 8 ||
        (be16(&p[2]) & 15))
        return bad(kParamListLengthError);
    const size_t n = be16(&p[2]) / 16;
    if (n > kMaxUnmapDescriptors) return bad(kInvalidParamList);
    if (dev_->backend_.read_only()) return bad(kWriteProtected);
    const uint64_t blocks = dev_->blocks();
    const uint32_t bs = dev_->state_.block_size;
    unmap_.clear();
    for (size_t i = 0; i < n; ++i) {
        const uint8_t* d = &p[8 + 16 * i];
        uint64_t lba = be64(d);
        uint32_t cnt = be32(d + 8);
        if (lba > blocks || cnt > blocks - lba) return bad(kLbaOutOfRange);
        if (cnt) unmap_.emplace_back(lba * bs, uint64_t{cnt} * bs);
    }
    unmap_next_ = 0;
    unmap_next();
}

void HdRequest::unmap_next() {
    if (unmap_next_ >= unmap_.size()) {
        complete_good();
        return;
    }
    auto [off, len] = unmap_[unmap_next_++];
    dev_->backend_.discard(off, len, guard([](HdRequest* r, IoStatus st) {
        if (!st) return r->io_failed(st, true);
        r->unmap_next();
    }));
}

// WRITE SAME takes its one block of data before it looks at the CDB's
// range and flags: stock QEMU's scsi-hd checks them only once the data has
// arrived, so a guest sees the DATA OUT phase (and a data move that is cut
// short by the status) for a bad range too.
DataDir HdRequest::start_write_same() {
    const bool sixteen = cdb_[0] == op::kWriteSame16;
    const uint8_t f = cdb_[1];
    if (f & 0xe0) return fail(kInvalidField);                       // WRPROTECT
    const bool ndob = sixteen && (f & 0x01);
    const uint32_t bs = dev_->state_.block_size;
    flush_after_ = dev_->state_.write_cache == WriteCache::Off;
    if (ndob) {
        if (!write_same_range_ok()) return DataDir::None;
        kind_ = Kind::WriteSame;
        dev_->backend_.write_zeroes(io_off_, io_left_, guard([](HdRequest* r, IoStatus st) {
            if (!st) return r->io_failed(st, true);
            r->after_writes();
        }));
        return DataDir::None;
    }
    return start_data_out(Kind::WriteSame, bs);
}

// The checks stock QEMU makes when WRITE SAME's data is in: flags, write
// protection, the LBA range (and ours: the range fits one chunk). Sets the
// byte range on success, completes the request with CHECK CONDITION if not.
bool HdRequest::write_same_range_ok() {
    const bool sixteen = cdb_[0] == op::kWriteSame16;
    const uint64_t lba = sixteen ? be64(&cdb_[2]) : be32(&cdb_[2]);
    const uint32_t n = sixteen ? be32(&cdb_[10]) : be16(&cdb_[7]);
    const uint32_t bs = dev_->state_.block_size;
    Sense bad = kNoSense;
    const uint64_t blocks = dev_->blocks();
    if (n == 0 || (cdb_[1] & 0x16)) bad = kInvalidField;            // ANCHOR, PBDATA, LBDATA
    else if (dev_->backend_.read_only()) bad = kWriteProtected;
    else if (lba > blocks || n > blocks - lba) bad = kLbaOutOfRange;
    else if (uint64_t{n} * bs > kChunkBytes) bad = kInvalidField;
    if (bad.key != kNoSense.key || bad.asc != kNoSense.asc) {
        fail(bad);
        return false;
    }
    io_off_ = lba * bs;
    io_left_ = uint64_t{n} * bs;
    return true;
}

void HdRequest::finish_write_same() {
    if (!write_same_range_ok()) return;
    const uint32_t bs = dev_->state_.block_size;
    // The data-out buffer is a whole chunk, and the range fits one.
    if (!set_buffer(io_left_)) {
        complete_check(kInvalidField);
        return;
    }
    uint8_t* b = bufs_[0].get();
    const bool zero = std::all_of(b, b + bs, [](uint8_t x) { return x == 0; });
    if (zero) {
        dev_->backend_.write_zeroes(io_off_, io_left_, guard([](HdRequest* r, IoStatus st) {
            if (!st) return r->io_failed(st, true);
            r->after_writes();
        }));
        return;
    }
    for (uint64_t o = bs; o < io_left_; o += bs) std::memcpy(b + o, b, bs);
    dev_->backend_.write(io_off_, std::span<const uint8_t>(b, io_left_),
                         guard([](HdRequest* r, IoStatus st) {
                             if (!st) return r->io_failed(st, true);
                             r->after_writes();
                         }));
}

// ---- saved state ---------------------------------------------------------
//
// A request is saved only while the disk is quiesced: no block I/O in
// flight, so a live request is always waiting for the HBA to move the chunk
// it announced. What is saved is the CDB, the bytes moved so far and that
// chunk; the rest follows from the CDB. A read-ahead chunk is not saved: the
// restored request reads it again (a read can be repeated).

Result<RequestSnapshot> HdRequest::snapshot() const {
    if (phase_ != Phase::Active || !hba_busy_)
        return mpq::fail("scsi-hd request tag {}: not waiting for its HBA", tag_);
    if (rd_inflight_ >= 0 || wr_inflight_ != 0 || unmap_next_ != 0 || !unmap_.empty())
        return mpq::fail("scsi-hd request tag {}: block I/O in flight (not quiesced)", tag_);
    RequestSnapshot s;
    s.tag = tag_;
    s.lun = lun_;
    s.cdb = cdb_;
    s.cdb_len = static_cast<uint8_t>(cdb_len_);
    s.dir = dir_;
    s.expected = expected_;
    s.moved = moved_;
    const uint8_t* b = bufs_[hba_idx_].get();
    if (!b) return mpq::fail("scsi-hd request tag {}: no chunk buffer", tag_);
    s.chunk.assign(b, b + cur_len_);
    s.flush_after = flush_after_;
    return s;
}

namespace {

struct RwParams {
    uint64_t lba = 0;
    uint32_t nblk = 0;
    bool write = false;
};

RwParams parse_rw(const std::array<uint8_t, kMaxCdb>& c) {
    RwParams p;
    switch (c[0]) {
        case op::kRead6:
        case op::kWrite6:
            p.lba = be24(&c[1]) & 0x1fffff;
            p.nblk = c[4] ? c[4] : 256;
            break;
        case op::kRead10: case op::kWrite10: case op::kWriteVerify10:
            p.lba = be32(&c[2]);
            p.nblk = be16(&c[7]);
            break;
        case op::kRead12: case op::kWrite12: case op::kWriteVerify12:
            p.lba = be32(&c[2]);
            p.nblk = be32(&c[6]);
            break;
        default:
            p.lba = be64(&c[2]);
            p.nblk = be32(&c[10]);
            break;
    }
    p.write = c[0] != op::kRead6 && c[0] != op::kRead10 && c[0] != op::kRead12 && c[0] != op::kRead16;
    return p;
}

}  // namespace

// Rebuilds the request from a snapshot that may be hostile: every count is
// checked against the CDB, the medium and the chunk size, exactly the
// invariants the running request keeps.
IoStatus HdRequest::resume_from(const RequestSnapshot& s) {
    auto bad = [&](std::string_view why) {
        return mpq::fail("saved request tag {} (opcode {:#04x}): {}", s.tag, s.cdb[0], why);
    };
    const uint8_t opc = cdb_[0];
    const size_t need = cdb_length(opc);
    if (need == 0 || cdb_len_ < need) return bad("CDB too short for its opcode");
    if (s.chunk.empty()) return bad("no chunk announced");
    if (s.chunk.size() > kChunkBytes) return bad("chunk larger than the chunk size");
    const ScsiHdState& st = dev_->state_;
    const uint32_t bs = st.block_size;
    const uint32_t n = static_cast<uint32_t>(s.chunk.size());
    Kind kind;
    if (is_rw(opc)) {
        if (lun_ != dev_->props_.lun) return bad("READ/WRITE for a LUN the disk does not have");
        RwParams p = parse_rw(cdb_);
        const uint64_t blocks = dev_->blocks();
        if (p.lba > blocks || p.nblk > blocks - p.lba) return bad("LBA range beyond the medium");
        const uint64_t bytes = uint64_t{p.nblk} * bs;
        if (bytes == 0 || bytes > UINT32_MAX || bytes != s.expected) return bad("length does not match the CDB");
        if (s.dir != (p.write ? DataDir::ToDevice : DataDir::FromDevice)) return bad("direction does not match the CDB");
        if (p.write && dev_->backend_.read_only()) return bad("write to a read-only drive");
        // Chunks start at multiples of the chunk size from the command's start.
        const uint32_t done_before = p.write ? s.moved : s.moved - std::min(s.moved, n);
        if (!p.write && s.moved < n) return bad("moved count smaller than the chunk");
        if (done_before % kChunkBytes || done_before >= bytes) return bad("moved count not at a chunk boundary");
        if (n != std::min<uint64_t>(bytes - done_before, kChunkBytes)) return bad("chunk length does not follow from the CDB");
        const uint32_t first = static_cast<uint32_t>(std::min<uint64_t>(bytes, kChunkBytes));
        if (!ensure_buffer(0, first)) return bad("out of memory");
        if (bytes > kChunkBytes && !ensure_buffer(1, first)) return bad("out of memory");
        kind = p.write ? Kind::Write : Kind::Read;
        if (p.write) {
            hba_off_ = p.lba * bs + done_before;
            ann_off_ = hba_off_ + n;
            ann_left_ = bytes - done_before - n;
            flush_after_ = s.flush_after;
        } else {
            rd_off_ = p.lba * bs + s.moved;
            rd_left_ = bytes - s.moved;
        }
    } else if (opc == op::kModeSelect6 || opc == op::kModeSelect10 || opc == op::kUnmap) {
        const uint32_t len = opc == op::kModeSelect6 ? cdb_[4] : opc == op::kModeSelect10 ? be16(&cdb_[7]) : be16(&cdb_[7]);
        if (s.dir != DataDir::ToDevice || s.moved != 0 || n != len || s.expected != len)
            return bad("parameter list does not match the CDB");
        if (lun_ != dev_->props_.lun) return bad("command for a LUN the disk does not have");
        if (opc == op::kUnmap && dev_->backend_.read_only()) return bad("UNMAP on a read-only drive");
        if (!set_buffer(n)) return bad("out of memory");
        kind = opc == op::kUnmap ? Kind::Unmap : Kind::ModeSelect;
    } else if (opc == op::kWriteSame10 || opc == op::kWriteSame16) {
        // The range and flags are checked when the data is in (as the
        // running request does), so a saved request may hold a bad one.
        if (lun_ != dev_->props_.lun) return bad("command for a LUN the disk does not have");
        if (cdb_[1] & 0xe0) return bad("WRITE SAME with WRPROTECT");
        if (opc == op::kWriteSame16 && (cdb_[1] & 0x01)) return bad("WRITE SAME with NDOB has no data");
        if (s.dir != DataDir::ToDevice || s.moved != 0 || n != bs || s.expected != bs)
            return bad("WRITE SAME data does not match the block size");
        flush_after_ = s.flush_after;
        if (!set_buffer(n)) return bad("out of memory");
        kind = Kind::WriteSame;
    } else {
        // An emulated data-in command: the whole answer is the one chunk.
        if (s.dir != DataDir::FromDevice || s.moved != n || n > s.expected || s.expected > kMaxAllocLen)
            return bad("emulated data does not match its allocation length");
        if (!set_buffer(n)) return bad("out of memory");
        kind = Kind::Emulated;
    }
    std::memcpy(bufs_[0].get(), s.chunk.data(), n);
    kind_ = kind;
    dir_ = s.dir;
    expected_ = s.expected;
    moved_ = s.moved;
    phase_ = Phase::Active;
    hba_idx_ = 0;
    cur_len_ = n;
    hba_busy_ = true;  // the HBA owns the chunk; it continues when it is done
    return {};
}

Result<RequestSnapshot> ScsiHd::save_request(const Request& req) const {
    auto* r = dynamic_cast<const HdRequest*>(&req);
    if (!r || r->device() != this) return mpq::fail("scsi-hd '{}': not one of its requests", props_.id);
    return r->snapshot();
}

Result<std::shared_ptr<Request>> ScsiHd::restore_request(const RequestSnapshot& snap, RequestClient* client) {
    if (snap.cdb_len == 0 || snap.cdb_len > kMaxCdb) return mpq::fail("saved request: CDB length {}", snap.cdb_len);
    if (snap.lun > 255) return mpq::fail("saved request: LUN {} out of range", snap.lun);
    auto r = std::make_shared<HdRequest>(this, snap.tag, snap.lun,
                                         std::span<const uint8_t>(snap.cdb.data(), snap.cdb_len), client);
    if (auto st = r->resume_from(snap); !st.ok()) {
        r->cancel();
        return mpq::fail("scsi-hd '{}': {}", props_.id, st.error().message);
    }
    return std::shared_ptr<Request>(std::move(r));
}

Result<ScsiHdSnapshot> scsi_hd_save(const Device& dev) {
    auto* hd = dynamic_cast<const ScsiHd*>(&dev);
    if (!hd) return mpq::fail("'{}' is not a scsi-hd", dev.id());
    ScsiHdSnapshot s;
    s.unit_attention = hd->state_.unit_attention;
    s.capacity_changed = hd->state_.capacity_changed;
    s.luns_changed = hd->state_.luns_changed;
    s.sense = hd->state_.sense;
    s.write_cache = hd->state_.write_cache;
    s.block_size = hd->state_.block_size;
    s.capacity_bytes = hd->backend_.length();
    s.logical_block_size = hd->props_.logical_block_size;
    s.lun = hd->props_.lun;
    s.vendor = hd->props_.vendor;
    s.product = hd->props_.product;
    s.ver = hd->props_.ver;
    s.serial = hd->props_.serial;
    s.wwn = hd->props_.wwn;
    return s;
}

IoStatus scsi_hd_restore(Device& dev, const ScsiHdSnapshot& s) {
    auto* hd = dynamic_cast<ScsiHd*>(&dev);
    if (!hd) return mpq::fail("'{}' is not a scsi-hd", dev.id());
    const std::string& id = hd->props_.id;
    if (s.logical_block_size != hd->props_.logical_block_size)
        return mpq::fail("scsi-hd '{}': saved with logical_block_size={}, this one has {}", id,
                         s.logical_block_size, hd->props_.logical_block_size);
    if (s.lun != hd->props_.lun)
        return mpq::fail("scsi-hd '{}': saved with lun={}, this one has {}", id, s.lun, hd->props_.lun);
    // What the guest read from INQUIRY / VPD must not change under it.
    const ScsiHdProps& p = hd->props_;
    if (s.vendor != p.vendor || s.product != p.product || s.ver != p.ver)
        return mpq::fail("scsi-hd '{}': saved as '{}' '{}' '{}', this one is '{}' '{}' '{}'", id, s.vendor,
                         s.product, s.ver, p.vendor, p.product, p.ver);
    if (s.serial != p.serial) return mpq::fail("scsi-hd '{}': saved with serial '{}', this one has '{}'", id, s.serial, p.serial);
    if (s.wwn != p.wwn) return mpq::fail("scsi-hd '{}': saved with wwn {:#x}, this one has {:#x}", id, s.wwn, p.wwn);
    if (s.block_size != 512 && s.block_size != 4096)
        return mpq::fail("scsi-hd '{}': saved block size {} is not 512 or 4096", id, s.block_size);
    if (s.capacity_bytes != hd->backend_.length())
        return mpq::fail("scsi-hd '{}': medium was {} bytes when saved, is {} now", id, s.capacity_bytes,
                         hd->backend_.length());
    if (s.write_cache != WriteCache::On && s.write_cache != WriteCache::Off)
        return mpq::fail("scsi-hd '{}': bad write-cache value", id);
    hd->state_.unit_attention = s.unit_attention;
    hd->state_.capacity_changed = s.capacity_changed;
    hd->state_.luns_changed = s.luns_changed;
    hd->state_.sense = s.sense;
    hd->state_.write_cache = s.write_cache;
    hd->state_.block_size = s.block_size;
    return {};
}

// ---- construction -------------------------------------------------------

namespace {

IoStatus check_ascii(const char* what, const std::string& s, size_t max) {
    if (s.size() > max) return mpq::fail("scsi-hd: {} '{}' is longer than {} characters", what, s, max);
    for (char ch : s)
        if (ch < 0x20 || ch > 0x7e)
            return mpq::fail("scsi-hd: {} contains a non-printable character", what);
    return {};
}

}  // namespace

Result<std::unique_ptr<Device>> make_scsi_hd(WorkQueue& wq, block::BlockBackend& backend,
                                             const ScsiHdProps& props) {
    const uint32_t bs = props.logical_block_size;
    if (bs != 512 && bs != 4096)
        return mpq::fail("scsi-hd: logical_block_size must be 512 or 4096, not {}", bs);
    if (props.scsi_id >= static_cast<unsigned>(kMaxTargets))
        return mpq::fail("scsi-hd: scsi-id {} out of range (0..{})", props.scsi_id, kMaxTargets - 1);
    if (props.lun > 255) return mpq::fail("scsi-hd: lun {} out of range (0..255)", props.lun);
    if (props.max_io_size < bs || props.max_io_size % bs || props.max_io_size > (64u << 20))
        return mpq::fail("scsi-hd: max_io_size must be a multiple of {} between {} and 64 MiB",
                         bs, bs);
    MPQ_TRY(check_ascii("vendor", props.vendor, 8));
    MPQ_TRY(check_ascii("product", props.product, 16));
    MPQ_TRY(check_ascii("ver", props.ver, 4));
    MPQ_TRY(check_ascii("serial", props.serial, 36));
    if (backend.length() < bs)
        return mpq::fail("scsi-hd: drive '{}' is smaller than one {}-byte block",
                         backend.options().id, bs);
    if (backend.length() % bs)
        log::warn("scsi-hd: drive '{}' size {} is not a multiple of {}; the tail is not visible",
                  backend.options().id, backend.length(), bs);
    return std::unique_ptr<Device>(new ScsiHd(wq, backend, props));
}

}  // namespace mpq::scsi
