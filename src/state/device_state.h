// The saved state of a device process, as one versioned binary blob:
// everything its devices need to carry on in another process started with
// the same command line (`qemu-scsi-dev -incoming-state FILE ...`).
//
// Layout (all integers little-endian):
//   header, 32 bytes:
//     magic "MPQSTATE" | u32 format version (kFormatVersion) | u32 flags
//     | u64 payload length | u32 CRC-32 of the payload | u32 reserved (0)
//     flags: 0, or kFlagNoChecksum (checksum field 0): a worker's per-round
//     publish, which lives only in the supervisor's shared memory
//     (remote/worker.h); a file never carries it.
//   payload: sections, each u32 tag | u16 version | u16 0 | u32 length | body
//     PROC v1  first: the producer's version string (informational)
//     DRIV v1  per drive: id, format, length, read-only
//     DISK v1  per scsi-hd: id, controller, drive, scsi-id, lun, disk state
//              (scsi/scsi_state_codec.cc)
//     PCIF v1  per PCI function: id, driver, the 256 config bytes (BARs
//              included), INTx level, then the device (hw/lsi_state_codec.cc:
//              every register, SCRIPTS processor, SCRIPTS RAM, every request
//              in flight with its target's side)
//     CONN v0  the connection negotiated with the VMM. Version 0 is reserved
//              and empty: a restored process starts from a fresh connection.
//     END  v1  last; nothing may follow.
//
// Versioning rule: a change to the envelope (header, section framing) bumps
// kFormatVersion; a change to a section's body bumps that section's version.
// A loader accepts exactly the versions it knows and refuses anything else
// by name (there is no "skip what you do not understand": state that is not
// restored is state the guest loses). Unknown sections are refused too.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "hw/lsi_snapshot.h"
#include "pci/pci_device.h"
#include "scsi/scsi_hd.h"
#include "util/result.h"

namespace mpq::state {

inline constexpr char kMagic[8] = {'M', 'P', 'Q', 'S', 'T', 'A', 'T', 'E'};
inline constexpr uint32_t kFormatVersion = 2;  // 2: header flag kFlagNoChecksum
inline constexpr size_t kHeaderSize = 32;
inline constexpr uint32_t kFlagNoChecksum = 1;
// Section versions this build writes and accepts.
inline constexpr uint16_t kProcVersion = 1;
inline constexpr uint16_t kDriveVersion = 1;
inline constexpr uint16_t kDiskVersion = 1;
inline constexpr uint16_t kFunctionVersion = 1;
inline constexpr uint16_t kConnectionVersion = 0;
inline constexpr uint16_t kEndVersion = 1;
// Bounds: a process serves a handful of devices; a blob is at most a few
// controllers' worth of in-flight chunks.
inline constexpr size_t kMaxEntries = 64;
inline constexpr size_t kMaxIdLen = 128;
inline constexpr uint64_t kMaxBlobBytes = 256ull << 20;

struct DriveImage {
    std::string id;
    std::string format;  // "raw", "qcow2", ...
    uint64_t length = 0;
    bool read_only = false;
};

struct DiskImage {
    std::string id;
    std::string controller;  // PCI function id
    std::string drive;       // drive id
    uint8_t scsi_id = 0;
    scsi::ScsiHdSnapshot hd;
};

struct FunctionImage {
    std::string id;
    std::string driver;  // "lsi53c895a"
    pci::PciConfigState config;
    hw::LsiSnapshot lsi;
};

// Reserved for the state negotiated with the VMM (extensions, register
// mirror, irq eventfds, guest RAM map). Version 0: none recorded.
struct ConnectionImage {
    uint16_t version = kConnectionVersion;
};

struct DeviceStateImage {
    std::string producer;  // e.g. "qemu-scsi-dev 0.1.0"
    std::vector<DriveImage> drives;
    std::vector<DiskImage> disks;
    std::vector<FunctionImage> functions;
    ConnectionImage connection;
};

// A file's blob carries a CRC-32 of its payload. A worker publishes its
// state every event-loop round into memory only it and its successor see,
// where the checksum would cost more than the rest of the encoding (a
// 128 KiB chunk in flight) and catch nothing: the publish protocol already
// keeps a torn slot from being read.
enum class Checksum : uint8_t { Compute, Omit };
// What decode() accepts: every blob read from a file must carry a checksum
// that matches; a worker's publish may omit it.
enum class ChecksumPolicy : uint8_t { Required, MayBeOmitted };

std::vector<uint8_t> encode(const DeviceStateImage& img, Checksum sum = Checksum::Compute);
// Parses and checks a blob: header, checksum, section versions, every
// field's range, unique ids and the cross-references (a disk's controller
// and drive exist, a request's target is a disk on its controller). What
// needs the live devices (sizes of the media, PCI identity) is checked when
// the image is applied.
Result<DeviceStateImage> decode(std::span<const uint8_t> blob,
                                 ChecksumPolicy policy = ChecksumPolicy::Required);

}  // namespace mpq::state
