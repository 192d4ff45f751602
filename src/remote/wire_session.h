// The remote's side of the wire protocol for one connection, without I/O:
// a received frame goes in, the encoded replies come out (appended to a byte
// buffer the transport sends), and the device accesses, guest-RAM mappings,
// interrupt eventfds and register mirrors the frame asks for are carried out
// on the devices it serves. Which frames exist, what they carry and which
// ones are answered is the message table's (proto/wire.h); this is what each
// one does. The transports (remote/conn_transport.h) only move bytes.
//
// Unlike stock QEMU, bad input does not kill the process: a frame that was
// read whole (unknown command, wrong size or fds, out-of-range access, bad
// fd type) gets one log line and, where a reply is due, an all-ones RET.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mem/guest_memory.h"
#include "proto/channel.h"
#include "remote/irq_line.h"

namespace mpq::pci {
class PciDevice;
}

namespace mpq::remote {

class RegMirror;

// What a connection may address.
struct ServedDevice {
    std::string id;
    pci::PciDevice* dev = nullptr;
    EventfdIrqLine* irq = nullptr;
};

// What the worker/supervisor split (remote/worker.h) needs from a session:
// fds handed to the supervisor before they are used, and the negotiated
// state a successor takes over.
enum class HeldFd : uint8_t { Sysmem, Irqfd, Mirror };
using FdHandoff = std::function<void(HeldFd kind, size_t dev, const proto::Frame& f)>;
struct SessionState {
    uint64_t features = 0;
    uint32_t selected = 0;
    uint64_t posted_done = 0;
};

struct ServerStats {
    uint64_t frames = 0;
    uint64_t bad_frames = 0;
    uint64_t resets = 0;
    uint64_t sysmem_updates = 0;
};

class WireSession {
public:
    // `devices[0]` is the default device, the others are reachable through
    // SELECT_DEVICE after MULTIDEV is negotiated. `memory` is the process's
    // guest RAM view (shared by every connection), `stats` the server's.
    WireSession(std::string name, std::vector<ServedDevice> devices, GuestMemory& memory, ServerStats& stats);
    ~WireSession();
    WireSession(const WireSession&) = delete;
    WireSession& operator=(const WireSession&) = delete;

    // Handles one received frame; a reply, when one is due, is appended to
    // `replies` (encoded). Fds the frame carries that are kept (SET_IRQFD's
    // pair, MIRROR_SETUP's page) are taken out of it; the caller closes the rest.
    void handle(proto::Frame& f, std::vector<uint8_t>& replies);

    const std::string& name() const { return name_; }
    uint64_t features() const { return features_; }
    size_t selected() const { return selected_; }
    uint64_t bad_frames() const { return bad_frames_; }

    // REG_MIRROR: whether any device of this connection has a page, and the
    // two halves of a round (see proto/reg_mirror.h): the device may change
    // from now on / publish it as it is now.
    bool has_mirrors() const { return !mirrors_.empty(); }
    void mirrors_begin();
    void mirrors_publish();

    // Worker mode: `h` runs before the session acts on a frame's fds.
    void set_fd_handoff(FdHandoff h) { handoff_ = std::move(h); }
    SessionState state() const { return {features_, static_cast<uint32_t>(selected_), posted_done_}; }
    // A successor takes over: the negotiated state, and the fds its
    // predecessor received (irq pair / mirror page of device `dev`).
    Status restore_state(const SessionState& s);
    void restore_irqfds(size_t dev, UniqueFd irq, UniqueFd resample);
    Status restore_mirror(size_t dev, UniqueFd page);
    size_t device_count() const { return devices_.size(); }

private:
    ServedDevice& dev() { return devices_[selected_]; }
    void reply(std::vector<uint8_t>& out, uint64_t v);
    void reply_empty(std::vector<uint8_t>& out);
    // Logs a complaint about the peer's input, thinned out after a burst so
    // a flood cannot fill the disk.
    template <typename... Args>
    void complain(fmt::format_string<Args...> f, Args&&... args);
    void trace(const proto::Frame& f);  // -d: one line per frame

    void do_cfg_read(const proto::Frame& f, std::vector<uint8_t>& out);
    void do_cfg_write(const proto::Frame& f, std::vector<uint8_t>& out);
    void do_bar_read(const proto::Frame& f, std::vector<uint8_t>& out);
    // Answer::None: a posted write (BAR_WRITE_POSTED), nothing goes back.
    void do_bar_write(const proto::Frame& f, proto::Answer answer, std::vector<uint8_t>& out);
    void do_sync_sysmem(proto::Frame& f);
    void do_set_irqfd(proto::Frame& f);
    void do_posted_read(const proto::Frame& f);
    void do_device_reset(std::vector<uint8_t>& out);
    void do_select_device(const proto::Frame& f, std::vector<uint8_t>& out);
    void do_mirror_setup(proto::Frame& f, std::vector<uint8_t>& out);

    std::string name_;  // for log lines
    std::vector<ServedDevice> devices_;
    GuestMemory& memory_;
    ServerStats& stats_;
    size_t selected_ = 0;
    uint64_t features_ = 0;
    uint64_t bad_frames_ = 0;
    uint64_t posted_done_ = 0;  // BAR_WRITE_POSTED frames handled, valid or not (REG_MIRROR)
    std::vector<std::unique_ptr<RegMirror>> mirrors_;  // by device index, empty without REG_MIRROR
    std::vector<RamRegion> regions_;                   // reused for SYNC_SYSMEM
    FdHandoff handoff_;
};

}  // namespace mpq::remote
