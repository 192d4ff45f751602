// The remote's side of MPQEXT REG_MIRROR (proto/reg_mirror.h): one device's
// register window published into the page its proxy handed over.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <utility>

#include "pci/pci_device.h"
#include "proto/reg_mirror.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace mpq::remote {

class EventfdIrqLine;

class RegMirror {
public:
    // Maps the page behind `fd` (closed on return, as every received fd).
    // Refuses a device without a window and a page the sender could still
    // shrink: a truncated mapping would fault in this process.
    static Result<std::unique_ptr<RegMirror>> attach(UniqueFd fd, pci::PciDevice& dev,
                                                     const EventfdIrqLine* irq);
    ~RegMirror();
    RegMirror(const RegMirror&) = delete;
    RegMirror& operator=(const RegMirror&) = delete;

    // The device may change from now on: readers go over the socket.
    void begin();
    // The device is as it will stay until the next begin(): publish it.
    // `posted_done`: BAR_WRITE_POSTED frames carried out on the socket.
    void publish(uint64_t posted_done);
    // Whether the device is still as published under `seq` (a predicted
    // read made from that publication then does exactly what it predicted):
    // nothing published since, and the window and the line unchanged.
    bool unchanged_since(uint32_t seq);
    // Whether a one-byte access at `offset` of `bar` lies in the mirrored
    // window (only those can have been predicted).
    bool covers(int bar, uint64_t offset) const {
        return bar >= 0 && bar < 32 && ((bars_ >> bar) & 1) && offset < pci::kRegWindowSize;
    }

private:
    using Packed = std::array<std::pair<uint64_t, uint64_t>, proto::kMaxPredictions>;  // head, changes
    Packed predictions() const;
    RegMirror(proto::MirrorPage* page, pci::PciDevice& dev, const pci::RegWindow& window,
              const EventfdIrqLine* irq);

    proto::MirrorPage* page_;
    pci::PciDevice& dev_;
    const EventfdIrqLine* irq_;
    uint32_t bars_ = 0;  // the window's BARs (RegWindow::bars)
    uint32_t seq_ = 0;  // ours: never read back from the page, which the peer can write too
    // What the last publish put in the page, for unchanged_since().
    std::array<uint8_t, pci::kRegWindowSize> published_{};
    Packed published_predictions_{};
    bool published_level_ = false;
    bool published_any_ = false;
};

}  // namespace mpq::remote
