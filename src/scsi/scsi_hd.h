// scsi-hd: a SCSI disk on a block backend (QEMU's scsi-hd properties).
#pragma once

#include <memory>
#include <string>

#include "block/block.h"
#include "scsi/scsi.h"

namespace mpq {
class WorkQueue;
}

namespace mpq::scsi {

enum class WriteCache : uint8_t { On, Off };

struct ScsiHdProps {
    std::string id;
    unsigned scsi_id = 0;
    unsigned lun = 0;
    std::string serial;             // VPD 0x80 only when set
    uint64_t wwn = 0;               // NAA designator in VPD 0x83 when non-zero
    std::string vendor = "QEMU";
    std::string product = "QEMU HARDDISK";
    std::string ver = "2.5+";
    uint32_t logical_block_size = 512;  // 512 or 4096
    WriteCache write_cache = WriteCache::On;
    // Largest transfer advertised in VPD B0 (QEMU's max_io_size). Bigger
    // commands still work; data always moves in 128 KiB chunks. Measured in
    // guest-e2e perf (TCG, multi-process): 128 KiB gave 10/12 MB/s write/read,
    // 1 MiB 27/26 MB/s, so the default lets Linux use its own cap (1280 KiB).
    uint64_t max_io_size = 4 * 1024 * 1024;
};

// What a scsi-hd must not forget across a save and restore, beyond its
// command-line properties: pending unit attentions, the sense data REQUEST
// SENSE returns, what MODE SELECT changed, and the capacity it last
// reported (a restore onto a medium of another size is refused).
struct ScsiHdSnapshot {
    bool unit_attention = false;
    bool capacity_changed = false;
    bool luns_changed = false;  // hot-plugged, REPORTED LUNS DATA HAS CHANGED pending
    Sense sense = kNoSense;
    WriteCache write_cache = WriteCache::On;
    uint32_t block_size = 512;
    uint64_t capacity_bytes = 0;
    // Properties the state depends on or the guest has seen (INQUIRY, VPD):
    // the new process's must be the same.
    uint32_t logical_block_size = 512;
    unsigned lun = 0;
    std::string vendor, product, ver, serial;
    uint64_t wwn = 0;
};

// Saved state of a scsi-hd (an error for any other device).
Result<ScsiHdSnapshot> scsi_hd_save(const Device& dev);
// Restores it after validating it against the device (block size, medium
// size, LUN): a foreign or bad snapshot changes nothing.
mpq::Status scsi_hd_restore(Device& dev, const ScsiHdSnapshot& snap);

// Validates the properties (block size, string lengths) before building.
// The disk starts with a power-on unit attention pending, as QEMU's does
// after its system reset.
Result<std::unique_ptr<Device>> make_scsi_hd(WorkQueue& wq, block::BlockBackend& backend,
                                             const ScsiHdProps& props);

}  // namespace mpq::scsi
