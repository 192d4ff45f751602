// The proxy's side of the wire protocol for one socket, without I/O: which
// frames a request needs (SELECT_DEVICE first when the addressed device is
// not the selected one), the MPQEXT negotiation, the count of posted writes
// and whether a fence needs a round trip, whether a RAM table must be sent
// again, and what a reply is worth (validated against the message table,
// proto/wire.h). ProxyLink (proxy.h) puts it on a transport
// (vmm/proxy_link_transport.h); its unit tests need no socket.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "proto/channel.h"
#include "util/result.h"
#include "vmm/guest_ram.h"

namespace mpq::vmm {

class LinkSession {
public:
    // `offer`: the MPQEXT features to ask for (a subset of kSupportedFeatures).
    explicit LinkSession(uint64_t offer = proto::kSupportedFeatures) : offer_(offer & proto::kSupportedFeatures) {}

    // ---- Negotiation: a BAR_READ of size 0, which a stock remote answers
    // with all-ones (invalid size) and survives.
    proto::BarAccess probe() const;
    // The probe's RET: our remote grants a subset of the offer.
    void probe_answered(uint64_t ret);
    bool negotiated() const { return negotiated_; }
    uint64_t features() const { return features_; }
    uint64_t offer() const { return offer_; }
    bool posts_writes() const { return (features_ & proto::kFeatPostedWrites) != 0; }

    // ---- Device selection (MULTIDEV). `dev` identifies a device of ours.
    // SELECT_DEVICE's payload when a frame for `dev` needs one first.
    std::optional<proto::SelectDevice> select_for(const void* dev, const std::string& id) const;
    // Its RET: 0 when the remote switched, anything else when it has no such device.
    Status select_answered(const void* dev, const std::string& id, uint64_t ret);
    void forget(const void* dev) {
        if (selected_ == dev) selected_ = nullptr;
    }

    // ---- Replies. What the RET to `request` says, or why it breaks the
    // link (not a RET, fds, a size the table does not allow).
    Result<uint64_t> reply(proto::Cmd request, const proto::Frame& f);

    // ---- Posted writes (POSTED_WRITES).
    void posted_write_sent() {
        posted_pending_ = true;
        ++posted_sent_;
    }
    uint64_t posted_sent() const { return posted_sent_; }
    // A posted write may not be carried out yet: a fence must ask.
    bool posted_pending() const { return posted_pending_; }
    // Something (a register mirror) showed that every posted write is done.
    void posted_caught_up() { posted_pending_ = false; }
    // The request a fence sends: any answered request will do, its reply
    // comes after the remote handled every frame before it. The vendor ID
    // of whichever device is selected.
    static proto::PciConf fence_request() { return proto::PciConf{0, 0, 2}; }

    // ---- Guest RAM (SYNC_SYSMEM). The payload to send for `regions`, or
    // nothing when the remote has that table already; sysmem_sent() once it
    // went out.
    Result<std::optional<proto::SyncSysmem>> sysmem_update(const std::vector<RamRegionInfo>& regions) const;
    void sysmem_sent(const std::vector<RamRegionInfo>& regions) {
        sent_table_ = regions;
        table_sent_ = true;
    }

private:
    uint64_t offer_;
    bool negotiated_ = false;
    uint64_t features_ = 0;
    const void* selected_ = nullptr;
    bool posted_pending_ = false;
    uint64_t posted_sent_ = 0;
    std::vector<RamRegionInfo> sent_table_;
    bool table_sent_ = false;
};

}  // namespace mpq::vmm
