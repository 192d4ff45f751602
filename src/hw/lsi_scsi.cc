// LSI53C895A SCSI side: the bus phases a target walks through (selection,
// MSG OUT, COMMAND, DATA, STATUS, MSG IN), disconnect/reselect with tagged
// queuing, and the scsi::RequestClient callbacks of the targets.
#include <algorithm>

#include <fmt/ranges.h>

#include "hw/lsi_impl.h"
#include "util/log.h"

namespace mpq::hw {

using namespace lsi;

namespace {

// SCSI messages.
constexpr uint8_t kMsgCommandComplete = 0x00;
constexpr uint8_t kMsgExtended = 0x01;
constexpr uint8_t kMsgSaveDataPointer = 0x02;
constexpr uint8_t kMsgDisconnect = 0x04;
constexpr uint8_t kMsgAbortTaskSet = 0x06;
constexpr uint8_t kMsgReject = 0x07;
constexpr uint8_t kMsgNop = 0x08;
constexpr uint8_t kMsgBusDeviceReset = 0x0c;
constexpr uint8_t kMsgAbortTag = 0x0d;
constexpr uint8_t kMsgClearQueue = 0x0e;
constexpr uint8_t kMsgSimpleTag = 0x20;
constexpr uint8_t kMsgHeadTag = 0x21;
constexpr uint8_t kMsgOrderedTag = 0x22;
constexpr uint8_t kMsgIdentify = 0x80;
// Extended message codes and how many bytes follow the code.
constexpr uint8_t kExtSdtr = 0x01;
constexpr uint8_t kExtWdtr = 0x03;
constexpr uint8_t kExtPpr = 0x04;

}  // namespace

// -------------------------------------------------------------- phases ----

void LsiController::set_phase(Phase p) {
    LsiRegs& r = s_.regs;
    uint8_t v = static_cast<uint8_t>(p);
    r.sstat1 = static_cast<uint8_t>((r.sstat1 & ~kPhaseMask) | v);
    r.sbcl = static_cast<uint8_t>((r.sbcl & ~kPhaseMask) | v | kSbclReq);
}

void LsiController::connect() {
    s_.regs.scntl1 |= kScntl1Con;
    s_.regs.sbcl |= kSbclBsy;
}

void LsiController::disconnect() {
    LsiRegs& r = s_.regs;
    r.scntl1 &= ~kScntl1Con;
    r.sstat1 &= ~kPhaseMask;
    r.sbcl = 0;
    // A connected command that has not finished goes back to the queue;
    // the target reselects once it has data or status.
    current_ = nullptr;
}

void LsiController::add_msg_byte(uint8_t b) {
    LsiScriptsState& sc = s_.scripts;
    if (sc.msg_len >= kLsiMsgQueueMax) {  // never grows past the bound
        MPQ_TRACE(lsi_add_msg_byte_error);
        return;
    }
    MPQ_TRACE(lsi_add_msg_byte, b);
    sc.msg[sc.msg_len++] = b;
}

// ---------------------------------------------------------- selection ----

void LsiController::bad_selection() {
    script_scsi_interrupt(0, kSist1Sto);
    disconnect();
}

void LsiController::exec_select(uint32_t id) {
    LsiRegs& r = s_.regs;
    r.sstat0 |= kSstat0Woa;
    if (!bus_.target(id)) {
        MPQ_TRACE(lsi_bad_selection, id);
        bad_selection();
        return;
    }
    LsiScriptsState& sc = s_.scripts;
    sc.target = static_cast<uint8_t>(id);
    sc.lun = 0;
    sc.tag_valid = false;
    sc.tag = 0;
    sc.msg_len = 0;
    connect();
    // QEMU's targets always go to MSG OUT, ATN or not; SeaBIOS relies on it.
    set_phase(Phase::MsgOut);
}

void LsiController::wait_disconnect() {
    s_.regs.scntl1 &= ~kScntl1Con;
    if (!current_) {
        if (Req* p = pending_request()) reselect(p);
    }
}

bool LsiController::wait_reselect_ready() {
    LsiRegs& r = s_.regs;
    if (r.istat0 & kIstatSigp) {
        r.dsp = r.dnad;
        s_.scripts.wait = LsiWait::None;
        return true;
    }
    if (current_) {
        s_.scripts.wait = LsiWait::None;
        return true;
    }
    if (Req* p = pending_request()) {
        s_.scripts.wait = LsiWait::None;
        reselect(p);
        return true;
    }
    return false;
}

LsiController::Req* LsiController::pending_request() {
    for (auto& r : reqs_)
        if (r.get() != current_ && (r->completed || r->off < r->avail)) return r.get();
    return nullptr;
}

void LsiController::reselect(Req* p) {
    LSI_TRACE("lsi {}: reselect target {} tag {}", id_, p->target, p->tagged ? p->tag : -1);
    LsiRegs& r = s_.regs;
    LsiScriptsState& sc = s_.scripts;
    current_ = p;
    sc.target = p->target;
    sc.lun = p->lun;
    sc.tag_valid = p->tagged;
    sc.tag = p->tag;
    r.ssid = static_cast<uint8_t>(0x80 | p->target);
    if (!(r.dcntl & kDcntlCom)) r.sfbr = static_cast<uint8_t>(1u << (p->target & 7));
    MPQ_TRACE(lsi_reselect, p->target);
    connect();
    set_phase(Phase::MsgIn);
    sc.msg_len = 0;
    add_msg_byte(static_cast<uint8_t>(kMsgIdentify | (p->lun & 7)));
    if (p->tagged) {
        add_msg_byte(kMsgSimpleTag);
        add_msg_byte(p->tag);
    }
    if (p->completed) {
        sc.status = p->status;
        sc.msg_action = LsiMsgAction::Status;
        free_request(p);
    } else {
        sc.msg_action = p->out ? LsiMsgAction::DataOut : LsiMsgAction::DataIn;
    }
}

// ---------------------------------------------------------- data phase ----

void LsiController::bad_phase(Phase next) {
    LsiRegs& r = s_.regs;
    LSI_TRACE("lsi {}: phase mismatch dbc {} -> {}", id_, r.dbc, (r.ccntl0 & kCcntl0Enpmj) ? "jump" : "MA");
    // Hardware semantics: RBC = bytes not moved, UA = next address.
    r.rbc = r.dbc;
    r.ua = r.dnad;
    move_mismatched_ = true;
    s_.scripts.wait = LsiWait::None;
    if (r.ccntl0 & kCcntl0Enpmj) {
        if (r.ccntl0 & kCcntl0Pmjctl)
            r.dsp = s_.scripts.move_out ? r.pmjad1 : r.pmjad2;
        else
            r.dsp = (r.scntl2 & kScntl2Wsr) ? r.pmjad2 : r.pmjad1;
        MPQ_TRACE(lsi_bad_phase_jump, r.dsp);
    } else {
        MPQ_TRACE(lsi_bad_phase_interrupt);
        script_scsi_interrupt(kSist0Ma, 0);
    }
    set_phase(next);
}

void LsiController::do_data_move() {
    LsiRegs& r = s_.regs;
    LsiScriptsState& sc = s_.scripts;
    sc.wait = LsiWait::None;
    while (r.dbc > 0) {
        Req* q = current_;
        if (!q) {
            if (connected() && phase() == Phase::Status) {
                bad_phase(Phase::Status);
            } else {
                // No command behind this data phase (a guest script out of
                // step with the bus): never an assertion, an interrupt.
                script_scsi_interrupt(kSist0Udc, 0);
                stop_scripts();
            }
            return;
        }
        if (q->completed) {  // defensive: completion normally clears current_
            bad_phase(Phase::Status);
            return;
        }
        if (q->off >= q->avail) {
            MPQ_TRACE(lsi_do_dma_unavailable);
            sc.wait = LsiWait::Data;
            return;
        }
        std::span<uint8_t> buf = q->req->buffer();
        if (q->avail > buf.size()) q->avail = static_cast<uint32_t>(buf.size());
        if (q->off >= q->avail) {
            sc.wait = LsiWait::Data;
            return;
        }
        uint32_t n = std::min(r.dbc, q->avail - q->off);
        std::span<uint8_t> part = buf.subspan(q->off, n);
        MPQ_TRACE(lsi_do_dma, sc.move_addr, static_cast<int>(n));
        Status st = sc.move_out ? move_read(sc.move_addr, part) : move_write(sc.move_addr, part);
        if (!st) {
            script_dma_interrupt(kDstatBf);
            return;
        }
        charge(1 + n / 4096);
        q->off += n;
        r.dbc -= n;
        r.dnad += n;
        sc.move_addr += n;
        r.csbc += n;
        if (pending_chip_reset_ || pending_bus_reset_ || current_ != q) return;
        if (q->off == q->avail) {
            q->off = q->avail = 0;
            // May call back synchronously (next chunk, or completion that
            // frees q): keep the request alive, never touch q afterwards.
            std::shared_ptr<scsi::Request> keep = q->req;
            keep->continue_transfer();
            // Until the target answers (next chunk or status) it does not
            // assert REQ: the move stays suspended even when its count is
            // exhausted, so the SCRIPTS that follow see the real next phase
            // (Linux tests WHEN STATUS right after the last data move).
            if (current_ == q && q->off >= q->avail && !pending_chip_reset_ && !pending_bus_reset_) {
                sc.wait = LsiWait::Data;
                return;
            }
        }
    }
}

// ------------------------------------------------------------- command ----

void LsiController::do_command() {
    LsiRegs& r = s_.regs;
    LsiScriptsState& sc = s_.scripts;
    uint8_t cdb[scsi::kMaxCdb] = {};
    MPQ_TRACE(lsi_do_command, r.dbc);
    uint32_t n = std::min<uint32_t>(r.dbc, scsi::kMaxCdb);
    if (n == 0) return;
    if (!bus_read(s_.scripts.move_addr, std::span<uint8_t>(cdb, n))) {
        script_dma_interrupt(kDstatBf);
        return;
    }
    r.sfbr = cdb[0];
    // As in stock QEMU the COMMAND, STATUS and MSG IN moves leave DBC at
    // what they were asked for (the CDB length at most 16) and DNAD at the
    // start, so DFIFO, CTEST5 and SBC derive from that count.
    r.dbc = n;
    if (current_) {
        // A reselected command is still connected: put it back in the
        // queue rather than lose it (it reselects again later).
        log::warn("lsi {}: COMMAND phase while a request is connected", id_);
        current_ = nullptr;
    }
    scsi::Device* dev = bus_.target(sc.target);
    if (!dev) {
        bad_selection();
        return;
    }
    if (reqs_.size() >= kLsiMaxRequests) {
        sc.status = static_cast<uint8_t>(scsi::Status::Busy);
        set_phase(Phase::Status);
        return;
    }
    auto q = std::make_unique<Req>();
    q->target = sc.target;
    q->lun = sc.lun;
    q->tagged = sc.tag_valid;
    q->tag = sc.tag;
    uint32_t tag = q->tagged ? q->tag : kLsiUntagged;
    std::shared_ptr<scsi::Request> req = dev->new_request(tag, q->lun, std::span<const uint8_t>(cdb, n), this);
    if (!req) {
        sc.status = static_cast<uint8_t>(scsi::Status::CheckCondition);
        set_phase(Phase::Status);
        return;
    }
    q->req = req;
    Req* raw = q.get();
    req->hba_private = raw;
    reqs_.push_back(std::move(q));
    current_ = raw;
    uint32_t expected = 0;
    scsi::DataDir dir = req->start(&expected);  // may call back right away
    LSI_TRACE("lsi {}: cmd {:02x} target {} lun {} tag {} -> dir {} len {} {}", id_, fmt::join(cdb, cdb + n, ""), raw->target,
              raw->lun, tag, static_cast<int>(dir), expected,
              current_ != raw ? "completed" : raw->off < raw->avail ? "data ready" : "waiting");
    if (current_ != raw) return;  // completed synchronously: phase is STATUS
    raw->out = dir == scsi::DataDir::ToDevice;
    if (dir == scsi::DataDir::None) {
        // Runs asynchronously without data: hold the bus in a placeholder
        // DATA IN phase until the status arrives.
        set_phase(Phase::DataIn);
    } else if (raw->off < raw->avail) {
        set_phase(raw->out ? Phase::DataOut : Phase::DataIn);
    } else {
        // Data comes later (block I/O): disconnect and reselect then.
        current_ = nullptr;
        sc.msg_len = 0;
        add_msg_byte(kMsgSaveDataPointer);
        add_msg_byte(kMsgDisconnect);
        sc.msg_action = LsiMsgAction::Disconnect;
        set_phase(Phase::MsgIn);
        MPQ_TRACE(lsi_queue_command, (uint32_t{raw->target} << 8) | (raw->tagged ? 0x10000u | raw->tag : 0u));
    }
}

// -------------------------------------------------------------- status ----

void LsiController::do_status() {
    LsiRegs& r = s_.regs;
    LsiScriptsState& sc = s_.scripts;
    MPQ_TRACE(lsi_do_status, r.dbc, sc.status);
    if (r.dbc != 1) MPQ_TRACE(lsi_do_status_error);
    if (r.dbc == 0) return;
    uint8_t st = sc.status;
    if (!bus_write(sc.move_addr, std::span<const uint8_t>(&st, 1))) {
        script_dma_interrupt(kDstatBf);
        return;
    }
    r.sfbr = st;
    r.dbc = 1;
    sc.msg_len = 0;
    add_msg_byte(kMsgCommandComplete);
    sc.msg_action = LsiMsgAction::Disconnect;
    set_phase(Phase::MsgIn);
}

// -------------------------------------------------------------- MSG IN ----

void LsiController::do_msg_in() {
    LsiRegs& r = s_.regs;
    LsiScriptsState& sc = s_.scripts;
    MPQ_TRACE(lsi_do_msgin, r.dbc, sc.msg_len);
    if (sc.msg_len == 0 || r.dbc == 0) return;
    uint32_t n = std::min<uint32_t>(r.dbc, sc.msg_len);
    if (!bus_write(sc.move_addr, std::span<const uint8_t>(sc.msg.data(), n))) {
        script_dma_interrupt(kDstatBf);
        return;
    }
    r.sfbr = sc.msg[0];
    r.sidl = sc.msg[n - 1];
    std::copy(sc.msg.begin() + n, sc.msg.begin() + sc.msg_len, sc.msg.begin());
    sc.msg_len = static_cast<uint8_t>(sc.msg_len - n);
    if (sc.msg_len > 0) return;
    switch (sc.msg_action) {
    case LsiMsgAction::Command: set_phase(Phase::Command); break;
    case LsiMsgAction::Disconnect: disconnect(); break;
    case LsiMsgAction::DataOut: set_phase(Phase::DataOut); break;
    case LsiMsgAction::DataIn: set_phase(Phase::DataIn); break;
    case LsiMsgAction::Status: set_phase(Phase::Status); break;
    }
}

// ------------------------------------------------------------- MSG OUT ----

bool LsiController::next_msg_byte(uint8_t* b) {
    LsiRegs& r = s_.regs;
    if (r.dbc == 0 || msg_fault_) return false;
    if (msg_buf_pos_ >= msg_buf_len_) {
        uint32_t n = std::min<uint32_t>(r.dbc, sizeof(msg_buf_));
        if (!bus_read(s_.scripts.move_addr, std::span<uint8_t>(msg_buf_, n))) {
            msg_fault_ = true;
            return false;
        }
        charge(1);
        msg_buf_len_ = n;
        msg_buf_pos_ = 0;
    }
    *b = msg_buf_[msg_buf_pos_++];
    r.dbc -= 1;
    r.dnad += 1;
    s_.scripts.move_addr += 1;
    return true;
}

void LsiController::do_msg_out() {
    LsiRegs& r = s_.regs;
    LsiScriptsState& sc = s_.scripts;
    msg_buf_len_ = msg_buf_pos_ = 0;
    msg_fault_ = false;
    uint32_t limit = std::min(r.dbc, kLsiMaxMsgOutBytes);
    uint32_t start_dbc = r.dbc;
    uint8_t m = 0;
    MPQ_TRACE(lsi_do_msgout, r.dbc);
    // The tag QEMU's ABORT/CLEAR QUEUE lines name: target << 8, tag bit 16.
    auto qtag = [&sc] { return (uint32_t{sc.target} << 8) | (sc.tag_valid ? 0x10000u | sc.tag : 0u); };
    while (connected() && start_dbc - r.dbc < limit && next_msg_byte(&m)) {
        r.sfbr = m;
        LSI_TRACE("lsi {}: msg out {:#04x}", id_, m);
        if (m & kMsgIdentify) {
            MPQ_TRACE(lsi_do_msgout_select, m & 7);
            sc.lun = m & 7;
            set_phase(Phase::Command);
            continue;
        }
        switch (m) {
        case kMsgExtended: {
            uint8_t len = 0, code = 0;
            if (!next_msg_byte(&len) || !next_msg_byte(&code)) break;
            MPQ_TRACE(lsi_do_msgout_extended, code, len);
            if (code == kExtSdtr || code == kExtWdtr || code == kExtPpr) {
                MPQ_TRACE(lsi_do_msgout_ignored, code == kExtSdtr ? "SDTR" : code == kExtWdtr ? "WDTR" : "PPR");
                // Negotiation is consumed without a reply: the initiator
                // stays asynchronous and narrow.
                uint8_t skip = 0;
                for (unsigned i = 1; i < len && next_msg_byte(&skip); i++) {
                }
                break;
            }
            add_msg_byte(kMsgReject);
            sc.msg_action = LsiMsgAction::Command;
            set_phase(Phase::MsgIn);
            goto done;
        }
        case kMsgSimpleTag:
        case kMsgHeadTag:
        case kMsgOrderedTag: {
            uint8_t t = 0;
            if (!next_msg_byte(&t)) break;
            sc.tag = t;
            sc.tag_valid = true;
            if (m == kMsgSimpleTag) MPQ_TRACE(lsi_do_msgout_simplequeue, t);
            break;
        }
        case kMsgNop:
            MPQ_TRACE(lsi_do_msgout_noop);
            set_phase(Phase::Command);
            break;
        case kMsgReject: break;  // the initiator refuses something we sent: nothing to undo
        case kMsgDisconnect:
            MPQ_TRACE(lsi_do_msgout_disconnect);
            disconnect();
            goto done;
        case kMsgAbortTag: {
            MPQ_TRACE(lsi_do_msgout_abort, qtag());
            Req* victim = current_;
            if (!victim && sc.tag_valid) {
                for (auto& q : reqs_)
                    if (q->target == sc.target && q->lun == sc.lun && q->tagged && q->tag == sc.tag) {
                        victim = q.get();
                        break;
                    }
            }
            if (victim) cancel_request(victim);
            disconnect();
            goto done;
        }
        case kMsgAbortTaskSet:
        case kMsgClearQueue:
        case kMsgBusDeviceReset:
            if (m == kMsgAbortTaskSet) MPQ_TRACE(lsi_do_msgout_abort, qtag());
            if (m == kMsgClearQueue) MPQ_TRACE(lsi_do_msgout_clearqueue, qtag());
            if (m == kMsgBusDeviceReset) MPQ_TRACE(lsi_do_msgout_busdevicereset, qtag());
            cancel_target(sc.target);
            disconnect();
            goto done;
        default:
            add_msg_byte(kMsgReject);
            sc.msg_action = LsiMsgAction::Command;
            set_phase(Phase::MsgIn);
            goto done;
        }
    }
done:
    if (msg_fault_) script_dma_interrupt(kDstatBf);
}

// ------------------------------------------------------------ requests ----

LsiController::Req* LsiController::find_req(scsi::Request& req) {
    auto* p = static_cast<Req*>(req.hba_private);
    if (!p) return nullptr;
    for (auto& q : reqs_)
        if (q.get() == p && q->req.get() == &req) return p;
    return nullptr;
}

void LsiController::free_request(Req* r) {
    if (current_ == r) current_ = nullptr;
    if (r->req) r->req->hba_private = nullptr;
    reqs_.remove_if([r](const std::unique_ptr<Req>& q) { return q.get() == r; });
}

void LsiController::cancel_request(Req* r) {
    std::shared_ptr<scsi::Request> keep = r->req;
    free_request(r);  // every reference gone before the target runs
    if (keep) keep->cancel();
}

void LsiController::cancel_target(uint8_t target) {
    std::vector<Req*> victims;
    for (auto& q : reqs_)
        if (q->target == target) victims.push_back(q.get());
    for (Req* v : victims) cancel_request(v);
}

void LsiController::cancel_all_requests() {
    while (!reqs_.empty()) cancel_request(reqs_.front().get());
    current_ = nullptr;
}

void LsiController::transfer_data(scsi::Request& req, uint32_t len) {
    Req* q = find_req(req);
    if (q) MPQ_TRACE(lsi_transfer_data, (uint32_t{q->target} << 8) | (q->tagged ? 0x10000u | q->tag : 0u), len);
    LSI_TRACE("lsi {}: transfer_data tag {} len {}{}", id_, req.tag(), len, q == current_ ? " (current)" : "");
    if (!q) return;
    q->out = req.dir() == scsi::DataDir::ToDevice;
    q->avail = len;
    q->off = 0;
    if (len == 0) {
        // Nothing to move: let the target go on.
        std::shared_ptr<scsi::Request> keep = q->req;
        keep->continue_transfer();
        return;
    }
    schedule_resume();
}

void LsiController::command_complete(scsi::Request& req, scsi::Status status, uint32_t residual) {
    Req* q = find_req(req);
    MPQ_TRACE(lsi_command_complete, static_cast<uint32_t>(status));
    LSI_TRACE("lsi {}: complete tag {} status {:#04x} residual {}{}", id_, req.tag(), static_cast<int>(status),
              residual, q == current_ ? " (current)" : "");
    if (!q) return;
    if (q == current_) {
        s_.scripts.status = static_cast<uint8_t>(status);
        free_request(q);
        // A data move still waiting is turned into a phase mismatch when
        // the SCRIPTS loop looks at it again.
        set_phase(Phase::Status);
    } else {
        q->completed = true;
        q->status = static_cast<uint8_t>(status);
        q->avail = q->off = 0;
    }
    schedule_resume();
}

}  // namespace mpq::hw
