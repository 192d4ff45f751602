// Machine-level notifications other parts subscribe to (the QMP event
// stream hangs off these). Called on the event-loop thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace mpq::vmm {

struct VmmEvents {
    using RemoteDisconnect = std::function<void(std::string_view id, std::string_view reason)>;
    // A proxied device lost its remote (EOF, error, garbage, timeout). Fired
    // once per device; the device then reads as all-ones and drops writes.
    std::vector<RemoteDisconnect> on_remote_disconnect;
    // System reset done (guest 0xcf9 write, monitor system_reset).
    std::vector<std::function<void()>> on_reset;

    void remote_disconnected(std::string_view id, std::string_view reason) const {
        for (const auto& f : on_remote_disconnect) f(id, reason);
    }
    void reset_done() const {
        for (const auto& f : on_reset) f();
    }
};

}  // namespace mpq::vmm
