// A hostile remote's register mirror page (proto/reg_mirror.h), as the proxy
// reads it: any page contents, any access the guest can make.
//
// Input format: the page's first bytes (up to sizeof(MirrorPage), the rest
// zero), then repeated queries of 12 bytes: [bar:u8][size:u8][offset:u16]
// [posted_sent:u64].
// Checks: no crash/UB (ASan/UBSan), and a hit is only ever made of bytes the
// page marks pure, inside the 256-byte window, at the posted count asked for
// (or one behind it, under the overlay of the last prediction taken, whose
// changes are the only bytes that may differ from the image). A prediction
// is only taken for a one-byte read at the posted count asked for and never
// has more changes than a slot holds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>

#include "proto/reg_mirror.h"

using mpq::proto::MirrorPage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    alignas(MirrorPage) unsigned char raw[sizeof(MirrorPage)] = {};
    size_t head = size < sizeof raw ? size : sizeof raw;
    std::memcpy(raw, data, head);
    // The atomics are lock-free integers: their object representation is
    // the bytes, as when the page arrives through shared memory.
    const auto* page = std::launder(reinterpret_cast<const MirrorPage*>(raw));
    data += head;
    size -= head;
    std::optional<mpq::proto::MirrorOverlay> overlay;
    for (; size >= 12; data += 12, size -= 12) {
        int bar = static_cast<int8_t>(data[0]);
        unsigned len = data[1];
        uint16_t off;
        uint64_t posted;
        std::memcpy(&off, data + 2, 2);
        std::memcpy(&posted, data + 4, 8);
        if (auto p = mpq::proto::mirror_predict(*page, bar, off, len, posted)) {
            if (len != 1 || off >= mpq::proto::kMirrorWindow || bar < 0 || bar >= 32) std::abort();
            if (p->posted_done != posted || (p->seq & 1) || p->prediction.changes > mpq::proto::kMaxPredictedChanges)
                std::abort();
            overlay = *p;
            continue;
        }
        auto v = mpq::proto::mirror_read(*page, bar, off, len, posted, overlay ? &*overlay : nullptr);
        (void)mpq::proto::mirror_posted_done(*page);
        if (!v) continue;
        if (len == 0 || len > 8 || off + len > mpq::proto::kMirrorWindow || bar < 0 || bar >= 32) std::abort();
        if (page->seq.load() & 1) std::abort();
        const bool laid_over = page->posted_done.load() != posted;
        if (laid_over && !(overlay && overlay->posted_done + 1 == posted && overlay->seq == page->seq.load()))
            std::abort();
        for (unsigned i = 0; i < len; ++i) {
            unsigned n = off + i;
            if (!((page->pure[n / 64].load() >> (n % 64)) & 1)) std::abort();
            uint8_t got = static_cast<uint8_t>(v->value >> (8 * i));
            uint8_t img = static_cast<uint8_t>(page->image[n / 8].load() >> (8 * (n % 8)));
            if (!laid_over && got != img) std::abort();
            if (laid_over && got != img) {
                bool changed = false;
                for (unsigned c = 0; c < overlay->prediction.changes; ++c)
                    changed |= overlay->prediction.change_offset[c] == n;
                if (!changed) std::abort();
            }
        }
        if (len < 8 && (v->value >> (8 * len)) != 0) std::abort();
    }
    return 0;
}
