#include "hw/lsi_state_codec.h"

#include <type_traits>

#include "hw/lsi_impl.h"
#include "scsi/scsi_state_codec.h"

namespace mpq::hw {

namespace {

// Every register in one fixed order; the same list drives the encoder and
// the decoder so they cannot drift apart. A field added here is a format
// change (state/device_state.h: bump the LSI section's version).
template <typename Regs, typename F>
void each_reg(Regs& r, F&& f) {
    f("scntl0", r.scntl0); f("scntl1", r.scntl1); f("scntl2", r.scntl2); f("scntl3", r.scntl3);
    f("scid", r.scid); f("sxfer", r.sxfer); f("sdid", r.sdid); f("sfbr", r.sfbr);
    f("socl", r.socl); f("ssid", r.ssid); f("sbcl", r.sbcl); f("dstat", r.dstat);
    f("sstat0", r.sstat0); f("sstat1", r.sstat1); f("dsa", r.dsa);
    f("istat0", r.istat0); f("istat1", r.istat1); f("mbox0", r.mbox0); f("mbox1", r.mbox1);
    f("ctest2", r.ctest2); f("ctest3", r.ctest3); f("ctest4", r.ctest4); f("ctest5", r.ctest5);
    f("temp", r.temp); f("dfifo", r.dfifo); f("dbc", r.dbc); f("dcmd", r.dcmd);
    f("dnad", r.dnad); f("dsp", r.dsp); f("dsps", r.dsps); f("scratch_a", r.scratch_a);
    f("dmode", r.dmode); f("dien", r.dien); f("sbr", r.sbr); f("dcntl", r.dcntl);
    f("adder", r.adder); f("sien0", r.sien0); f("sien1", r.sien1); f("sist0", r.sist0);
    f("sist1", r.sist1); f("stime0", r.stime0); f("respid0", r.respid0); f("respid1", r.respid1);
    f("stest1", r.stest1); f("stest2", r.stest2); f("stest3", r.stest3);
    f("sidl", r.sidl); f("ccntl0", r.ccntl0); f("ccntl1", r.ccntl1); f("scratch_b", r.scratch_b);
    for (auto& v : r.scratch_cr) f("scratch_cr", v);
    f("mmrs", r.mmrs); f("mmws", r.mmws); f("sfs", r.sfs); f("drs", r.drs);
    f("sbms", r.sbms); f("dbms", r.dbms); f("dnad64", r.dnad64);
    f("pmjad1", r.pmjad1); f("pmjad2", r.pmjad2);
    f("rbc", r.rbc); f("ua", r.ua); f("ia", r.ia); f("sbc", r.sbc); f("csbc", r.csbc);
}

constexpr uint64_t kAddrLimit = 1ull << 40;  // the chip drives 40 address bits

}  // namespace

void encode_lsi(state::Writer& w, const LsiSnapshot& s) {
    each_reg(s.chip.regs, [&](const char*, const auto& v) {
        using T = std::remove_cvref_t<decltype(v)>;
        if constexpr (sizeof(T) == 1) w.u8(v); else w.u32(v);
    });
    const LsiScriptsState& sc = s.chip.scripts;
    w.u8(static_cast<uint8_t>(sc.wait));
    w.boolean(sc.carry);
    w.boolean(sc.move_out);
    w.u64(sc.move_addr);
    w.u8(sc.target);
    w.u8(sc.lun);
    w.boolean(sc.tag_valid);
    w.u8(sc.tag);
    w.u8(sc.status);
    w.u8(static_cast<uint8_t>(sc.msg_action));
    w.u8(sc.msg_len);
    w.bytes(sc.msg);
    w.bytes(s.chip.ram);
    w.u32(static_cast<uint32_t>(s.reqs.size()));
    for (const LsiRequestState& r : s.reqs) {
        w.u8(r.target);
        w.u8(r.lun);
        w.boolean(r.tagged);
        w.u8(r.tag);
        w.boolean(r.out);
        w.u32(r.avail);
        w.u32(r.off);
        w.boolean(r.completed);
        w.u8(r.status);
        w.boolean(r.target_req.has_value());
        if (r.target_req) scsi::encode_request(w, *r.target_req);
    }
    w.u32(static_cast<uint32_t>(s.current));
}

LsiSnapshot decode_lsi(state::Reader& rd) {
    LsiSnapshot s;
    each_reg(s.chip.regs, [&](const char* name, auto& v) {
        using T = std::remove_cvref_t<decltype(v)>;
        if constexpr (sizeof(T) == 1) v = rd.u8(name); else v = rd.u32(name);
    });
    rd.range("dbc", s.chip.regs.dbc, 0, 0xffffff);
    LsiScriptsState& sc = s.chip.scripts;
    sc.wait = static_cast<LsiWait>(rd.range("scripts wait", rd.u8("scripts wait"), 0,
                                            static_cast<uint8_t>(LsiWait::Yield)));
    sc.carry = rd.boolean("carry");
    sc.move_out = rd.boolean("move direction");
    sc.move_addr = rd.range("move address", rd.u64("move address"), 0, kAddrLimit - 1);
    sc.target = static_cast<uint8_t>(rd.range("scsi target", rd.u8("scsi target"), 0, scsi::kMaxTargets - 1));
    sc.lun = static_cast<uint8_t>(rd.range("scsi lun", rd.u8("scsi lun"), 0, 7));
    sc.tag_valid = rd.boolean("tag valid");
    sc.tag = rd.u8("tag");
    sc.status = rd.u8("status");
    sc.msg_action = static_cast<LsiMsgAction>(rd.range("message action", rd.u8("message action"), 0,
                                                       static_cast<uint8_t>(LsiMsgAction::Status)));
    sc.msg_len = static_cast<uint8_t>(rd.range("message length", rd.u8("message length"), 0, kLsiMsgQueueMax));
    rd.bytes("message queue", sc.msg);
    rd.bytes("scripts ram", s.chip.ram);
    uint32_t n = static_cast<uint32_t>(rd.range("request count", rd.u32("request count"), 0, kLsiMaxRequests));
    for (uint32_t i = 0; i < n && rd.ok(); i++) {
        LsiRequestState r;
        r.target = static_cast<uint8_t>(rd.range("request target", rd.u8("request target"), 0, scsi::kMaxTargets - 1));
        r.lun = static_cast<uint8_t>(rd.range("request lun", rd.u8("request lun"), 0, 7));
        r.tagged = rd.boolean("request tagged");
        r.tag = rd.u8("request tag");
        r.out = rd.boolean("request direction");
        r.avail = rd.u32("request chunk length");
        r.off = rd.u32("request chunk offset");
        r.completed = rd.boolean("request completed");
        r.status = rd.u8("request status");
        if (rd.boolean("request has target side")) r.target_req = scsi::decode_request(rd);
        s.reqs.push_back(std::move(r));
    }
    uint32_t cur = rd.u32("connected request");
    s.current = cur == UINT32_MAX ? -1 : static_cast<int32_t>(rd.range("connected request", cur, 0, n ? n - 1 : 0));
    if (rd.ok() && cur != UINT32_MAX && n == 0) rd.error("connected request: no requests saved");
    return s;
}

}  // namespace mpq::hw
