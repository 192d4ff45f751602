// Placeholder until the qcow2 driver lands: refuses qcow2 images clearly.
#include "block/block.h"

namespace mpq::block {

Result<std::unique_ptr<BlockDriver>> open_qcow2(std::unique_ptr<BlockDriver> file,
                                                const DriveOptions& opts) {
    (void)file;
    return fail("'{}': qcow2 is not supported by this build", opts.file);
}

}  // namespace mpq::block
