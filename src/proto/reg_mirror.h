// MPQEXT REG_MIRROR (feature bit 2): a page of shared memory in which the
// remote publishes the read value of every side-effect-free register of one
// device, so that the proxy answers reads of them without a round trip.
//
// Protocol: after negotiation the proxy creates a memfd of kMirrorPageSize
// bytes, seals its size, maps it read-only and sends it with MIRROR_SETUP
// (wire.h) to the selected device. The remote maps it and from then on:
//  * makes `seq` odd before it runs anything that may change the device (at
//    the start of every event-loop round), and
//  * publishes the window and makes `seq` even at the end of the round,
//    before the round's replies are sent.
// So while `seq` is even, the image is the device's register file as it is
// right now. A read that finds `seq` odd, a byte not marked pure, or posted
// writes the remote has not carried out yet (`posted_done`) goes over the
// socket as before: the mirror only ever answers what a BAR_READ would.
//
// Trust: the remote writes the page and never reads it; the proxy reads it
// with a bounded number of loads and believes no more than it would believe
// of a RET from the same remote. The size seal keeps either side from
// shrinking it under the other's mapping.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace mpq::proto {

inline constexpr size_t kMirrorPageSize = 4096;
inline constexpr unsigned kMirrorWindow = 256;  // bytes of register window per device

struct MirrorPage {
    std::atomic<uint32_t> seq;          // odd while the remote may be changing the device
    std::atomic<uint32_t> bars;         // bit i: offsets [0, kMirrorWindow) of BAR i read `image`
    std::atomic<uint64_t> posted_done;  // BAR_WRITE_POSTED frames the socket has carried out
    std::atomic<uint32_t> irq_level;    // the device's INTx when this was published
    uint32_t reserved;
    std::atomic<uint64_t> pure[kMirrorWindow / 64];  // bit n: a read of byte n changes nothing
    std::atomic<uint64_t> image[kMirrorWindow / 8];  // byte n at bits 8*(n%8) of image[n/8]
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free);
static_assert(sizeof(MirrorPage) <= kMirrorPageSize);
static_assert(offsetof(MirrorPage, posted_done) == 8);
static_assert(offsetof(MirrorPage, irq_level) == 16);
static_assert(offsetof(MirrorPage, pure) == 24);
static_assert(offsetof(MirrorPage, image) == 56);

struct MirrorValue {
    uint64_t value;
    bool irq_level;
};

// One attempt, no retry: a read that races a publication is simply sent
// over the socket. `posted_sent`: BAR_WRITE_POSTED frames the proxy has sent
// on the socket, all of which must be carried out in what it reads.
inline std::optional<MirrorValue> mirror_read(const MirrorPage& p, int bar, uint64_t offset, unsigned size,
                                              uint64_t posted_sent) {
    if (bar < 0 || bar >= 32 || size == 0 || size > 8 || offset >= kMirrorWindow ||
        size > kMirrorWindow - offset) {
        return std::nullopt;
    }
    uint32_t s1 = p.seq.load(std::memory_order_acquire);
    if (s1 & 1) return std::nullopt;
    if (!((p.bars.load(std::memory_order_relaxed) >> bar) & 1)) return std::nullopt;
    if (p.posted_done.load(std::memory_order_relaxed) != posted_sent) return std::nullopt;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) {
        unsigned n = static_cast<unsigned>(offset) + i;
        if (!((p.pure[n / 64].load(std::memory_order_relaxed) >> (n % 64)) & 1)) return std::nullopt;
        uint64_t byte = (p.image[n / 8].load(std::memory_order_relaxed) >> (8 * (n % 8))) & 0xff;
        v |= byte << (8 * i);
    }
    bool irq = (p.irq_level.load(std::memory_order_relaxed) & 1) != 0;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (p.seq.load(std::memory_order_relaxed) != s1) return std::nullopt;
    return MirrorValue{v, irq};
}

// What the page says of the device as a whole when it is settled: the
// posted writes carried out and the INTx level; nothing while the remote is
// in a round (or publishing while we read).
struct MirrorStatus {
    uint64_t posted_done;
    bool irq_level;
};
inline std::optional<MirrorStatus> mirror_status(const MirrorPage& p) {
    uint32_t s1 = p.seq.load(std::memory_order_acquire);
    if (s1 & 1) return std::nullopt;
    MirrorStatus st{p.posted_done.load(std::memory_order_relaxed),
                    (p.irq_level.load(std::memory_order_relaxed) & 1) != 0};
    std::atomic_thread_fence(std::memory_order_acquire);
    if (p.seq.load(std::memory_order_relaxed) != s1) return std::nullopt;
    return st;
}

// How many posted writes the remote had carried out when it last published
// (nothing while it is in a round).
inline std::optional<uint64_t> mirror_posted_done(const MirrorPage& p) {
    auto st = mirror_status(p);
    if (!st) return std::nullopt;
    return st->posted_done;
}

// The device's INTx level as last published, if every posted write
// (`posted_sent`) is carried out in it. The remote publishes before it sends
// a round's replies, so after a reply this is the level the replied access
// left, or a later one.
inline std::optional<bool> mirror_irq_level(const MirrorPage& p, uint64_t posted_sent) {
    auto st = mirror_status(p);
    if (!st || st->posted_done != posted_sent) return std::nullopt;
    return st->irq_level;
}

}  // namespace mpq::proto
