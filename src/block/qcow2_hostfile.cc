// Backing files are opened through the host-file protocol driver.
#include "block/qcow2.h"

namespace mpq::block::qcow2 {

Result<std::unique_ptr<BlockDriver>> open_host_file(const std::string& path, ReadOnly ro, CacheMode cache) {
    DriveOptions o;
    o.file = path;
    o.format = "raw";
    o.read_only = ro;
    o.cache = cache;
    return open_file(o);
}

}  // namespace mpq::block::qcow2
