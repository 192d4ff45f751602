// LSI53C895A saved state: the chip and its requests in flight as data
// (hw/lsi_snapshot.h), and back. The snapshot is taken between event-loop
// rounds, never from inside the SCRIPTS loop, so nothing of a running
// instruction (message read-ahead, deferred resets, the work budget) is in
// flight; what is left to carry is a scheduled resume, which the restore
// schedules again from the SCRIPTS wait state.
#include <algorithm>
#include <set>
#include <tuple>

#include "hw/lsi_impl.h"

namespace mpq::hw {

using namespace lsi;

Result<LsiSnapshot> LsiController::snapshot() const {
    if (in_exec_ || pending_chip_reset_ || pending_bus_reset_)
        return fail("lsi {}: state taken from inside the SCRIPTS loop", id_);
    LsiSnapshot snap;
    snap.chip = s_;
    int idx = 0;
    for (const auto& q : reqs_) {
        LsiRequestState rs;
        rs.target = q->target;
        rs.lun = q->lun;
        rs.tagged = q->tagged;
        rs.tag = q->tag;
        rs.out = q->out;
        rs.avail = q->avail;
        rs.off = q->off;
        rs.completed = q->completed;
        rs.status = q->status;
        if (!q->completed) {
            scsi::Device* dev = bus_.target(q->target);
            if (!dev || !q->req) return fail("lsi {}: request for target {} has no target", id_, q->target);
            auto t = dev->save_request(*q->req);
            if (!t.ok()) return fail("lsi {}: {}", id_, t.error().message);
            rs.target_req = std::move(*t);
        }
        if (q.get() == current_) snap.current = idx;
        snap.reqs.push_back(std::move(rs));
        idx++;
    }
    return snap;
}

namespace {

// The checks that need nothing but the snapshot itself.
Status check_snapshot(const std::string& id, const LsiSnapshot& s, const scsi::Bus& bus) {
    const LsiScriptsState& sc = s.chip.scripts;
    if (sc.msg_len > kLsiMsgQueueMax) return fail("lsi {}: saved message queue length {} > {}", id, sc.msg_len, kLsiMsgQueueMax);
    if (sc.target >= scsi::kMaxTargets) return fail("lsi {}: saved target id {} out of range", id, sc.target);
    if (s.chip.regs.dbc > 0xffffff) return fail("lsi {}: saved DBC {:#x} is wider than 24 bits", id, s.chip.regs.dbc);
    if (s.reqs.size() > kLsiMaxRequests)
        return fail("lsi {}: {} saved requests, at most {}", id, s.reqs.size(), kLsiMaxRequests);
    if (s.current < -1 || s.current >= static_cast<int32_t>(s.reqs.size()))
        return fail("lsi {}: saved connected request {} does not exist", id, s.current);
    if (s.current >= 0 && !(s.chip.regs.scntl1 & kScntl1Con))
        return fail("lsi {}: saved connected request {} but the bus is not connected", id, s.current);
    std::set<std::tuple<uint8_t, uint8_t, uint8_t>> tags;
    for (size_t i = 0; i < s.reqs.size(); i++) {
        const LsiRequestState& r = s.reqs[i];
        if (r.target >= scsi::kMaxTargets || !bus.target(r.target))
            return fail("lsi {}: saved request {} is for target {}, which is not on the bus", id, i, r.target);
        if (r.lun > 7) return fail("lsi {}: saved request {}: LUN {} out of range", id, i, r.lun);
        if (r.tagged && !tags.emplace(r.target, r.lun, r.tag).second)
            return fail("lsi {}: saved request {}: tag {} used twice for target {} LUN {}", id, i, r.tag, r.target, r.lun);
        if (r.completed) {
            if (r.target_req || r.avail || r.off)
                return fail("lsi {}: saved request {} is complete but still has data", id, i);
            if (static_cast<int32_t>(i) == s.current)
                return fail("lsi {}: saved request {} is complete and connected", id, i);
            continue;
        }
        if (!r.target_req) return fail("lsi {}: saved request {} has no target side", id, i);
        const scsi::RequestSnapshot& t = *r.target_req;
        if (r.avail == 0 || r.avail != t.chunk.size() || r.off >= r.avail)
            return fail("lsi {}: saved request {}: chunk counts {}/{} do not match the target's {} bytes", id, i,
                        r.off, r.avail, t.chunk.size());
        if (r.out != (t.dir == scsi::DataDir::ToDevice))
            return fail("lsi {}: saved request {}: direction differs from the target's", id, i);
        if (t.lun != r.lun || t.tag != (r.tagged ? r.tag : kLsiUntagged))
            return fail("lsi {}: saved request {}: LUN/tag differ from the target's", id, i);
    }
    return {};
}

}  // namespace

Status LsiController::restore_snapshot(const LsiSnapshot& snap) {
    if (in_exec_) return fail("lsi {}: restore from inside the SCRIPTS loop", id_);
    MPQ_TRY(check_snapshot(id_, snap, bus_));
    // Rebuild the targets' requests first: one the target refuses leaves
    // the controller untouched.
    std::list<std::unique_ptr<Req>> reqs;
    Req* current = nullptr;
    auto undo = [&reqs] {
        for (auto& q : reqs)
            if (q->req) q->req->cancel();
    };
    for (size_t i = 0; i < snap.reqs.size(); i++) {
        const LsiRequestState& r = snap.reqs[i];
        auto q = std::make_unique<Req>();
        q->target = r.target;
        q->lun = r.lun;
        q->tagged = r.tagged;
        q->tag = r.tag;
        q->out = r.out;
        q->avail = r.avail;
        q->off = r.off;
        q->completed = r.completed;
        q->status = r.status;
        if (r.target_req) {
            auto req = bus_.target(r.target)->restore_request(*r.target_req, this);
            if (!req.ok()) {
                undo();
                return fail("lsi {}: saved request {}: {}", id_, i, req.error().message);
            }
            q->req = std::move(*req);
            q->req->hba_private = q.get();
        }
        if (static_cast<int32_t>(i) == snap.current) current = q.get();
        reqs.push_back(std::move(q));
    }

    cancel_all_requests();
    if (yield_timer_) {
        wq_.cancel_timer(yield_timer_);
        yield_timer_ = 0;
    }
    pending_chip_reset_ = pending_bus_reset_ = false;
    msg_buf_len_ = msg_buf_pos_ = 0;
    msg_fault_ = false;
    s_ = snap.chip;
    reqs_ = std::move(reqs);
    current_ = current;
    // Pick up where the saved process would have gone on: a yielded or
    // running processor resumes after the yield pause, one waiting for data
    // or a reselection looks again once the loop runs.
    if (s_.regs.istat1 & kIstat1Srun) {
        switch (s_.scripts.wait) {
        case LsiWait::None:
        case LsiWait::Yield: yield_scripts(); break;
        case LsiWait::Data:
        case LsiWait::Reselect: schedule_resume(); break;
        }
    }
    update_irq();
    return {};
}

}  // namespace mpq::hw
