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
// Predicted reads: for a few bytes whose read changes the device (an
// interrupt status that clears when read), the remote also publishes what a
// one-byte read would return, the bytes of the window it would change and
// the INTx level it would leave. The proxy may answer such a read from the
// page under the same rules, lower or raise its line as predicted, and send
// BAR_READ_POSTED so that the remote carries the read out in stream order.
// Until the remote has (posted_done moves on) the proxy answers pure reads
// from the image with the predicted changes laid over it, as long as the
// page's seq is the one it predicted from: every read so answered is one the
// device would have answered at that publication, after the predicted read.
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
inline constexpr unsigned kMaxPredictions = 4;   // predicted reads per device
inline constexpr unsigned kMaxPredictedChanges = 4;

// One predicted byte read, packed so that a reader needs two loads.
struct MirrorPrediction {
    // 0: none. Else bit 63 set, window offset at bits 0-7, the value read at
    // 8-15, the INTx level after the read at bit 16, the number of changes
    // at bits 24-31.
    std::atomic<uint64_t> head;
    // Change i (i < number): window offset at bits 16i..16i+7, the byte's
    // value after the read at bits 16i+8..16i+15.
    std::atomic<uint64_t> changes;
};

struct MirrorPage {
    std::atomic<uint32_t> seq;          // odd while the remote may be changing the device
    std::atomic<uint32_t> bars;         // bit i: offsets [0, kMirrorWindow) of BAR i read `image`
    std::atomic<uint64_t> posted_done;  // BAR_WRITE_POSTED frames the socket has carried out
    std::atomic<uint32_t> irq_level;    // the device's INTx when this was published
    uint32_t reserved;
    std::atomic<uint64_t> pure[kMirrorWindow / 64];  // bit n: a read of byte n changes nothing
    std::atomic<uint64_t> image[kMirrorWindow / 8];  // byte n at bits 8*(n%8) of image[n/8]
    MirrorPrediction predicted[kMaxPredictions];
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free);
static_assert(sizeof(MirrorPage) <= kMirrorPageSize);
static_assert(offsetof(MirrorPage, posted_done) == 8);
static_assert(offsetof(MirrorPage, irq_level) == 16);
static_assert(offsetof(MirrorPage, pure) == 24);
static_assert(offsetof(MirrorPage, image) == 56);
static_assert(offsetof(MirrorPage, predicted) == 312);
static_assert(sizeof(MirrorPrediction) == 16);

// A prediction as the proxy uses it.
struct Prediction {
    uint8_t offset = 0;
    uint8_t value = 0;
    bool level_after = false;
    uint8_t changes = 0;  // <= kMaxPredictedChanges
    uint8_t change_offset[kMaxPredictedChanges] = {};
    uint8_t change_value[kMaxPredictedChanges] = {};
};

inline uint64_t pack_head(const Prediction& p) {
    return (uint64_t{1} << 63) | p.offset | (uint64_t{p.value} << 8) | (uint64_t{p.level_after} << 16) |
           (uint64_t{p.changes} << 24);
}
inline uint64_t pack_changes(const Prediction& p) {
    uint64_t c = 0;
    for (unsigned i = 0; i < p.changes && i < kMaxPredictedChanges; ++i)
        c |= (uint64_t{p.change_offset[i]} | uint64_t{p.change_value[i]} << 8) << (16 * i);
    return c;
}
// Nothing for an empty slot or a malformed one (too many changes).
inline std::optional<Prediction> unpack_prediction(uint64_t head, uint64_t changes) {
    if (!(head >> 63)) return std::nullopt;
    Prediction p;
    p.offset = static_cast<uint8_t>(head);
    p.value = static_cast<uint8_t>(head >> 8);
    p.level_after = (head >> 16) & 1;
    unsigned n = static_cast<unsigned>((head >> 24) & 0xff);
    if (n > kMaxPredictedChanges) return std::nullopt;
    p.changes = static_cast<uint8_t>(n);
    for (unsigned i = 0; i < n; ++i) {
        p.change_offset[i] = static_cast<uint8_t>(changes >> (16 * i));
        p.change_value[i] = static_cast<uint8_t>(changes >> (16 * i + 8));
    }
    return p;
}

// What the proxy lays over the image after it answered a predicted read:
// valid while the page's seq is `seq` and the remote has not carried out
// the read (posted_done is still `posted_done`, and the proxy has posted
// nothing else since: posted_sent is posted_done + 1).
struct MirrorOverlay {
    uint32_t seq = 0;
    uint64_t posted_done = 0;
    Prediction prediction;
};

struct MirrorValue {
    uint64_t value;
    bool irq_level;
};

// One attempt, no retry: a read that races a publication is simply sent
// over the socket. `posted_sent`: posted frames the proxy has sent on the
// socket, all of which must be carried out in what it reads, but for the
// predicted read of `overlay` while it applies.
inline std::optional<MirrorValue> mirror_read(const MirrorPage& p, int bar, uint64_t offset, unsigned size,
                                              uint64_t posted_sent, const MirrorOverlay* overlay = nullptr) {
    if (bar < 0 || bar >= 32 || size == 0 || size > 8 || offset >= kMirrorWindow ||
        size > kMirrorWindow - offset) {
        return std::nullopt;
    }
    uint32_t s1 = p.seq.load(std::memory_order_acquire);
    if (s1 & 1) return std::nullopt;
    if (!((p.bars.load(std::memory_order_relaxed) >> bar) & 1)) return std::nullopt;
    uint64_t done = p.posted_done.load(std::memory_order_relaxed);
    const bool laid_over = overlay && overlay->seq == s1 && overlay->posted_done == done &&
                           posted_sent == done + 1;
    if (done != posted_sent && !laid_over) return std::nullopt;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) {
        unsigned n = static_cast<unsigned>(offset) + i;
        if (!((p.pure[n / 64].load(std::memory_order_relaxed) >> (n % 64)) & 1)) return std::nullopt;
        uint64_t byte = (p.image[n / 8].load(std::memory_order_relaxed) >> (8 * (n % 8))) & 0xff;
        if (laid_over)
            for (unsigned c = 0; c < overlay->prediction.changes && c < kMaxPredictedChanges; ++c)
                if (overlay->prediction.change_offset[c] == n) byte = overlay->prediction.change_value[c];
        v |= byte << (8 * i);
    }
    bool irq = laid_over ? overlay->prediction.level_after : (p.irq_level.load(std::memory_order_relaxed) & 1) != 0;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (p.seq.load(std::memory_order_relaxed) != s1) return std::nullopt;
    return MirrorValue{v, irq};
}

// The prediction for a one-byte read at `offset` of `bar`, with the seq it
// was published under, if the page is settled with every posted frame
// carried out. The caller answers with it, posts BAR_READ_POSTED and lays
// the returned overlay over later reads.
inline std::optional<MirrorOverlay> mirror_predict(const MirrorPage& p, int bar, uint64_t offset, unsigned size,
                                                   uint64_t posted_sent) {
    if (bar < 0 || bar >= 32 || size != 1 || offset >= kMirrorWindow) return std::nullopt;
    uint32_t s1 = p.seq.load(std::memory_order_acquire);
    if (s1 & 1) return std::nullopt;
    if (!((p.bars.load(std::memory_order_relaxed) >> bar) & 1)) return std::nullopt;
    uint64_t done = p.posted_done.load(std::memory_order_relaxed);
    if (done != posted_sent) return std::nullopt;
    std::optional<Prediction> found;
    for (const auto& slot : p.predicted) {
        auto pr = unpack_prediction(slot.head.load(std::memory_order_relaxed),
                                    slot.changes.load(std::memory_order_relaxed));
        if (pr && pr->offset == offset) {
            found = pr;
            break;
        }
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (!found || p.seq.load(std::memory_order_relaxed) != s1) return std::nullopt;
    return MirrorOverlay{s1, done, *found};
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
