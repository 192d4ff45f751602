// Encoding of the SCSI layer's saved state (scsi::RequestSnapshot,
// scsi::ScsiHdSnapshot) in the device-state format (state/codec.h). The
// decoders check what can be checked without the device (sizes, enums,
// ranges); the device checks the rest when it restores.
#pragma once

#include "scsi/scsi.h"
#include "scsi/scsi_hd.h"
#include "state/codec.h"

namespace mpq::scsi {

void encode_request(state::Writer& w, const RequestSnapshot& r);
RequestSnapshot decode_request(state::Reader& rd);

void encode_hd(state::Writer& w, const ScsiHdSnapshot& s);
ScsiHdSnapshot decode_hd(state::Reader& rd);

}  // namespace mpq::scsi
