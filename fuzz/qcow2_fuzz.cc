// libFuzzer target: a fuzzed qcow2 image in memory is opened and read (then
// opened for writing and written, on a copy). Any input must give a clean
// error or data, never a crash, a hang or an out-of-bounds access. Backing
// files never touch the host: every backing name opens a 128 KiB raw
// pattern in memory, so reads through the chain and copy-on-write run too.
// Seeds (fuzz/corpus/qcow2_fuzz/) are qemu-img images with each feature
// the driver reads; see make_seeds.py.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block/qcow2.h"
#include "block/qcow2_memfile.h"
#include "util/log.h"

using namespace mpq::block;
using namespace mpq::block::qcow2;

namespace {

void exercise(const uint8_t* data, size_t size, mpq::block::ReadOnly ro) {
    // The image store and the read buffer live across inputs only to spare
    // the allocator: under ASan every fresh block of this size is new pages
    // (its quarantine keeps freed ones away), and those page faults were a
    // good part of an input's time. The store is rewritten from the input
    // here and nothing else keeps it, so an input sees nothing of the one
    // before.
    static const auto store = std::make_shared<MemStore>();
    static std::vector<uint8_t> buf(64 * 1024);
    store->data.assign(data, data + size);
    store->writes = store->flushes = 0;
    store->max_size = 64u << 20;  // allocations at absurd offsets fail instead of eating memory
    DriveOptions o;
    o.file = "fuzz.qcow2";
    o.read_only = ro;
    o.l2_cache_size = 4096;
    ChainState chain;
    chain.open_file = [](const std::string&) -> mpq::Result<std::unique_ptr<BlockDriver>> {
        static const std::vector<uint8_t> pattern = [] {
            std::vector<uint8_t> v(128 * 1024);
            for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 7 + (i >> 9));
            return v;
        }();
        auto base = std::make_shared<MemStore>();
        base->data = pattern;
        return make_memory_file(base);
    };
    auto d = Qcow2Driver::open(make_memory_file(store), o, chain);
    if (!d) return;
    const uint64_t len = (*d)->length();
    // The first MiB (once: the read-only pass), then offsets picked by the
    // input's own bytes.
    for (uint64_t off = 0; ro == mpq::block::ReadOnly::Yes && off < len && off < (1u << 20);
         off += buf.size()) {
        uint64_t n = std::min<uint64_t>(buf.size(), len - off);
        (void)(*d)->pread(off, {buf.data(), n});
    }
    for (size_t i = 0; i + 8 <= size && i < 64 * 8; i += 8) {
        uint64_t off = len ? be64(data + i) % len : 0;
        uint64_t n = std::min<uint64_t>(4096, len - off);
        (void)(*d)->pread(off, {buf.data(), n});
        if (ro == mpq::block::ReadOnly::No) {
            if (i % 24 == 0) (void)(*d)->pwrite(off, {buf.data(), n});
            else if (i % 24 == 8) (void)(*d)->discard(off, n);
            else (void)(*d)->write_zeroes(off, n);
        }
    }
    if (ro == mpq::block::ReadOnly::No) (void)(*d)->check();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static bool quiet = [] {
        mpq::log::set_level(mpq::log::Level::Error);
        return true;
    }();
    (void)quiet;
    exercise(data, size, mpq::block::ReadOnly::Yes);
    exercise(data, size, mpq::block::ReadOnly::No);
    return 0;
}
