#include "remote/reg_mirror.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "remote/irq_line.h"

namespace mpq::remote {

using proto::MirrorPage;

Result<std::unique_ptr<RegMirror>> RegMirror::attach(UniqueFd fd, pci::PciDevice& dev,
                                                     const EventfdIrqLine* irq) {
    pci::RegWindow w = dev.reg_window();
    if (w.bars == 0) return fail("the device has no register window to mirror");
    int seals = ::fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0) return fail("the mirror page is not a memfd ({})", std::strerror(errno));
    if (!(seals & F_SEAL_SHRINK)) return fail("the mirror page's size is not sealed (F_SEAL_SHRINK)");
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || st.st_size < static_cast<off_t>(proto::kMirrorPageSize))
        return fail("the mirror page is smaller than {} bytes", proto::kMirrorPageSize);
    void* p = ::mmap(nullptr, proto::kMirrorPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return fail_errno(errno, "mapping the mirror page: {}", std::strerror(errno));
    std::unique_ptr<RegMirror> m(new RegMirror(static_cast<MirrorPage*>(p), dev, w, irq));
    return m;
}

RegMirror::RegMirror(MirrorPage* page, pci::PciDevice& dev, const pci::RegWindow& window,
                     const EventfdIrqLine* irq)
    : page_(page), dev_(dev), irq_(irq), bars_(window.bars) {
    // Whatever the page held, nothing in it is valid until the first publish.
    begin();
    page_->bars.store(window.bars, std::memory_order_relaxed);
    for (unsigned w = 0; w < proto::kMirrorWindow / 64; ++w) {
        uint64_t bits = 0;
        for (unsigned b = 0; b < 64; ++b)
            if (window.pure[w * 64 + b]) bits |= uint64_t{1} << b;
        page_->pure[w].store(bits, std::memory_order_relaxed);
    }
}

RegMirror::~RegMirror() {
    // A proxy still reading finds the round open and asks over the socket.
    begin();
    ::munmap(page_, proto::kMirrorPageSize);
}

void RegMirror::begin() {
    if (seq_ & 1) return;
    ++seq_;
    page_->seq.store(seq_, std::memory_order_relaxed);
    // The odd count is visible before any later store to the page.
    std::atomic_thread_fence(std::memory_order_release);
}

void RegMirror::publish(uint64_t posted_done) {
    if (!(seq_ & 1)) return;
    alignas(8) std::array<uint8_t, pci::kRegWindowSize> image{};
    dev_.reg_window_fill(image);
    for (unsigned w = 0; w < proto::kMirrorWindow / 8; ++w) {
        uint64_t v;
        std::memcpy(&v, image.data() + 8 * w, sizeof v);
        page_->image[w].store(v, std::memory_order_relaxed);
    }
    auto packed = predictions();
    for (unsigned i = 0; i < proto::kMaxPredictions; ++i) {
        page_->predicted[i].head.store(packed[i].first, std::memory_order_relaxed);
        page_->predicted[i].changes.store(packed[i].second, std::memory_order_relaxed);
    }
    const bool level = irq_ && irq_->asserted();
    page_->posted_done.store(posted_done, std::memory_order_relaxed);
    page_->irq_level.store(level ? 1 : 0, std::memory_order_relaxed);
    published_ = image;
    published_predictions_ = packed;
    published_level_ = level;
    published_any_ = true;
    ++seq_;
    page_->seq.store(seq_, std::memory_order_release);
}

RegMirror::Packed RegMirror::predictions() const {
    Packed out{};
    std::array<pci::PciDevice::ReadPrediction, pci::PciDevice::kMaxReadPredictions> pr{};
    unsigned n = std::min(dev_.predict_reads(pr), proto::kMaxPredictions);
    for (unsigned i = 0; i < proto::kMaxPredictions; ++i) {
        uint64_t head = 0, changes = 0;
        // Only with an irq line: the level after the read is the line's.
        if (i < n && irq_) {
            proto::Prediction p;
            p.offset = pr[i].offset;
            p.value = pr[i].value;
            p.level_after = dev_.irq_output_for(pr[i].irq_level_after);
            p.changes = std::min<uint8_t>(pr[i].changes, proto::kMaxPredictedChanges);
            for (unsigned c = 0; c < p.changes; ++c) {
                p.change_offset[c] = pr[i].change_offset[c];
                p.change_value[c] = pr[i].change_value[c];
            }
            head = proto::pack_head(p);
            changes = proto::pack_changes(p);
        }
        out[i] = {head, changes};
    }
    return out;
}

bool RegMirror::unchanged_since(uint32_t seq) {
    // In the round after that publication (begin() made it odd), or still
    // outside any round.
    if (!published_any_ || (seq_ != seq + 1 && seq_ != seq)) return false;
    if ((irq_ && irq_->asserted()) != published_level_) return false;
    alignas(8) std::array<uint8_t, pci::kRegWindowSize> now{};
    dev_.reg_window_fill(now);
    // The bytes with side effects are not in the image: their predictions
    // (what a read returns and leaves) stand for them.
    return now == published_ && predictions() == published_predictions_;
}

}  // namespace mpq::remote
