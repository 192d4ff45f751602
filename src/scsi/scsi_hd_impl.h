// scsi-hd internals shared by the command dispatcher (scsi_hd.cc) and the
// emulated-command data builders (scsi_hd_emulate.cc).
#pragma once

#include <array>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <unordered_set>
#include <vector>

#include "block/block.h"
#include "scsi/scsi.h"
#include "scsi/scsi_hd.h"

namespace mpq::scsi {

// Data is moved between the HBA and the disk in chunks of this size, so a
// huge command never needs a huge buffer.
inline constexpr uint32_t kChunkBytes = 128 * 1024;
inline constexpr uint32_t kMaxAllocLen = 65536;
inline constexpr uint64_t kMaxUnmapBytes = 1ull << 30;
inline constexpr uint32_t kUnmapGranularityBytes = 4096;
inline constexpr uint32_t kMaxUnmapDescriptors = 255;

inline constexpr Sense kParamListLengthError{0x05, 0x1a, 0x00};
inline constexpr Sense kSavingNotSupported{0x05, 0x39, 0x00};
inline constexpr Sense kNoMedium{0x02, 0x3a, 0x00};

// Opcodes (SPC-3 / SBC-3).
namespace op {
inline constexpr uint8_t kTestUnitReady = 0x00;
inline constexpr uint8_t kRequestSense = 0x03;
inline constexpr uint8_t kFormatUnit = 0x04;
inline constexpr uint8_t kRead6 = 0x08;
inline constexpr uint8_t kWrite6 = 0x0a;
inline constexpr uint8_t kInquiry = 0x12;
inline constexpr uint8_t kModeSelect6 = 0x15;
inline constexpr uint8_t kReserve6 = 0x16;
inline constexpr uint8_t kRelease6 = 0x17;
inline constexpr uint8_t kModeSense6 = 0x1a;
inline constexpr uint8_t kStartStopUnit = 0x1b;
inline constexpr uint8_t kAllowMediumRemoval = 0x1e;
inline constexpr uint8_t kReadCapacity10 = 0x25;
inline constexpr uint8_t kRead10 = 0x28;
inline constexpr uint8_t kWrite10 = 0x2a;
inline constexpr uint8_t kSeek10 = 0x2b;
inline constexpr uint8_t kWriteVerify10 = 0x2e;
inline constexpr uint8_t kVerify10 = 0x2f;
inline constexpr uint8_t kSyncCache10 = 0x35;
inline constexpr uint8_t kWriteSame10 = 0x41;
inline constexpr uint8_t kUnmap = 0x42;
inline constexpr uint8_t kModeSelect10 = 0x55;
inline constexpr uint8_t kReserve10 = 0x56;
inline constexpr uint8_t kRelease10 = 0x57;
inline constexpr uint8_t kModeSense10 = 0x5a;
inline constexpr uint8_t kRead16 = 0x88;
inline constexpr uint8_t kWrite16 = 0x8a;
inline constexpr uint8_t kWriteVerify16 = 0x8e;
inline constexpr uint8_t kVerify16 = 0x8f;
inline constexpr uint8_t kSyncCache16 = 0x91;
inline constexpr uint8_t kWriteSame16 = 0x93;
inline constexpr uint8_t kServiceActionIn16 = 0x9e;
inline constexpr uint8_t kReportLuns = 0xa0;
inline constexpr uint8_t kRead12 = 0xa8;
inline constexpr uint8_t kWrite12 = 0xaa;
inline constexpr uint8_t kWriteVerify12 = 0xae;
inline constexpr uint8_t kVerify12 = 0xaf;
inline constexpr uint8_t kSaReadCapacity16 = 0x10;
}  // namespace op

inline uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t be24(const uint8_t* p) { return uint32_t{p[0]} << 16 | uint32_t{p[1]} << 8 | p[2]; }
inline uint32_t be32(const uint8_t* p) {
    return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline uint64_t be64(const uint8_t* p) { return uint64_t{be32(p)} << 32 | be32(p + 4); }
inline void put_be16(uint8_t* p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
inline void put_be24(uint8_t* p, uint32_t v) { p[0] = (v >> 16) & 0xff; p[1] = (v >> 8) & 0xff; p[2] = v & 0xff; }
inline void put_be32(uint8_t* p, uint32_t v) { put_be16(p, v >> 16); put_be16(p + 2, v & 0xffff); }
inline void put_be64(uint8_t* p, uint64_t v) { put_be32(p, v >> 32); put_be32(p + 4, v & 0xffffffff); }

// CDB length from the opcode's group; 0 for groups we never accept.
inline size_t cdb_length(uint8_t opcode) {
    switch (opcode >> 5) {
        case 0: return 6;
        case 1: case 2: return 10;
        case 4: return 16;
        case 5: return 12;
        default: return 0;
    }
}

// Fixed-format (0x70) or descriptor-format (0x72) sense data.
std::vector<uint8_t> build_sense(Sense s, bool descriptor);

// Plain device state: everything a save/restore needs.
struct ScsiHdState {
    bool unit_attention = false;  // a reset happened and has not been reported
    bool capacity_changed = false;  // a resize happened and has not been reported
    bool luns_changed = false;    // hot-plugged: REPORTED LUNS DATA HAS CHANGED not yet reported
    Sense sense = kNoSense;       // of the last CHECK CONDITION, for REQUEST SENSE
    WriteCache write_cache = WriteCache::On;
    uint32_t block_size = 512;
};

// What an emulated command computes: the bytes to return or a CHECK CONDITION.
struct EmulResult {
    bool ok = true;
    Sense sense{};
    std::vector<uint8_t> data;
    bool exact_alloc = true;  // pad to the allocation length (else return min(alloc, data))
};

class ScsiHd;

// The read-only view the data builders need.
struct HdView {
    const ScsiHdProps& props;
    const ScsiHdState& state;
    std::string device_id;  // VPD 83 ASCII designator
    uint64_t blocks;
    bool read_only;
};

EmulResult emulate_inquiry(const HdView& v, std::span<const uint8_t> cdb);
EmulResult emulate_inquiry_bad_lun(std::span<const uint8_t> cdb, uint32_t lun);
EmulResult emulate_mode_sense(const HdView& v, std::span<const uint8_t> cdb);
EmulResult emulate_read_capacity10(const HdView& v, std::span<const uint8_t> cdb);
EmulResult emulate_read_capacity16(const HdView& v, std::span<const uint8_t> cdb);
EmulResult emulate_report_luns(const HdView& v, std::span<const uint8_t> cdb);
// Validates a MODE SELECT parameter list and returns the state to apply.
struct ModeSelectOutcome {
    bool ok = true;
    Sense sense{};
    WriteCache write_cache = WriteCache::On;
    uint32_t block_size = 0;
};
ModeSelectOutcome parse_mode_select(const HdView& v, bool ten, std::span<const uint8_t> params);
// Allocation length field of an emulated data-in command (0 if none).
uint32_t allocation_length(std::span<const uint8_t> cdb);

}  // namespace mpq::scsi
