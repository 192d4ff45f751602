#include "state/device_state.h"

#include <zlib.h>

#include <cstring>
#include <map>
#include <set>

#include "hw/lsi_state_codec.h"
#include "scsi/scsi_state_codec.h"
#include "state/codec.h"

namespace mpq::state {

namespace {

constexpr uint32_t kTagProc = tag("PROC");
constexpr uint32_t kTagDrive = tag("DRIV");
constexpr uint32_t kTagDisk = tag("DISK");
constexpr uint32_t kTagFunction = tag("PCIF");
constexpr uint32_t kTagConnection = tag("CONN");
constexpr uint32_t kTagEnd = tag("END ");

uint32_t crc(std::span<const uint8_t> b) {
    return static_cast<uint32_t>(::crc32(::crc32(0, nullptr, 0), b.data(), static_cast<uInt>(b.size())));
}

void put_le(std::vector<uint8_t>& out, size_t at, uint64_t v, int n) {
    for (int i = 0; i < n; i++) out[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

std::vector<uint8_t> encode(const DeviceStateImage& img, Checksum sum) {
    Writer w;
    // One allocation: the chunks in flight are most of the bytes.
    size_t estimate = 16 * 1024;
    for (const FunctionImage& f : img.functions) {
        estimate += f.lsi.chip.ram.size();
        for (const auto& r : f.lsi.reqs)
            if (r.target_req) estimate += r.target_req->chunk.size() + 64;
    }
    w.buffer().reserve(estimate);
    w.buffer().resize(kHeaderSize);
    size_t s = w.begin_section(kTagProc, kProcVersion);
    w.str(img.producer);
    w.end_section(s);
    for (const DriveImage& d : img.drives) {
        s = w.begin_section(kTagDrive, kDriveVersion);
        w.str(d.id);
        w.str(d.format);
        w.u64(d.length);
        w.boolean(d.read_only);
        w.end_section(s);
    }
    for (const DiskImage& d : img.disks) {
        s = w.begin_section(kTagDisk, kDiskVersion);
        w.str(d.id);
        w.str(d.controller);
        w.str(d.drive);
        w.u8(d.scsi_id);
        scsi::encode_hd(w, d.hd);
        w.end_section(s);
    }
    for (const FunctionImage& f : img.functions) {
        s = w.begin_section(kTagFunction, kFunctionVersion);
        w.str(f.id);
        w.str(f.driver);
        w.bytes(f.config.bytes);
        w.boolean(f.config.irq_level);
        hw::encode_lsi(w, f.lsi);
        w.end_section(s);
    }
    s = w.begin_section(kTagConnection, img.connection.version);
    w.end_section(s);
    s = w.begin_section(kTagEnd, kEndVersion);
    w.end_section(s);

    std::vector<uint8_t>& out = w.buffer();
    std::memcpy(out.data(), kMagic, sizeof kMagic);
    put_le(out, 8, kFormatVersion, 4);
    put_le(out, 12, sum == Checksum::Omit ? kFlagNoChecksum : 0, 4);
    const size_t payload = out.size() - kHeaderSize;
    put_le(out, 16, payload, 8);
    put_le(out, 24, sum == Checksum::Omit ? 0 : crc(std::span<const uint8_t>(out).subspan(kHeaderSize)), 4);
    put_le(out, 28, 0, 4);
    return std::move(out);
}

namespace {

Status check_version(const Reader::Section& sec, uint16_t want) {
    if (sec.version != want)
        return fail("saved state: section {} has version {}, this build reads version {}", tag_name(sec.tag),
                    sec.version, want);
    return {};
}

// Everything a body says, or the first thing wrong with it.
template <typename T, typename F>
Result<T> read_body(const Reader::Section& sec, const std::string& where, F&& f) {
    Reader rd(sec.body, where);
    T v = f(rd);
    rd.expect_end("section body");
    if (auto st = rd.status(); !st.ok()) return Error{"saved state: " + st.error().message, 0};
    return v;
}

Status cross_check(const DeviceStateImage& img) {
    std::set<std::string> drives, functions, disks;
    for (const auto& d : img.drives) {
        if (d.id.empty()) return fail("saved state: a drive has no id");
        if (!drives.insert(d.id).second) return fail("saved state: drive '{}' appears twice", d.id);
    }
    std::map<std::string, const FunctionImage*> fn;
    for (const auto& f : img.functions) {
        if (f.id.empty()) return fail("saved state: a PCI function has no id");
        if (!fn.emplace(f.id, &f).second) return fail("saved state: device '{}' appears twice", f.id);
        if (f.driver != "lsi53c895a") return fail("saved state: device '{}' has unknown driver '{}'", f.id, f.driver);
    }
    // (controller, scsi-id) -> disk
    std::map<std::pair<std::string, uint8_t>, const DiskImage*> on_bus;
    std::set<std::string> used_drives;
    for (const auto& d : img.disks) {
        if (d.id.empty()) return fail("saved state: a disk has no id");
        if (!disks.insert(d.id).second || fn.count(d.id)) return fail("saved state: id '{}' appears twice", d.id);
        if (!fn.count(d.controller))
            return fail("saved state: disk '{}' is on controller '{}', which is not in the state", d.id, d.controller);
        if (!drives.count(d.drive))
            return fail("saved state: disk '{}' uses drive '{}', which is not in the state", d.id, d.drive);
        if (!used_drives.insert(d.drive).second)
            return fail("saved state: drive '{}' is used by two disks", d.drive);
        if (d.scsi_id >= scsi::kMaxTargets) return fail("saved state: disk '{}' has scsi-id {}", d.id, d.scsi_id);
        if (!on_bus.emplace(std::make_pair(d.controller, d.scsi_id), &d).second)
            return fail("saved state: two disks at scsi-id {} of '{}'", d.scsi_id, d.controller);
    }
    for (const auto& f : img.functions) {
        for (size_t i = 0; i < f.lsi.reqs.size(); i++) {
            const auto& r = f.lsi.reqs[i];
            if (!on_bus.count({f.id, r.target}))
                return fail("saved state: '{}' request {} is for scsi-id {}, where no disk is saved", f.id, i,
                            r.target);
        }
    }
    return {};
}

}  // namespace

Result<DeviceStateImage> decode(std::span<const uint8_t> blob, ChecksumPolicy policy) {
    if (blob.size() < kHeaderSize)
        return fail("saved state: {} bytes is too short for a state file", blob.size());
    if (std::memcmp(blob.data(), kMagic, sizeof kMagic) != 0)
        return fail("saved state: not an mpqemu device state (bad magic)");
    Reader hdr(blob.subspan(8, kHeaderSize - 8));
    const uint32_t version = hdr.u32("format version");
    const uint32_t flags = hdr.u32("flags");
    const uint64_t len = hdr.u64("payload length");
    const uint32_t sum = hdr.u32("checksum");
    const uint32_t reserved = hdr.u32("reserved");
    if (version != kFormatVersion)
        return fail("saved state: format version {}, this build reads version {}", version, kFormatVersion);
    if ((flags & ~kFlagNoChecksum) != 0 || reserved != 0)
        return fail("saved state: unknown header flags {:#x}", flags | reserved);
    const bool unchecked = flags & kFlagNoChecksum;
    if (unchecked && policy == ChecksumPolicy::Required)
        return fail("saved state: a worker's live publish without a checksum, not a saved state file");
    if (unchecked && sum != 0) return fail("saved state: checksum {:#x} on a blob flagged as unchecked", sum);
    if (len > kMaxBlobBytes || len != blob.size() - kHeaderSize)
        return fail("saved state: payload length {} does not match the {} bytes present", len,
                    blob.size() - kHeaderSize);
    std::span<const uint8_t> payload = blob.subspan(kHeaderSize);
    if (!unchecked && crc(payload) != sum) return fail("saved state: checksum mismatch (file damaged)");

    DeviceStateImage img;
    Reader rd(payload);
    Reader::Section sec;
    bool first = true, conn = false, end = false;
    while (rd.next_section(&sec)) {
        if (end) return fail("saved state: data after the END section");
        if (first && sec.tag != kTagProc) return fail("saved state: first section is {}, not PROC", tag_name(sec.tag));
        switch (sec.tag) {
        case kTagProc: {
            if (!first) return fail("saved state: PROC section twice");
            MPQ_TRY(check_version(sec, kProcVersion));
            auto p = read_body<std::string>(sec, "PROC", [](Reader& r) { return r.str("producer", kMaxIdLen); });
            if (!p.ok()) return p.take_error();
            img.producer = *p;
            break;
        }
        case kTagDrive: {
            MPQ_TRY(check_version(sec, kDriveVersion));
            if (img.drives.size() >= kMaxEntries) return fail("saved state: more than {} drives", kMaxEntries);
            auto d = read_body<DriveImage>(sec, "DRIV", [](Reader& r) {
                DriveImage d;
                d.id = r.str("drive id", kMaxIdLen);
                d.format = r.str("drive format", 16);
                d.length = r.u64("drive length");
                d.read_only = r.boolean("drive read-only");
                return d;
            });
            if (!d.ok()) return d.take_error();
            img.drives.push_back(std::move(*d));
            break;
        }
        case kTagDisk: {
            MPQ_TRY(check_version(sec, kDiskVersion));
            if (img.disks.size() >= kMaxEntries) return fail("saved state: more than {} disks", kMaxEntries);
            auto d = read_body<DiskImage>(sec, "DISK", [](Reader& r) {
                DiskImage d;
                d.id = r.str("disk id", kMaxIdLen);
                d.controller = r.str("disk controller", kMaxIdLen);
                d.drive = r.str("disk drive", kMaxIdLen);
                d.scsi_id = static_cast<uint8_t>(r.range("scsi-id", r.u8("scsi-id"), 0, scsi::kMaxTargets - 1));
                d.hd = scsi::decode_hd(r);
                return d;
            });
            if (!d.ok()) return d.take_error();
            img.disks.push_back(std::move(*d));
            break;
        }
        case kTagFunction: {
            MPQ_TRY(check_version(sec, kFunctionVersion));
            if (img.functions.size() >= kMaxEntries) return fail("saved state: more than {} PCI functions", kMaxEntries);
            auto f = read_body<FunctionImage>(sec, "PCIF", [](Reader& r) {
                FunctionImage f;
                f.id = r.str("device id", kMaxIdLen);
                f.driver = r.str("device driver", 32);
                r.bytes("config space", f.config.bytes);
                f.config.irq_level = r.boolean("irq level");
                f.lsi = hw::decode_lsi(r);
                return f;
            });
            if (!f.ok()) return f.take_error();
            img.functions.push_back(std::move(*f));
            break;
        }
        case kTagConnection:
            if (conn) return fail("saved state: CONN section twice");
            conn = true;
            // Only the reserved, empty version 0 exists so far.
            MPQ_TRY(check_version(sec, kConnectionVersion));
            if (!sec.body.empty()) return fail("saved state: CONN version 0 must be empty");
            img.connection.version = sec.version;
            break;
        case kTagEnd:
            MPQ_TRY(check_version(sec, kEndVersion));
            if (!sec.body.empty()) return fail("saved state: END section must be empty");
            end = true;
            break;
        default:
            return fail("saved state: unknown section {} (version {}): written by a newer build?", tag_name(sec.tag),
                        sec.version);
        }
        first = false;
    }
    if (auto st = rd.status(); !st.ok()) return Error{"saved state: " + st.error().message, 0};
    if (!end) return fail("saved state: no END section (file truncated?)");
    if (!conn) return fail("saved state: no CONN section");
    MPQ_TRY(cross_check(img));
    return img;
}

}  // namespace mpq::state
