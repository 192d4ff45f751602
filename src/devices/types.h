// The registrations the registry lists (src/devices/registry.cc), one per
// device type, each defined in src/devices/<name>.cc.
#pragma once

#include "devices/registry.h"

namespace mpq::devices {

extern const DeviceType kLsi53c895aType;
extern const DeviceType kScsiHdType;
extern const DeviceType kEduType;

}  // namespace mpq::devices
