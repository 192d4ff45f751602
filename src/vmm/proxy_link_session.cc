#include "vmm/proxy_link_session.h"

#include <algorithm>
#include <cstring>

namespace mpq::vmm {

using proto::Cmd;

proto::BarAccess LinkSession::probe() const {
    proto::BarAccess probe{};
    probe.addr = proto::kExtProbeAddr;
    probe.val = offer_;
    probe.size = 0;
    probe.memory = 0;
    return probe;
}

void LinkSession::probe_answered(uint64_t ret) {
    if ((ret & proto::kExtReplyMagicMask) == proto::kExtReplyMagic) {
        negotiated_ = true;
        features_ = ret & proto::kExtFeatureMask & offer_;
    }
}

std::optional<proto::SelectDevice> LinkSession::select_for(const void* dev, const std::string& id) const {
    if (!(features_ & proto::kFeatMultiDev) || selected_ == dev) return std::nullopt;
    proto::SelectDevice sel{};
    std::memcpy(sel.id, id.data(), std::min(id.size(), sizeof sel.id));
    return sel;
}

Status LinkSession::select_answered(const void* dev, const std::string& id, uint64_t ret) {
    if (ret != 0) {
        selected_ = nullptr;
        return fail("no device '{}'", id);
    }
    selected_ = dev;
    return {};
}

Result<uint64_t> LinkSession::reply(Cmd request, const proto::Frame& f) {
    if (auto v = proto::validate(f, proto::Role::Proxy); !v.ok())
        return fail("invalid reply to {}: {}", proto::cmd_name(request), v.error().message);
    if (f.size() == 0 && proto::message_of(request).answer != proto::Answer::RetEmpty)
        return fail("empty RET for {}", proto::cmd_name(request));
    posted_pending_ = false;  // the reply came after everything sent before it
    return f.size() == 0 ? uint64_t{0} : f.as<proto::RetValue>();
}

Result<std::optional<proto::SyncSysmem>> LinkSession::sysmem_update(
    const std::vector<RamRegionInfo>& regions) const {
    if (regions.size() > proto::kMaxFdsAccepted) {
        return fail("guest RAM has {} regions; the protocol carries at most {}", regions.size(),
                    proto::kMaxFdsAccepted);
    }
    bool same = table_sent_ && regions.size() == sent_table_.size();
    for (size_t i = 0; same && i < regions.size(); ++i) {
        same = regions[i].gpa == sent_table_[i].gpa && regions[i].size == sent_table_[i].size &&
               regions[i].offset == sent_table_[i].offset;
    }
    if (same) return std::optional<proto::SyncSysmem>();
    proto::SyncSysmem m{};
    for (size_t i = 0; i < regions.size(); ++i) {
        m.gpa[i] = regions[i].gpa;
        m.size[i] = regions[i].size;
        m.offset[i] = static_cast<int64_t>(regions[i].offset);
    }
    return std::optional<proto::SyncSysmem>(m);
}

}  // namespace mpq::vmm
