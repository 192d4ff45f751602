// The LSI53C895A's complete state as plain data: the chip (registers,
// SCRIPTS processor, SCRIPTS RAM) and every SCSI request it has outstanding,
// each with its target's side of the request. Encoded by
// hw/lsi_state_codec.cc; taken and applied by Lsi53c895a::snapshot() and
// restore_snapshot() (hw/lsi_snapshot.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "hw/lsi_state.h"
#include "scsi/scsi.h"

namespace mpq::hw {

// One command the controller handed to a target and has not finished with.
struct LsiRequestState {
    uint8_t target = 0;
    uint8_t lun = 0;
    bool tagged = false;
    uint8_t tag = 0;
    bool out = false;       // DATA OUT direction
    uint32_t avail = 0;     // bytes of the chunk the target announced
    uint32_t off = 0;       // bytes of it already moved
    bool completed = false; // status arrived; waits for reselection
    uint8_t status = 0;
    // The target's side; absent once completed (the target is done with it).
    std::optional<scsi::RequestSnapshot> target_req;
};

struct LsiSnapshot {
    LsiState chip;
    std::vector<LsiRequestState> reqs;  // in the controller's queue order
    int32_t current = -1;               // index of the connected request, -1: none
};

}  // namespace mpq::hw
