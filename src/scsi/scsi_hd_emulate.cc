// Data of the emulated scsi-hd commands (INQUIRY, VPD, MODE SENSE/SELECT,
// READ CAPACITY, REPORT LUNS, sense data). Pure functions of the device
// state, so they are easy to test and cannot touch I/O.
#include <algorithm>
#include <cstring>

#include "scsi/scsi_hd_impl.h"
#include "trace/trace.h"

namespace mpq::scsi {

namespace {

EmulResult check(Sense s) {
    EmulResult r;
    r.ok = false;
    r.sense = s;
    return r;
}

void put_padded(std::vector<uint8_t>& out, size_t at, const std::string& s, size_t width) {
    for (size_t i = 0; i < width; ++i) out[at + i] = i < s.size() ? static_cast<uint8_t>(s[i]) : ' ';
}

enum class PageControl : uint8_t { Current = 0, Changeable = 1, Default = 2, Saved = 3 };

struct Geometry {
    uint32_t cylinders, heads, sectors;
};

// CHS values for the legacy geometry pages; no guest we know uses them,
// they only have to be plausible.
Geometry geometry(const HdView& v) {
    uint64_t sectors512 = v.blocks * (v.state.block_size / 512);
    uint64_t cyl = sectors512 / (16 * 63);
    cyl = std::clamp<uint64_t>(cyl, 1, 65535);
    return {static_cast<uint32_t>(cyl), 16, 63};
}

// One mode page (header included) or empty if unsupported.
std::vector<uint8_t> mode_page(const HdView& v, uint8_t page, PageControl pc) {
    std::vector<uint8_t> p;
    const bool changeable = pc == PageControl::Changeable;
    switch (page) {
        case 0x01:  // read-write error recovery
            p.assign(12, 0);
            p[0] = 0x01;
            p[1] = 0x0a;
            if (!changeable) p[2] = 0x80;  // AWRE
            break;
        case 0x04: {  // rigid disk geometry
            p.assign(24, 0);
            p[0] = 0x04;
            p[1] = 0x16;
            if (changeable) break;
            Geometry g = geometry(v);
            put_be24(&p[2], g.cylinders);
            p[5] = static_cast<uint8_t>(g.heads);
            put_be24(&p[6], g.cylinders);   // write precompensation start
            put_be24(&p[9], g.cylinders);   // reduced write current start
            put_be16(&p[12], 200);          // step rate (stock QEMU's 200)
            put_be24(&p[14], 0xffffff);     // landing zone cylinder, as stock QEMU reports it
            put_be16(&p[20], 5400);         // rotation rate
            break;
        }
        case 0x05: {  // flexible disk
            p.assign(32, 0);
            p[0] = 0x05;
            p[1] = 0x1e;
            if (changeable) break;
            Geometry g = geometry(v);
            put_be16(&p[2], 5000);  // transfer rate, kbit/s
            p[4] = static_cast<uint8_t>(g.heads);
            p[5] = static_cast<uint8_t>(g.sectors);
            put_be16(&p[6], static_cast<uint16_t>(std::min<uint32_t>(v.state.block_size, 0xffff)));
            put_be16(&p[8], static_cast<uint16_t>(g.cylinders));
            // Write precompensation and reduced write current start at the
            // last cylinder (i.e. off); step rate, step pulse width, head
            // settle delay and motor on/off delays at one unit each: the
            // values stock QEMU's scsi-hd reports.
            put_be16(&p[10], static_cast<uint16_t>(g.cylinders));
            put_be16(&p[12], static_cast<uint16_t>(g.cylinders));
            put_be16(&p[14], 1);
            p[16] = 1;
            put_be16(&p[17], 1);
            p[19] = 1;
            p[20] = 1;
            put_be16(&p[28], 5400);
            break;
        }
        case 0x08:  // caching
            p.assign(20, 0);
            p[0] = 0x08;
            p[1] = 0x12;
            if (changeable || v.state.write_cache == WriteCache::On) p[2] = 0x04;  // WCE
            break;
        default:
            break;
    }
    return p;
}

constexpr uint8_t kModePages[] = {0x01, 0x04, 0x05, 0x08};

}  // namespace

std::vector<uint8_t> build_sense(Sense s, bool descriptor) {
    if (descriptor) {
        std::vector<uint8_t> d(8, 0);
        d[0] = 0x72;
        d[1] = s.key & 0x0f;
        d[2] = s.asc;
        d[3] = s.ascq;
        return d;
    }
    std::vector<uint8_t> d(18, 0);
    d[0] = 0x70;
    d[2] = s.key & 0x0f;
    d[7] = 10;
    d[12] = s.asc;
    d[13] = s.ascq;
    return d;
}

uint32_t allocation_length(std::span<const uint8_t> c) {
    switch (c[0]) {
        case op::kInquiry: return be16(&c[3]);
        case op::kRequestSense: return c[4];
        case op::kModeSense6: return c[4];
        case op::kModeSense10: return be16(&c[7]);
        case op::kReadCapacity10: return 8;
        case op::kServiceActionIn16: return be32(&c[10]);
        case op::kReportLuns: return be32(&c[6]);
        default: return 0;
    }
}

EmulResult emulate_inquiry(const HdView& v, std::span<const uint8_t> c) {
    const bool evpd = c[1] & 0x01;
    const uint8_t page = c[2];
    if (c[1] & 0x02) return check(kInvalidField);  // CmdDt is obsolete
    EmulResult r;
    if (!evpd) {
        if (page != 0) return check(kInvalidField);
        uint32_t alloc = be16(&c[3]);
        r.data.assign(36, 0);
        r.data[0] = 0x00;  // direct access block device, connected
        r.data[1] = 0x00;  // not removable
        r.data[2] = 5;     // SPC-3
        r.data[3] = 0x12;  // HiSup, response data format 2
        // Additional length follows the allocation length up to 256 bytes, as QEMU does.
        r.data[4] = static_cast<uint8_t>(alloc > 36 ? std::min<uint32_t>(alloc, 256) - 5 : 31);
        r.data[7] = 0x12;  // Sync, CmdQue
        put_padded(r.data, 8, v.props.vendor, 8);
        put_padded(r.data, 16, v.props.product, 16);
        put_padded(r.data, 32, v.props.ver, 4);
        return r;
    }
    std::vector<uint8_t>& d = r.data;
    d.assign(4, 0);
    d[1] = page;
    switch (page) {
        case 0x00:
            MPQ_TRACE(scsi_disk_emulate_vpd_page_00, size_t{be16(&c[3])});
            d.push_back(0x00);
            if (!v.props.serial.empty()) d.push_back(0x80);
            for (uint8_t p : {0x83, 0xb0, 0xb1, 0xb2}) d.push_back(p);
            break;
        case 0x80: {
            if (v.props.serial.empty()) MPQ_TRACE(scsi_disk_emulate_vpd_page_80_not_supported);
            if (v.props.serial.empty()) return check(kInvalidField);
            MPQ_TRACE(scsi_disk_emulate_vpd_page_80, size_t{be16(&c[3])});
            size_t n = std::min<size_t>(v.props.serial.size(), 36);
            d.insert(d.end(), v.props.serial.begin(), v.props.serial.begin() + n);
            break;
        }
        case 0x83: {
            MPQ_TRACE(scsi_disk_emulate_vpd_page_83, size_t{be16(&c[3])});
            size_t n = std::min<size_t>(v.device_id.size(), 255 - 8);
            if (n) {
                d.insert(d.end(), {0x02, 0x00, 0x00, static_cast<uint8_t>(n)});  // ASCII, vendor specific
                d.insert(d.end(), v.device_id.begin(), v.device_id.begin() + n);
            }
            if (v.props.wwn) {
                d.insert(d.end(), {0x01, 0x03, 0x00, 0x08});  // binary, NAA
                size_t at = d.size();
                d.resize(at + 8);
                put_be64(&d[at], v.props.wwn);
            }
            break;
        }
        case 0xb0: {
            d.resize(0x40, 0);
            const uint32_t bs = v.state.block_size;
            d[4] = 0x01;                                        // WSNZ
            put_be32(&d[8], static_cast<uint32_t>(v.props.max_io_size / bs));  // maximum transfer length
            put_be32(&d[20], static_cast<uint32_t>(kMaxUnmapBytes / bs));  // max unmap LBA count
            put_be32(&d[24], kMaxUnmapDescriptors);
            put_be32(&d[28], std::max<uint32_t>(kUnmapGranularityBytes / bs, 1));  // optimal unmap granularity
            put_be64(&d[36], kChunkBytes / bs);  // maximum write same length (one buffer)
            break;
        }
        case 0xb1:
            d.resize(0x40, 0);  // rotation rate 0: not reported
            break;
        case 0xb2:
            d.resize(8, 0);
            d[5] = 0xe0;  // LBPU, LBPWS, LBPWS10
            d[6] = 0x02;  // thin provisioned (discard granularity set)
            break;
        default:
            return check(kInvalidField);
    }
    put_be16(&d[2], static_cast<uint16_t>(d.size() - 4));
    return r;
}

EmulResult emulate_inquiry_bad_lun(std::span<const uint8_t> c, uint32_t lun) {
    if (c[1] & 0x02) return check(kInvalidField);
    EmulResult r;
    r.exact_alloc = false;
    if (c[1] & 0x01) {
        if (c[2] != 0x00) return check(kInvalidField);
        r.data = {0x7f, 0x00, 0x00, 0x01, 0x00};
        return r;
    }
    if (c[2] != 0) return check(kInvalidField);
    r.data.assign(36, 0);
    if (lun != 0) {
        // Nothing but "no device on this LUN", as stock QEMU's SCSI target
        // answers for a LUN other than 0.
        r.data[0] = 0x7f;
        return r;
    }
    // LUN 0 without a device (the disk sits on another LUN): stock QEMU's
    // target describes itself, "not present, inactive".
    const size_t alloc = be16(&c[3]);
    r.data[0] = 0x3f;
    r.data[2] = 5;
    r.data[3] = 0x12;
    r.data[4] = static_cast<uint8_t>(std::min<size_t>(alloc, 36) - 5);  // wraps below 5, as stock's does
    r.data[7] = 0x12;
    std::string vendor = "QEMU", product = "QEMU TARGET", rev = "2.5+";
    put_padded(r.data, 8, vendor, 8);
    put_padded(r.data, 16, product, 16);
    put_padded(r.data, 32, rev, 4);
    return r;
}

EmulResult emulate_mode_sense(const HdView& v, std::span<const uint8_t> c) {
    const bool ten = c[0] == op::kModeSense10;
    const bool dbd = c[1] & 0x08;
    const auto pc = static_cast<PageControl>(c[2] >> 6);
    const uint8_t page = c[2] & 0x3f;
    const uint8_t subpage = c[3];
    if (pc == PageControl::Saved) return check(kSavingNotSupported);
    if (subpage != 0 && !(page == 0x3f && subpage == 0xff)) return check(kInvalidField);

    std::vector<uint8_t> pages;
    if (page == 0x3f) {
        for (uint8_t p : kModePages) {
            auto b = mode_page(v, p, pc);
            pages.insert(pages.end(), b.begin(), b.end());
        }
    } else {
        pages = mode_page(v, page, pc);
        if (pages.empty()) return check(kInvalidField);
    }

    const size_t hdr = ten ? 8 : 4;
    const size_t bd = dbd ? 0 : 8;
    EmulResult r;
    std::vector<uint8_t>& d = r.data;
    d.assign(hdr + bd, 0);
    uint8_t dev_specific = v.read_only ? 0x80 : 0x00;
    if (ten) {
        d[3] = dev_specific;
        put_be16(&d[6], static_cast<uint16_t>(bd));
    } else {
        d[2] = dev_specific;
        d[3] = static_cast<uint8_t>(bd);
    }
    if (bd) {
        uint64_t blocks = v.blocks > 0xffffff ? 0 : v.blocks;
        put_be24(&d[hdr + 1], static_cast<uint32_t>(blocks));
        put_be24(&d[hdr + 5], v.state.block_size);
    }
    d.insert(d.end(), pages.begin(), pages.end());
    if (ten)
        put_be16(&d[0], static_cast<uint16_t>(d.size() - 2));
    else
        d[0] = static_cast<uint8_t>(d.size() - 1);
    return r;
}

EmulResult emulate_read_capacity10(const HdView& v, std::span<const uint8_t> c) {
    const bool pmi = c[8] & 0x01;
    if (!pmi && be32(&c[2]) != 0) return check(kInvalidField);
    EmulResult r;
    r.data.assign(8, 0);
    uint64_t last = v.blocks ? v.blocks - 1 : 0;
    put_be32(&r.data[0], last > 0xffffffff ? 0xffffffff : static_cast<uint32_t>(last));
    put_be32(&r.data[4], v.state.block_size);
    return r;
}

EmulResult emulate_read_capacity16(const HdView& v, std::span<const uint8_t> c) {
    if ((c[1] & 0x1f) != op::kSaReadCapacity16) return check(kInvalidField);
    const bool pmi = c[14] & 0x01;
    if (!pmi && be64(&c[2]) != 0) return check(kInvalidField);
    EmulResult r;
    r.data.assign(32, 0);
    put_be64(&r.data[0], v.blocks ? v.blocks - 1 : 0);
    put_be32(&r.data[8], v.state.block_size);
    r.data[13] = 0;     // one logical block per physical block
    r.data[14] = 0x80;  // TPE: thin provisioning (UNMAP / WRITE SAME) enabled
    return r;
}

EmulResult emulate_report_luns(const HdView& v, std::span<const uint8_t> c) {
    if (c[2] > 2) return check(kInvalidField);
    if (be32(&c[6]) < 16) return check(kInvalidField);
    EmulResult r;
    r.exact_alloc = false;
    r.data.assign(16, 0);
    put_be32(&r.data[0], 8);
    unsigned lun = v.props.lun;
    if (lun < 256) {
        r.data[9] = static_cast<uint8_t>(lun);
    } else {
        r.data[8] = static_cast<uint8_t>(0x40 | ((lun >> 8) & 0x3f));  // flat space addressing
        r.data[9] = static_cast<uint8_t>(lun & 0xff);
    }
    return r;
}

ModeSelectOutcome parse_mode_select(const HdView& v, bool ten, std::span<const uint8_t> p) {
    ModeSelectOutcome out;
    out.write_cache = v.state.write_cache;
    out.block_size = v.state.block_size;
    auto bad = [&](Sense s) {
        out.ok = false;
        out.sense = s;
        return out;
    };
    const size_t hdr = ten ? 8 : 4;
    if (p.size() < hdr) return bad(kParamListLengthError);
    const size_t bd_len = ten ? be16(&p[6]) : p[3];
    if (bd_len != 0 && bd_len != 8) return bad(kInvalidParamList);
    if (p.size() < hdr + bd_len) return bad(kParamListLengthError);
    if (bd_len == 8) {
        uint32_t bs = be24(&p[hdr + 5]);
        // 0 keeps the current size. Anything not a multiple of 512 (and 0 <
        // bs < 512) would later divide by zero or misalign: CVE-2023-42467.
        if (bs != 0) {
            if (bs % 512 != 0 || bs > 32768) return bad(kInvalidParamList);
            out.block_size = bs;
        }
    }
    // Validate every page before applying any.
    size_t i = hdr + bd_len;
    while (i < p.size()) {
        if (p.size() - i < 2) return bad(kParamListLengthError);
        const uint8_t page = p[i] & 0x3f;
        if (p[i] & 0x40) return bad(kInvalidParamList);  // subpage format: none supported
        const size_t len = p[i + 1];
        if (p.size() - i - 2 < len) return bad(kParamListLengthError);
        auto cur = mode_page(v, page, PageControl::Current);
        auto mask = mode_page(v, page, PageControl::Changeable);
        if (cur.empty() || cur.size() != len + 2) return bad(kInvalidParamList);
        for (size_t k = 2; k < cur.size(); ++k)
            if ((p[i + k] ^ cur[k]) & ~mask[k]) return bad(kInvalidParamList);
        if (page == 0x08) out.write_cache = (p[i + 2] & 0x04) ? WriteCache::On : WriteCache::Off;
        i += 2 + len;
    }
    return out;
}

}  // namespace mpq::scsi
