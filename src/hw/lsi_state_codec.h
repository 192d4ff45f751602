// Encoding of the LSI53C895A's saved state (hw/lsi_snapshot.h) in the
// device-state format (state/codec.h). decode_lsi() checks sizes, enum
// values and ranges; the controller checks the cross-references against its
// bus when it restores (Lsi53c895a::restore_snapshot).
#pragma once

#include "hw/lsi_snapshot.h"
#include "state/codec.h"

namespace mpq::hw {

void encode_lsi(state::Writer& w, const LsiSnapshot& s);
LsiSnapshot decode_lsi(state::Reader& rd);

}  // namespace mpq::hw
