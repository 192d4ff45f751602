// The monitors of one process: every -monitor/-qmp/-mon chardev, their
// listening sockets and clients on the event loop, and event broadcast.
//
// I/O is non-blocking. Each client's pending output is bounded: a client that
// stops reading is dropped once kMaxPendingOutput bytes are queued, so it can
// never stall the loop or the devices on it. Inputs are bounded too (QMP
// message size and nesting, HMP line length): a client exceeding them gets an
// error and is dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "monitor/chardev_spec.h"
#include "monitor/commands.h"
#include "monitor/hmp.h"
#include "monitor/machine_view.h"
#include "monitor/qmp.h"
#include "util/event_loop.h"
#include "util/result.h"

namespace mpq::monitor {

class Monitors final : public EventSink {
public:
    static constexpr size_t kMaxPendingOutput = 1 << 20;
    static constexpr unsigned kMaxClientsPerChardev = 8;
    // How often block stats are compared to report BLOCK_IO_ERROR.
    static constexpr uint64_t kIoErrorPollNs = 200'000'000;

    // Whether listening unix sockets are removed when the monitors go away
    // (QEMU does). A sandboxed process may not touch paths by then.
    enum class UnlinkAtExit : uint8_t { Yes, No };

    Monitors(EventLoop& loop, MachineView& view, UnlinkAtExit unlink = UnlinkAtExit::Yes);
    ~Monitors() override;
    Monitors(const Monitors&) = delete;
    Monitors& operator=(const Monitors&) = delete;

    // Opens every monitor of `opts` (finish() is called if needed). A server
    // chardev with wait=on blocks here until its first client connects, as QEMU.
    Status start(MonitorOptions& opts);
    Status add(const MonitorSpec& spec);

    // EventSink: broadcasts {"event", "data", "timestamp"} to negotiated QMP clients.
    void emit(std::string_view event, Json data) override;
    // Shorthands for the mains' hooks.
    void shutdown_event(std::string_view reason, bool guest = false);
    void reset_event(std::string_view reason, bool guest = false);
    void remote_disconnected(std::string_view device_id, std::string_view reason);
    void block_io_error(std::string_view device, std::string_view node, std::string_view op,
                        std::string_view reason);

    std::vector<ChardevInfo> chardevs() const;
    const QmpDispatcher& dispatcher() const { return qmp_; }
    // Runs an HMP line (human-monitor-command), "\r\n" line ends.
    std::string run_hmp(std::string_view line) { return to_crlf(hmp_.run(line)); }
    size_t client_count() const;
    // Best effort: pushes queued output out before the process exits.
    void flush();

private:
    struct Client;
    struct Chardev;

    void accept_clients(Chardev& cd);
    void attach_client(Chardev& cd, UniqueFd in, int out_fd, bool own_out);
    void on_client_io(Chardev& cd, Client& c, uint32_t events);
    void queue(Chardev& cd, Client& c, std::string_view bytes);
    void try_write(Client& c);
    void update_interest(Client& c);
    void drop(Chardev& cd, Client& c);
    void reap();
    void poll_io_errors();
    void arm_poll();

    EventLoop& loop_;
    MachineView& view_;
    QmpDispatcher qmp_;
    Hmp hmp_;
    CommandEnv env_;
    std::vector<std::unique_ptr<Chardev>> chardevs_;
    std::shared_ptr<bool> alive_;
    UnlinkAtExit unlink_at_exit_;
    bool reap_pending_ = false;
    EventLoop::TimerId poll_timer_ = 0;
    struct ErrSnapshot {
        std::string device;
        uint64_t rd = 0, wr = 0, flush = 0;
    };
    std::vector<ErrSnapshot> err_snap_;
};

}  // namespace mpq::monitor
