#include "scsi/scsi_state_codec.h"

namespace mpq::scsi {

namespace {
// Largest chunk a target announces (scsi-hd's chunk size); a bigger one in
// a blob is refused before any memory is committed to it.
constexpr size_t kMaxSavedChunk = 128 * 1024;

void encode_sense(state::Writer& w, Sense s) {
    w.u8(s.key);
    w.u8(s.asc);
    w.u8(s.ascq);
}
Sense decode_sense(state::Reader& rd) {
    Sense s;
    s.key = static_cast<uint8_t>(rd.range("sense key", rd.u8("sense key"), 0, 0x0f));
    s.asc = rd.u8("sense asc");
    s.ascq = rd.u8("sense ascq");
    return s;
}
}  // namespace

void encode_request(state::Writer& w, const RequestSnapshot& r) {
    w.u32(r.tag);
    w.u16(static_cast<uint16_t>(r.lun));
    w.u8(r.cdb_len);
    w.bytes(std::span<const uint8_t>(r.cdb.data(), r.cdb.size()));
    w.u8(static_cast<uint8_t>(r.dir));
    w.u32(r.expected);
    w.u32(r.moved);
    w.blob(r.chunk);
    w.boolean(r.flush_after);
}

RequestSnapshot decode_request(state::Reader& rd) {
    RequestSnapshot r;
    r.tag = static_cast<uint32_t>(rd.range("request tag", rd.u32("request tag"), 0, 0x1ff));
    r.lun = static_cast<unsigned>(rd.range("request lun", rd.u16("request lun"), 0, 255));
    r.cdb_len = static_cast<uint8_t>(rd.range("cdb length", rd.u8("cdb length"), 1, kMaxCdb));
    rd.bytes("cdb", r.cdb);
    r.dir = static_cast<DataDir>(rd.range("request direction", rd.u8("request direction"), 0,
                                          static_cast<uint8_t>(DataDir::ToDevice)));
    r.expected = rd.u32("expected length");
    r.moved = rd.u32("moved count");
    if (r.moved > r.expected) rd.error("request moved more bytes than it expects");
    r.chunk = rd.blob("request chunk", kMaxSavedChunk);
    r.flush_after = rd.boolean("flush after");
    return r;
}

void encode_hd(state::Writer& w, const ScsiHdSnapshot& s) {
    w.boolean(s.unit_attention);
    w.boolean(s.capacity_changed);
    w.boolean(s.luns_changed);
    encode_sense(w, s.sense);
    w.u8(static_cast<uint8_t>(s.write_cache));
    w.u32(s.block_size);
    w.u64(s.capacity_bytes);
    w.u32(s.logical_block_size);
    w.u16(static_cast<uint16_t>(s.lun));
    w.str(s.vendor);
    w.str(s.product);
    w.str(s.ver);
    w.str(s.serial);
    w.u64(s.wwn);
}

ScsiHdSnapshot decode_hd(state::Reader& rd) {
    ScsiHdSnapshot s;
    s.unit_attention = rd.boolean("unit attention");
    s.capacity_changed = rd.boolean("capacity changed");
    s.luns_changed = rd.boolean("luns changed");
    s.sense = decode_sense(rd);
    s.write_cache = static_cast<WriteCache>(rd.range("write cache", rd.u8("write cache"), 0, 1));
    s.block_size = rd.u32("block size");
    if (rd.ok() && s.block_size != 512 && s.block_size != 4096) rd.error("block size is not 512 or 4096");
    s.capacity_bytes = rd.u64("capacity");
    s.logical_block_size = rd.u32("logical_block_size");
    if (rd.ok() && s.logical_block_size != 512 && s.logical_block_size != 4096)
        rd.error("logical_block_size is not 512 or 4096");
    s.lun = static_cast<unsigned>(rd.range("disk lun", rd.u16("disk lun"), 0, 255));
    // The lengths scsi-hd accepts for these properties.
    s.vendor = rd.str("vendor", 8);
    s.product = rd.str("product", 16);
    s.ver = rd.str("ver", 4);
    s.serial = rd.str("serial", 36);
    s.wwn = rd.u64("wwn");
    return s;
}

}  // namespace mpq::scsi
